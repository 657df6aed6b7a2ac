"""INT8 calibration: activation ranges of the tensors to quantize, from SQuAD train-half features.

Which tensors: the activation input of every MatMul that reads a constant
weight (QKV, attention output, FFN in and out; optionally the QA head). Those
are the only activations the INT8 graph quantizes, so they are the only ones
we observe. ONNX Runtime's own calibrators observe every input and output of
every MatMul, including the [batch, heads, seq, seq] attention scores; that is
what made calibrating a 6-layer H384 model peak at 6.8 GB. Here the session
outputs just those few tensors, and statistics are folded in batch by batch,
so memory is one batch of them whatever the sample count. Batches are cut as
scoring cuts them (sorted by length, trimmed: `bertbuild.squad.batching`), and
the padding still inside a batch is masked out of the statistics: ranges are
of what the model computes at real tokens.

Statistics per tensor: min, max, and a histogram of |x| (`num_bins` bins over
[0, edge]; when a later batch exceeds the edge, the edge doubles and adjacent
bins merge, so no second pass over the data is needed). From them:

- minmax:     amax = max |x|
- percentile: amax = the `percentile`-th percentile of |x|
- entropy:    amax = the clipping threshold whose 128-level quantized
               histogram is closest (KL divergence) to the observed one;
- auto:       per tensor, whichever of those thresholds hurts the tensor's
               MatMul outputs least (range_choice.py).

One calibration serves both INT8 variants: symmetric S8 activations use
[-amax, amax]; U8 activations use [max(min, -amax), min(max, amax)], which keeps
the asymmetric reach of e.g. GELU outputs (>= -0.17) for the unsigned type.

Results are cached as JSON under a caller-given directory, keyed by the
model's sha256 (with its external data files, if any), the method and its
parameters, and the exact sample set.

A model past protobuf's 2 GB limit (external data) is never read into Python
whole: the session gets its structure as bytes and reads the weights itself
(`onnx_files.session_source`), and inference runs on the weightless skeleton.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import onnx

from bertbuild import onnx_files
from bertbuild.precision.config import Int8Config
from bertbuild.squad.batching import DEFAULT_LENGTH_BUCKET, plan_batches, real_positions

log = logging.getLogger(__name__)

CACHE_VERSION = 2  # 2: statistics over real tokens only (padding positions masked out)
QUANTIZED_LEVELS = 128  # positive levels of symmetric INT8, as the entropy search quantizes to


# --------------------------------------------------------------------------- samples


@dataclass(frozen=True)
class CalibrationSet:
    """Model inputs for calibration, and where they came from."""

    input_ids: np.ndarray
    segment_ids: np.ndarray
    input_mask: np.ndarray
    question_ids: tuple[str, ...]
    split: str = "train"
    length_bucket: int = DEFAULT_LENGTH_BUCKET  # how `batches` trims (bertbuild.squad.batching); 0: padded

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])

    @property
    def max_seq_length(self) -> int:
        return int(self.input_ids.shape[1])

    def batches(self, batch_size: int, limit: int | None = None) -> Iterator[dict[str, np.ndarray]]:
        """Input batches of `batch_size` rows cut as scoring cuts them (`limit`: that many, spread over all)."""
        return plan_batches(self.input_mask, batch_size, self.length_bucket).sample(limit).feeds(self)

    @property
    def fingerprint(self) -> str:
        """sha256 over the question ids and the exact input rows."""
        digest = hashlib.sha256()
        digest.update("\n".join(self.question_ids).encode())
        for array in (self.input_ids, self.segment_ids, self.input_mask):
            digest.update(str(array.shape).encode())
            digest.update(np.ascontiguousarray(array, dtype=np.int32).tobytes())
        return digest.hexdigest()


def calibration_set(cfg: Int8Config, vocab_path: Path | str, lower_case: bool, dataset: str = "bundled",
                    doc_stride: int = 128, max_query_length: int = 64,
                    length_bucket: int = DEFAULT_LENGTH_BUCKET) -> CalibrationSet:
    """`cfg.samples` feature rows from questions of the TRAIN half of the article split.

    Questions are drawn in a seeded random order; all windows of each drawn
    question are taken until `cfg.samples` rows are filled (the last question
    may contribute only its first windows). Held-out questions are never read.
    """
    from bertbuild.squad.sets import featurize, load_split, sample

    examples = load_split(dataset, "train")
    if not examples:
        from bertbuild.errors import UserInputError

        raise UserInputError("the train half of the dataset has no questions to calibrate on")
    chosen = sample(examples, cfg.samples, cfg.seed)  # each question gives >= 1 window
    windows = featurize(chosen, vocab_path, lower_case, max_seq_length=cfg.max_seq_length, doc_stride=doc_stride,
                        max_query_length=max_query_length).first_windows(cfg.samples)
    f = windows.features
    return CalibrationSet(input_ids=f.input_ids, segment_ids=f.segment_ids, input_mask=f.input_mask,
                          question_ids=tuple(windows.question_ids), length_bucket=length_bucket)


# --------------------------------------------------------------------------- which tensors


@dataclass(frozen=True)
class QuantTarget:
    """One node to quantize and the activation tensor it reads."""

    node: str
    op_type: str
    activation: str


def quantization_targets(model: onnx.ModelProto, cfg: Int8Config) -> list[QuantTarget]:
    """MatMuls with a constant weight (and Gathers from a constant table if configured).

    The QA head (the MatMul whose result reaches a graph output through
    bias/shape ops only) is left out unless `cfg.quantize_head`.
    """
    graph = model.graph
    constants = {init.name for init in graph.initializer}
    constants |= {node.output[0] for node in graph.node if node.op_type == "Constant"}
    head = set() if cfg.quantize_head else _head_nodes(model)
    targets = []
    for index, node in enumerate(graph.node):
        if node.op_type not in cfg.op_types or not node.name:
            continue
        if node.op_type == "MatMul" and node.input[1] in constants and node.input[0] not in constants \
                and node.name not in head:
            targets.append(QuantTarget(node.name, node.op_type, node.input[0]))
        elif node.op_type == "Gather" and node.input[0] in constants:
            # ORT quantizes a Gather's table like an activation (its output shares the
            # table's scale), so its "range" is the table's own min/max, not calibration.
            targets.append(QuantTarget(node.name, node.op_type, node.input[0]))
    return targets


def _head_nodes(model: onnx.ModelProto) -> set[str]:
    from bertbuild.precision.fp16 import _Graph, _logits_head

    inferred = onnx_files.inferred_skeleton(model)  # types only: no weight is copied
    g = _Graph(inferred)
    indexes = _logits_head(g, [value.name for value in model.graph.output])
    return {g.nodes[i].name for i in indexes if g.nodes[i].op_type in ("MatMul", "Gemm")}


# --------------------------------------------------------------------------- statistics


class _AbsHistogram:
    """Histogram of |x| over [0, edge] that grows by doubling (merging bin pairs)."""

    def __init__(self, num_bins: int):
        if num_bins % 2:
            raise ValueError(f"num_bins must be even, got {num_bins}")
        self.num_bins = num_bins
        self.counts = np.zeros(num_bins, dtype=np.int64)
        self.edge = 0.0
        self.low = float("inf")
        self.high = float("-inf")

    def add(self, values: np.ndarray) -> None:
        values = np.asarray(values, dtype=np.float32).ravel()
        values = values[np.isfinite(values)]
        if values.size == 0:
            return
        self.low = min(self.low, float(values.min()))
        self.high = max(self.high, float(values.max()))
        magnitude = np.abs(values)
        peak = float(magnitude.max())
        if self.edge == 0.0:
            self.edge = peak if peak > 0 else 1e-12
        while peak > self.edge:
            self.counts = np.concatenate([self.counts.reshape(-1, 2).sum(axis=1),
                                          np.zeros(self.num_bins // 2, dtype=np.int64)])
            self.edge *= 2.0
        index = np.minimum((magnitude * (self.num_bins / self.edge)).astype(np.int64), self.num_bins - 1)
        self.counts += np.bincount(index, minlength=self.num_bins)

    @property
    def width(self) -> float:
        return self.edge / self.num_bins


def _amax_minmax(hist: _AbsHistogram) -> float:
    return max(abs(hist.low), abs(hist.high))


def _amax_percentile(hist: _AbsHistogram, percentile: float) -> float:
    cumulative = np.cumsum(hist.counts)
    index = int(np.searchsorted(cumulative, cumulative[-1] * percentile / 100.0))
    return min((index + 1) * hist.width, _amax_minmax(hist))


def _amax_entropy(hist: _AbsHistogram, levels: int = QUANTIZED_LEVELS) -> float:
    """Threshold minimizing KL(P || Q), P the clipped histogram, Q its `levels`-level quantization.

    For each candidate number of bins i, P is the first i bins with everything
    beyond folded into the last one; Q spreads each of `levels` equal groups'
    total evenly over the group's non-empty bins. Bins empty in P are ignored,
    bins non-empty in P but empty in Q get a tiny mass (instead of infinity).
    """
    counts = hist.counts.astype(np.float64)
    n = counts.size
    if counts.sum() == 0 or n <= levels:
        return _amax_minmax(hist)
    tail = np.concatenate([np.cumsum(counts[::-1])[::-1], [0.0]])  # tail[i] = counts[i:].sum()
    best_i, best_kl = n, np.inf
    for i in range(levels, n + 1):
        reference = counts[:i]
        p = reference.copy()
        p[-1] += tail[i]
        bounds = np.linspace(0, i, levels + 1).astype(np.int64)[:-1]
        group_sum = np.add.reduceat(reference, bounds)
        group_nonzero = np.add.reduceat((reference > 0).astype(np.float64), bounds)
        sizes = np.diff(np.append(bounds, i))
        per_bin = np.divide(group_sum, group_nonzero, out=np.zeros_like(group_sum), where=group_nonzero > 0)
        q = np.repeat(per_bin, sizes) * (reference > 0)
        mask = p > 0
        p_n = p[mask] / p.sum()
        q_m = q[mask]
        q_total = q.sum()
        if q_total == 0:
            continue
        q_n = np.maximum(q_m / q_total, 1e-12)
        kl = float(np.sum(p_n * np.log(p_n / q_n)))
        if kl < best_kl:
            best_i, best_kl = i, kl
    return min(best_i * hist.width, _amax_minmax(hist))


def activation_session(model_path: Path | str, tensors: list[str], threads: int | None = None):
    """An ONNX Runtime session of the FP32 model that can also return the named inner tensors."""
    import onnxruntime as ort

    model_path = Path(model_path)
    # External weights stay on disk: ORT reads them from the model's folder.
    model = onnx_files.load(model_path, load_external_data=False)
    inferred = onnx_files.inferred_skeleton(model)
    known = {value.name: value for value in list(inferred.graph.value_info) + list(inferred.graph.output)}
    present = {value.name for value in model.graph.output}
    for name in tensors:
        if name in present:
            continue
        if name not in known:
            raise ValueError(f"calibration: no type information for tensor {name!r}")
        model.graph.output.append(known[name])
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or os.cpu_count() or 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    source = onnx_files.session_source(model, options, model_path.parent)
    return ort.InferenceSession(source, sess_options=options, providers=["CPUExecutionProvider"])


def _collect_statistics(model_path: Path, tensors: list[str], samples: CalibrationSet, cfg: Int8Config,
                        threads: int | None = None, ignored_channels: dict[str, list[int]] | None = None,
                        ) -> dict[str, _AbsHistogram]:
    """Run the FP32 model over the samples, one bounded batch at a time, folding stats in.

    `ignored_channels` (tensor -> last-axis channels) are left out of a tensor's
    statistics: outliers.py routes them around the INT8 MatMul.
    """
    session = activation_session(model_path, tensors, threads)
    stats = {name: _AbsHistogram(cfg.num_bins) for name in tensors}
    ignored = ignored_channels or {}
    for feed in samples.batches(cfg.batch_size):
        for name, value in zip(tensors, session.run(tensors, feed)):
            value = real_positions(value, feed["input_mask"])  # what the model computes at padding is no range
            if name in ignored:
                value = np.delete(value, ignored[name], axis=-1)
            stats[name].add(value)
    return stats


# --------------------------------------------------------------------------- result and cache


@dataclass
class TensorRange:
    min: float
    max: float
    amax: float  # the symmetric clipping threshold the method chose

    def symmetric(self) -> tuple[float, float]:
        return -self.amax, self.amax

    def clipped(self) -> tuple[float, float]:
        """[max(min, -amax), min(max, amax)], widened to include 0 (zero must be exact)."""
        return min(0.0, max(self.min, -self.amax)), max(0.0, min(self.max, self.amax))


@dataclass
class Calibration:
    """Activation ranges of one model on one sample set with one method."""

    method: str
    model_sha256: str
    samples_fingerprint: str
    max_seq_length: int
    rows: int
    question_ids: list[str]
    targets: list[dict]  # [{"node", "op_type", "activation"}]
    ranges: dict[str, TensorRange]
    params: dict = field(default_factory=dict)
    seconds: float = 0.0
    from_cache: bool = False
    cache_path: str | None = None

    def to_json(self) -> dict:
        record = asdict(self)
        record.pop("from_cache")
        record.pop("cache_path")
        return record

    @classmethod
    def from_json(cls, record: dict, cache_path: str | None = None, from_cache: bool = False) -> "Calibration":
        """`from_cache`: this run reused a calibration an earlier run wrote (what the report says), as opposed
        to a task reading back the file this run's calibrate step just wrote."""
        ranges = {name: TensorRange(**value) for name, value in record.pop("ranges").items()}
        return cls(**record, ranges=ranges, from_cache=from_cache, cache_path=cache_path)

    def summary(self) -> dict:
        """Small, JSON-able: what a report needs (no per-tensor data, no question list)."""
        return {"method": self.method, "params": self.params, "rows": self.rows,
                "questions": len(self.question_ids), "tensors": len(self.ranges),
                "seconds": round(self.seconds, 2), "from_cache": self.from_cache, "cache_path": self.cache_path}


