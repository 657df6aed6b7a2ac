"""The QA model's input and output names, shared by export, runners and engines.

Kept apart from `modeling` so that code which only runs ONNX never imports TensorFlow.
"""

INPUT_NAMES = ("input_ids", "segment_ids", "input_mask")
OUTPUT_NAMES = ("start_logits", "end_logits")
