"""`bertbuild bench [--backend B ...] --onnx A.onnx [--onnx B.onnx ...]`: which engine to deploy on this host.

Times every (backend, file) pair in one run, one model loaded at a time, on the
same real SQuAD feed; rows come in the order of `--backend`, then `--onnx`, and
the table's last column is each row's speed-up over the first row at the median.
`--backend` is repeatable: `onnxruntime` (the default, alone) and `openvino`.

Each file is run as its engine would compute it. What a file carries is read
from the file itself (`file_precision`): Q/DQ nodes make it INT8, else its
16-bit float weights (bfloat16 or float16), else FP32. ONNX Runtime computes a
file as written (`as_written`: an INT8 file's float parts in FP32) and has no
BF16 arithmetic on the CPU, so a bf16 file is skipped there with one line.
OpenVINO gets the inference precision hint its engine would have
(`backends.openvino.inference_precision`): FP32 files f32, 16-bit files their
own type where the CPU computes it natively, and INT8 files twice, float parts
in FP32 and, where the CPU has BF16, in BF16 (the two settings an OpenVINO INT8
engine is chosen between). Its `computes` column is what the compiled model
reports, layer by layer (`compute_label`), not what was asked for.

`--lengths heldout` times whole passes over held-out windows instead, batched
as the scorer batches them, once per `--length-bucket` (repeatable; 0 is the
padded baseline) and pair, in windows/s and real tokens/s.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

from bertbuild.commands.arguments import at_least, output_file, text_file

# The backends `bench` times ONNX files on, straight from the file (the others need an engine built first).
BENCH_BACKENDS = ("onnxruntime", "openvino")
DEFAULT_BACKEND = "onnxruntime"
# ONNX operators that only an INT8 file holds: explicit Q/DQ, and ONNX Runtime's integer kernels.
_INT8_OPS = frozenset({"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "MatMulInteger",
                       "ConvInteger", "MatMulIntegerToFloat", "DynamicQuantizeMatMul"})


def add_parser(sub) -> None:
    parser = sub.add_parser("bench", help="time .onnx files on one or more backends (ONNX Runtime, OpenVINO) on "
                                          "SQuAD windows: which engine to deploy on this host")
    parser.add_argument("--onnx", action="append", required=True, type=Path, metavar="MODEL.onnx",
                        help="a model to time (repeatable; the first row is the baseline)")
    parser.add_argument("--backend", action="append", metavar="NAME",
                        help=f"a backend to time every model on: {' or '.join(BENCH_BACKENDS)} (repeatable, in "
                             f"order; default: {DEFAULT_BACKEND} alone)")
    parser.add_argument("--batch", type=at_least(1), default=8, help="sequences per call (default 8)")
    parser.add_argument("--seq", type=at_least(32), default=384, help="tokens per sequence, 32..512 (default 384)")
    parser.add_argument("--threads", type=at_least(1),
                        help="threads per backend: ONNX Runtime intra-op, OpenVINO inference threads "
                             "(default: all CPUs)")
    parser.add_argument("--iterations", type=at_least(1), help="timed calls per model (default: as many as --min-seconds allows)")
    parser.add_argument("--min-seconds", type=at_least(0.0, float), default=5.0, help="seconds per model without --iterations (default 5)")
    parser.add_argument("--warmup", type=at_least(0), default=5, help="untimed calls first (default 5)")
    parser.add_argument("--provider", default="CPUExecutionProvider",
                        help="ONNX Runtime execution provider for the onnxruntime rows (default CPUExecutionProvider)")
    parser.add_argument("--vocab", type=Path, help="vocab.txt for tokenizing (default: the bundled uncased vocab)")
    parser.add_argument("--cased", action="store_true", help="the vocab is cased (do not lower-case)")
    parser.add_argument("--json", type=Path, help="also write the figures, every row, to this JSON file")
    parser.add_argument("--lengths", choices=("fixed", "heldout"), default="fixed",
                        help="fixed: one batch x seq feed timed per call (default); heldout: whole passes over "
                             "held-out windows batched as the scorer does, in windows/s and real tokens/s")
    parser.add_argument("--length-bucket", type=at_least(0), action="append", metavar="N",
                        help="with --lengths heldout: trim batches to multiples of N tokens; repeatable, one pass "
                             "per value and model; 0 pads to --seq (default: 0 and eval.length_bucket's default)")
    parser.add_argument("--limit", type=at_least(1),
                        help="with --lengths heldout: only the first N held-out questions (default: all)")
    parser.set_defaults(handler=run)


def file_precision(path: Path | str) -> str | None:
    """What an ONNX file carries: "int8", "bf16", "fp16" or "fp32"; None if it is not an ONNX file.

    INT8: the graph holds Q/DQ nodes (or ONNX Runtime's integer kernels). Else
    the 16-bit float type most of its float weights (initializers and Constant
    nodes) are stored in, bfloat16 or float16; else FP32. Weights in external
    data are judged by their declared type, never read.
    """
    from onnx import TensorProto

    from bertbuild import onnx_files

    try:
        graph = onnx_files.load(path, load_external_data=False).graph
    except Exception:  # noqa: BLE001 - not a model: the runner that loads it says why, in its own words
        return None
    if any(node.op_type in _INT8_OPS for node in graph.node):
        return "int8"
    weights = list(graph.initializer) + [a.t for n in graph.node if n.op_type == "Constant"
                                         for a in n.attribute if a.name == "value"]
    sizes = {TensorProto.BFLOAT16: 0, TensorProto.FLOAT16: 0}
    for tensor in weights:
        if tensor.data_type in sizes:
            sizes[tensor.data_type] += max(math.prod(tensor.dims), 1)
    if not any(sizes.values()):
        return "fp32"
    return "bf16" if sizes[TensorProto.BFLOAT16] >= sizes[TensorProto.FLOAT16] else "fp16"


@dataclass(frozen=True)
class Pair:
    """One row to time: a file on a backend at one setting (`hint`: OpenVINO's inference precision hint)."""

    backend: str
    path: Path
    name: str  # the file as the table shows it
    precision: str | None  # what the file carries (`file_precision`)
    hint: str | None = None  # OpenVINO only

    def runner(self, args, threads: int):
        if self.backend == "openvino":
            from bertbuild.backends.openvino import OpenVinoRunner

            return OpenVinoRunner(self.path, self.hint or "f32", threads, name=self.name)
        from bertbuild.backends.onnxrt import OnnxRuntimeRunner

        return OnnxRuntimeRunner(self.path, providers=[args.provider], threads=threads, name=self.name)

    def compute(self, runner) -> str:
        """What the row computes in: as the file is written (ONNX Runtime), as the compiled model reports (OpenVINO)."""
        if self.backend == "openvino":
            from bertbuild.backends.openvino import compute_label, layer_precisions

            return compute_label(layer_precisions(runner.compiled))
        from bertbuild.kinds import as_written

        return as_written(self.precision) if self.precision else "unknown"


def _backends(names: list[str] | None, threads: int) -> list[str]:
    """The backends asked for, in order, once each; an unknown, unbenchable or unavailable one is a UserInputError."""
    from bertbuild.backends.registry import get_backend
    from bertbuild.errors import UserInputError

    chosen: list[str] = []
    for name in names or [DEFAULT_BACKEND]:
        if name in chosen:
            continue
        backend = get_backend(name, threads=threads)  # unknown or not available here: one line, exit 2
        if backend.name not in BENCH_BACKENDS:
            raise UserInputError(f"bench times ONNX files on {' or '.join(BENCH_BACKENDS)}, not '{name}' "
                                 "(its engines are built by a run: bertbuild build)")
        if backend.name not in chosen:
            chosen.append(backend.name)
    return chosen


def _pairs(backends: list[str], paths: list[Path], names: list[str]) -> tuple[list[Pair], list[str]]:
    """Every (backend, file[, setting]) row to time, and one line per pair skipped and why."""
    precisions = {path: file_precision(path) for path in paths}
    pairs: list[Pair] = []
    skipped: list[str] = []
    caps = None
    for backend in backends:
        for path, name in zip(paths, names):
            precision = precisions[path]
            if backend == "onnxruntime":
                from bertbuild.backends.onnxrt import OnnxRuntimeBackend

                ok, why = OnnxRuntimeBackend().supports(precision or "fp32")
                if ok:
                    pairs.append(Pair(backend, path, name, precision))
                else:
                    skipped.append(f"skipped: {backend} on {name} ({precision}): {why}")
                continue
            from bertbuild.backends.openvino import can_compute, capabilities, inference_precision

            caps = capabilities() if caps is None else caps
            settings = ["fp32", "bf16"] if precision == "int8" else [precision or "fp32"]
            for floats in settings:
                ok, why = can_compute(floats, caps)
                label = f"int8+{floats}" if precision == "int8" else floats
                if not ok:
                    skipped.append(f"skipped: {backend} on {name} ({label}): {why}")
                    continue
                hint = inference_precision(precision or "fp32", floats if precision == "int8" else None)
                pairs.append(Pair(backend, path, name, precision, hint))
    return pairs, skipped


def _version(backend: str) -> str:
    if backend == "openvino":
        from bertbuild.backends.openvino import import_openvino

        return f"OpenVINO {import_openvino().get_version().split('-')[0]}"
    import onnxruntime

    return f"ONNX Runtime {onnxruntime.__version__}"


def _header(backends_run: list[str], threads: int, provider: str) -> tuple[str, dict]:
    """'ONNX Runtime 1.x CPUExecutionProvider, 2 intra-op threads; OpenVINO 2026.x CPU, 2 inference threads' and
    the same as a record, naming only the backends that timed a row."""
    parts, record = [], {}
    for backend in backends_run:
        if backend == "openvino":
            from bertbuild.backends.openvino import DEVICE, capabilities

            parts.append(f"{_version(backend)} {DEVICE} ({', '.join(capabilities()) or 'no capabilities listed'}), "
                         f"{threads} inference thread(s)")
            record[backend] = {"version": _version(backend).split()[-1], "device": DEVICE, "threads": threads,
                               "cpu_capabilities": capabilities()}
        else:
            parts.append(f"{_version(backend)} {provider}, {threads} intra-op thread(s)")
            record[backend] = {"version": _version(backend).split()[-1], "provider": provider, "threads": threads}
    return "; ".join(parts), record


def _time_pairs(pairs: list[Pair], args, threads: int, timed_one) -> tuple[list, list[str]]:
    """Run `timed_one(runner)` -> [stats] for each pair, one model loaded at a time: ([Timed], skipped lines).

    A file that is an ONNX model but one backend cannot load (an operator it
    lacks) is a skipped line when other rows remain; a file that is no model at
    all is the loader's own one-line error.
    """
    from bertbuild.errors import UserInputError
    from bertbuild.evaluation.latency import Timed

    rows, skipped, failures = [], [], []
    for pair in pairs:
        runner = pair.runner(args, threads)
        try:
            runner.activate()
        except UserInputError as error:
            if pair.precision is None:
                raise
            failures.append(error)
            skipped.append(f"skipped: {pair.backend} on {pair.name}: {error}")
            continue
        try:
            compute = pair.compute(runner)
            rows += [Timed(pair.backend, compute, stats) for stats in timed_one(runner)]
        finally:
            runner.deactivate()
    if not rows and failures:
        raise failures[0]
    return rows, skipped


def run(args) -> int:
    from bertbuild.errors import UserInputError
    from bertbuild.evaluation.latency import measure, squad_feed
    from bertbuild.host import machine_note
    from bertbuild.reporting.latency_tables import backend_table

    missing = [str(p) for p in args.onnx if not p.is_file()]
    if missing:
        raise UserInputError(f"ONNX model not found: {', '.join(missing)}")
    if not 32 <= args.seq <= 512 or args.batch < 1:
        raise UserInputError(f"--seq must be in 32..512 and --batch >= 1 (got seq {args.seq}, batch {args.batch})")
    if "onnxruntime" in (args.backend or ["onnxruntime"]):
        check_provider(args.provider)
    if args.vocab is not None:
        text_file(args.vocab, "--vocab", "a vocab.txt (UTF-8 text)")
    if args.json is not None:
        output_file(args.json, "--json")
    if args.lengths != "heldout" and (args.length_bucket or args.limit is not None):
        raise UserInputError("--length-bucket and --limit go with --lengths heldout")
    threads = args.threads or os.cpu_count() or 1
    backends = _backends(args.backend, threads)
    names = [p.name if [q.name for q in args.onnx].count(p.name) == 1 else str(p) for p in args.onnx]
    pairs, skipped = _pairs(backends, args.onnx, names)
    if not pairs:
        raise UserInputError("nothing to time: " + "; ".join(line.removeprefix("skipped: ") for line in skipped))
    note = machine_note()
    if args.lengths == "heldout":
        return _heldout_passes(args, pairs, skipped, threads, note)
    feed = squad_feed(args.batch, args.seq, args.vocab, lower_case=not args.cased)

    def timed_one(runner):
        return [measure(runner, feed, warmup=args.warmup, iterations=args.iterations, min_seconds=args.min_seconds)]

    described = (f"batch {args.batch} x seq {args.seq}, real SQuAD held-out windows; times are per infer() call "
                 f"and include host copies (int32 feed in, float32 logits out)")
    return _time_and_report(args, pairs, skipped, threads, note, timed_one, described, backend_table, {})


def _time_and_report(args, pairs: list[Pair], skipped: list[str], threads: int, note: str, timed_one,
                     described: str, table, fields: dict) -> int:
    """Time the pairs (`_time_pairs`), print the header line, `table(rows)` and the skipped lines; write --json
    with `fields` after the header's."""
    import json

    rows, failed = _time_pairs(pairs, args, threads, timed_one)
    header, record = _header(list(dict.fromkeys(r.backend for r in rows)), threads, args.provider)
    print(f"{header}; {described}; {note}.")
    print(table(rows))
    for line in skipped + failed:
        print(line)
    if args.json:
        # The top-level `provider` earlier records had, where ONNX Runtime ran.
        compat = {"provider": record["onnxruntime"]["provider"]} if "onnxruntime" in record else {}
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({**compat, "threads": threads, "machine": note, "backends": record, **fields,
                                         "skipped": skipped + failed, "rows": [r.to_dict() for r in rows]},
                                        indent=2) + "\n")
    return 0


def check_provider(provider: str) -> None:
    """The execution provider must be one this ONNX Runtime has: a header must never name one that did not run."""
    import onnxruntime

    from bertbuild.errors import UserInputError

    available = onnxruntime.get_available_providers()
    if provider not in available:
        raise UserInputError(f"--provider {provider}: not available in this ONNX Runtime "
                             f"(available here: {', '.join(available)})")


def _heldout_passes(args, pairs: list[Pair], skipped: list[str], threads: int, note: str) -> int:
    """One timed pass per (pair, length bucket) over the same held-out windows."""
    from bertbuild.errors import UserInputError
    from bertbuild.evaluation.latency import heldout_windows, measure_pass
    from bertbuild.reporting.latency_tables import backend_pass_table
    from bertbuild.shapes import DEFAULT_LENGTH_BUCKET

    buckets = args.length_bucket or [0, DEFAULT_LENGTH_BUCKET]
    windows = heldout_windows(args.seq, args.vocab, lower_case=not args.cased, limit=args.limit)
    if len(windows) == 0:
        raise UserInputError("no held-out windows to time")

    def timed_one(runner):  # one session per pair, every bucket timed on it
        return [measure_pass(runner, windows, args.batch, bucket, warmup=args.warmup > 0) for bucket in buckets]

    described = (f"{len(windows)} held-out windows at seq {args.seq} in batches of {args.batch}, batched as "
                 f"scoring does; seconds are inside infer(), summed over the pass (after one untimed call per batch "
                 f"shape); vs first: over the first row's windows/s at the same bucket")
    return _time_and_report(args, pairs, skipped, threads, note, timed_one, described, backend_pass_table,
                            {"seq": args.seq, "lengths": "heldout"})