def load_calibration(cache_path: Path | str, from_cache: bool = False) -> Calibration:
    """A calibration written by `calibrate` (the flow passes its cache file between tasks)."""
    return Calibration.from_json(json.loads(Path(cache_path).read_text()), str(cache_path), from_cache)


def _method_params(cfg: Int8Config) -> dict:
    params = {"op_types": list(cfg.op_types), "quantize_head": cfg.quantize_head}
    if cfg.method in ("percentile", "entropy", "auto"):
        params["num_bins"] = cfg.num_bins
    if cfg.method == "percentile":
        params["percentile"] = cfg.percentile
    return params


def cache_key(model_sha256: str, samples: CalibrationSet, cfg: Int8Config) -> str:
    record = {"version": CACHE_VERSION, "model": model_sha256, "method": cfg.method,
              "params": _method_params(cfg), "samples": samples.fingerprint, "seq": samples.max_seq_length}
    return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()


def calibrate(model_path: Path | str, samples: CalibrationSet, cfg: Int8Config,
              cache_dir: Path | str | None = None, threads: int | None = None) -> Calibration:
    """Activation ranges of `model_path`'s quantization targets; from the cache when possible."""
    model_path = Path(model_path)
    model_sha = onnx_files.files_digest(model_path)
    cache_path = None
    if cache_dir is not None:
        cache_path = Path(cache_dir) / f"calibration-{cache_key(model_sha, samples, cfg)[:32]}.json"
        if cache_path.is_file():
            try:
                calibration = load_calibration(cache_path, from_cache=True)
                log.info("calibration: cache hit %s", cache_path)
                return calibration
            except (ValueError, TypeError, KeyError) as error:
                log.warning("calibration: ignoring unreadable cache %s (%s)", cache_path, error)
    start = time.perf_counter()
    # The structure is what targets and readers need; a Gather table is read alone, below.
    model = onnx_files.load(model_path, load_external_data=False)
    targets = quantization_targets(model, cfg)
    tables = {init.name: init for init in model.graph.initializer}
    tensors = list(dict.fromkeys(t.activation for t in targets if t.op_type != "Gather"))
    from bertbuild.precision.outliers import outlier_channels

    stats = _collect_statistics(model_path, tensors, samples, cfg, threads, outlier_channels(model))
    ranges = {}
    for target in targets:
        if target.op_type == "Gather":
            table = onnx_files.array(tables[target.activation], model_path)
            low, high = float(table.min()), float(table.max())
            ranges[target.activation] = TensorRange(low, high, max(abs(low), abs(high)))
    del tables
    params = _method_params(cfg)
    if cfg.method == "auto":
        from bertbuild.precision.int8 import ACTIVATION_VARIANT
        from bertbuild.precision.range_choice import CHOICE_BATCHES, choose_ranges

        readers = {name: [node.input[1] for node in model.graph.node if node.op_type == "MatMul"
                          and node.name in {t.node for t in targets} and node.input[0] == name] for name in stats}
        chosen = choose_ranges(model_path, stats, readers, samples, ACTIVATION_VARIANT[cfg.activation_type],
                               CHOICE_BATCHES, cfg.batch_size, threads)
        ranges.update({name: tensor_range for name, (_, tensor_range) in chosen.items()})
        params["chosen"] = {name: label for name, (label, _) in chosen.items()}
    for name, hist in stats.items():
        if cfg.method == "auto":
            continue
        if cfg.method == "minmax":
            amax = _amax_minmax(hist)
        elif cfg.method == "percentile":
            amax = _amax_percentile(hist, cfg.percentile)
        else:
            amax = _amax_entropy(hist)
        ranges[name] = TensorRange(min=hist.low, max=hist.high, amax=max(amax, 1e-8))
    calibration = Calibration(
        method=cfg.method, model_sha256=model_sha, samples_fingerprint=samples.fingerprint,
        max_seq_length=samples.max_seq_length, rows=len(samples), question_ids=list(samples.question_ids),
        targets=[asdict(t) for t in targets], ranges=ranges, params=params,
        seconds=time.perf_counter() - start, cache_path=str(cache_path) if cache_path else None,
    )
    if cache_path is not None:
        cache_path.parent.mkdir(parents=True, exist_ok=True)
        temporary = cache_path.with_suffix(".tmp")
        temporary.write_text(json.dumps(calibration.to_json(), indent=1) + "\n")
        temporary.replace(cache_path)
    return calibration
