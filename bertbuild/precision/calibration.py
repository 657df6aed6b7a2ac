"""INT8 calibration: activation ranges of the tensors to quantize, from SQuAD train-half features.

The pieces, one module each:

- which tensors: `targets.py` (the activation input of every MatMul that reads
  a constant weight, and nothing else, so memory stays small);
- on what: `calibration_set.py` (train-half windows; no held-out question);
- how they are observed: `activations.py` (a session that also returns them);
- the statistics and thresholds: `range_stats.py` (minmax, percentile,
  entropy); `range_choice.py` for `auto` (per tensor, whichever threshold hurts
  the tensor's MatMul outputs least);
- the result: `ranges.py` (`Calibration`, written as JSON, read back by the
  flow's later tasks).

This module runs them: statistics are folded in batch by batch, so memory is
one batch of the observed tensors whatever the sample count. Batches are cut
as scoring cuts them (sorted by length, trimmed: `bertbuild.squad.batching`),
and the padding still inside a batch is masked out of the statistics: ranges
are of what the model computes at real tokens.

No cache here: the flow's step cache (`bertbuild.step_cache`, the
`calibration` step of `bertbuild.tasks.precision`) keys a calibration by the
model file, the vocab, the config and this code, and is the one place a
calibration is reused.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from bertbuild import onnx_files
from bertbuild.precision.activations import activation_session
from bertbuild.precision.calibration_set import CalibrationSet
from bertbuild.config.precision import Int8Config
from bertbuild.precision.outliers import outlier_channels
from bertbuild.precision.range_choice import CHOICE_BATCHES, choose_ranges
from bertbuild.precision.range_stats import AbsHistogram, amax_entropy, amax_minmax, amax_percentile
from bertbuild.precision.ranges import Calibration, TensorRange
from bertbuild.precision.targets import quantization_targets
from bertbuild.squad.batching import real_positions

CALIBRATION_FILE = "calibration.json"


def collect_statistics(model_path: Path | str, tensors: list[str], samples: CalibrationSet, cfg: Int8Config,
                       threads: int | None = None, ignored_channels: dict[str, list[int]] | None = None,
                       log=None) -> dict[str, AbsHistogram]:
    """Run the FP32 model over the samples, one bounded batch at a time, folding stats in.

    `ignored_channels` (tensor -> last-axis channels) are left out of a tensor's
    statistics: outliers.py routes them around the INT8 MatMul. `log`: where
    progress lines go without a terminal (`bertbuild.progress`).
    """
    from bertbuild.progress import Progress

    session = activation_session(model_path, tensors, threads)
    stats = {name: AbsHistogram(cfg.num_bins) for name in tensors}
    ignored = ignored_channels or {}
    with Progress(len(samples), "calibration", unit="seq", noun="windows", log=log, leave=False) as progress:
        for feed in samples.batches(cfg.batch_size):
            for name, value in zip(tensors, session.run(tensors, feed)):
                value = real_positions(value, feed["input_mask"])  # what the model computes at padding is no range
                if name in ignored:
                    value = np.delete(value, ignored[name], axis=-1)
                stats[name].add(value)
            progress.update(len(feed["input_mask"]))
    return stats


def method_params(cfg: Int8Config) -> dict:
    """The settings that shaped a calibration's ranges, as its record keeps them."""
    params = {"op_types": list(cfg.op_types), "quantize_head": cfg.quantize_head}
    if cfg.method in ("percentile", "entropy", "auto"):
        params["num_bins"] = cfg.num_bins
    if cfg.method == "percentile":
        params["percentile"] = cfg.percentile
    return params


def _threshold(hist: AbsHistogram, cfg: Int8Config) -> float:
    if cfg.method == "minmax":
        return amax_minmax(hist)
    if cfg.method == "percentile":
        return amax_percentile(hist, cfg.percentile)
    return amax_entropy(hist)


def calibrate(model_path: Path | str, samples: CalibrationSet, cfg: Int8Config,
              out_dir: Path | str | None = None, threads: int | None = None, log=None) -> Calibration:
    """Activation ranges of `model_path`'s quantization targets, written to `out_dir`/calibration.json if given.

    `log`: progress lines of the calibration pass where there is no terminal (`bertbuild.progress`)."""
    model_path = Path(model_path)
    model_sha = onnx_files.files_digest(model_path)
    start = time.perf_counter()
    # The structure is what targets and readers need; a Gather table is read alone, below.
    model = onnx_files.load(model_path, load_external_data=False)
    targets = quantization_targets(model, cfg)
    tables = {init.name: init for init in model.graph.initializer}
    tensors = list(dict.fromkeys(t.activation for t in targets if t.op_type != "Gather"))
    stats = collect_statistics(model_path, tensors, samples, cfg, threads, outlier_channels(model), log=log)
    ranges = {}
    for target in targets:
        if target.op_type == "Gather":
            table = onnx_files.array(tables[target.activation], model_path)
            low, high = float(table.min()), float(table.max())
            ranges[target.activation] = TensorRange(low, high, max(abs(low), abs(high)))
    del tables
    params = method_params(cfg)
    if cfg.method == "auto":
        readers = {name: [node.input[1] for node in model.graph.node if node.op_type == "MatMul"
                          and node.name in {t.node for t in targets} and node.input[0] == name] for name in stats}
        chosen = choose_ranges(model_path, stats, readers, samples, cfg.qdq_variant, CHOICE_BATCHES,
                               cfg.batch_size, threads)
        ranges.update({name: tensor_range for name, (_, tensor_range) in chosen.items()})
        params["chosen"] = {name: label for name, (label, _) in chosen.items()}
    else:
        for name, hist in stats.items():
            ranges[name] = TensorRange(min=hist.low, max=hist.high, amax=max(_threshold(hist, cfg), 1e-8))
    path = Path(out_dir) / CALIBRATION_FILE if out_dir is not None else None
    calibration = Calibration(
        method=cfg.method, model_sha256=model_sha, samples_fingerprint=samples.fingerprint,
        max_seq_length=samples.max_seq_length, rows=len(samples), question_ids=list(samples.question_ids),
        targets=[asdict(t) for t in targets], ranges=ranges, params=params,
        seconds=time.perf_counter() - start, cache_path=str(path) if path else None,
    )
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps(calibration.to_json(), indent=1) + "\n")
        temporary.replace(path)
    return calibration
