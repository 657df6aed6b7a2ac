"""Prefect task: fuse the exported ONNX file into standard Attention/LayerNormalization/Gelu ops.

Thin on purpose: the passes, the count check and the save live in
`bertbuild.fuse`; the task passes paths in and a JSON-able dict out.
"""

from __future__ import annotations

from prefect import task


@task(name="fuse-onnx")
def fuse(onnx_path: str, out_path: str, num_layers: int) -> dict:
    """{"path": fused file, "report": FusionReport.to_dict()}; a wrong fusion count fails the task."""
    from bertbuild.fuse import fuse_onnx

    report = fuse_onnx(onnx_path, out_path, num_layers)
    return {"path": str(out_path), "report": report.to_dict()}
