"""Model I/O: Google-format checkpoints, the TensorFlow graph, ONNX export, imports and generated models."""
