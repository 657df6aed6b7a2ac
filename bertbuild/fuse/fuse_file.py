"""`fuse_onnx`: the one call the pipeline makes (run passes, check counts, save)."""

from __future__ import annotations

from pathlib import Path

from bertbuild import onnx_files
from bertbuild.fuse.driver import DEFAULT_ORDER, run_passes
from bertbuild.fuse.report import FusionReport, check_fusion_counts


def fuse_onnx(
    in_path: Path | str, out_path: Path | str, num_layers: int,
    order: tuple[str, ...] = DEFAULT_ORDER, disabled: tuple[str, ...] = (),
    external_data: bool | None = None,
) -> FusionReport:
    """Fuse `in_path` into `out_path`; raises ValidationError (and writes nothing) on wrong counts.

    `external_data`: how `out_path` keeps its weights (`onnx_files.save`); None
    follows `in_path` (`onnx_files.external_like`): external when it is and it
    was a choice, else by size.
    """
    external = onnx_files.external_like(in_path, external_data)
    model, report = run_passes(in_path, order=order, disabled=disabled)
    check_fusion_counts(report, num_layers)
    onnx_files.save(model, out_path, external)
    return report
