"""Fuse the exported BERT graph into standard ONNX ops TensorRT 10.14+/11 maps natively.

`LayerNormalization` (opset 17), `Gelu` (opset 20) and `Attention` (opset 23),
in the default domain, so the ONNX file itself carries the fused structure:
no vendor domain, no plugin, and ONNX Runtime runs the same file on CPU.

    from bertbuild.fuse import fuse_onnx
    report = fuse_onnx("model.onnx", "model.fused.onnx", num_layers=6)
"""

from bertbuild.fuse.driver import DEFAULT_ORDER, PASSES, TARGET_OPSET, load_graph, register_pass, run_passes
from bertbuild.fuse.report import FusionReport, check_fusion_counts

# Importing a pass module registers it; the run order is DEFAULT_ORDER, not this order.
from bertbuild.fuse import attention, gelu, layernorm  # noqa: E402,F401  isort: skip
from bertbuild.fuse.fuse_file import fuse_onnx  # noqa: E402  isort: skip

__all__ = [
    "DEFAULT_ORDER", "PASSES", "TARGET_OPSET", "FusionReport", "check_fusion_counts", "fuse_onnx", "load_graph",
    "register_pass", "run_passes",
]
