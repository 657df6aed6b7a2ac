"""`fuse_onnx`: the one call the pipeline makes (run passes, check counts, save)."""

from __future__ import annotations

from pathlib import Path

import onnx

from bertbuild.fuse.driver import DEFAULT_ORDER, run_passes
from bertbuild.fuse.report import FusionReport, check_fusion_counts


def fuse_onnx(
    in_path: Path | str, out_path: Path | str, num_layers: int,
    order: tuple[str, ...] = DEFAULT_ORDER, disabled: tuple[str, ...] = (),
) -> FusionReport:
    """Fuse `in_path` into `out_path`; raises ValidationError (and writes nothing) on wrong counts."""
    model, report = run_passes(in_path, order=order, disabled=disabled)
    check_fusion_counts(report, num_layers)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(out_path))
    return report
