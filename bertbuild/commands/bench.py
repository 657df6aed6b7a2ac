"""`bertbuild bench --onnx A.onnx [--onnx B.onnx ...]`: latency of ONNX files in ONNX Runtime.

Same real SQuAD feed for every model, one model loaded at a time; the table's
last column is each row's speed-up over the first row at the median.

`--lengths heldout` times whole passes over held-out windows instead, batched
as the scorer batches them, once per `--length-bucket` (repeatable; 0 is the
padded baseline) and model, in windows/s and real tokens/s.
"""

from __future__ import annotations

import os
from pathlib import Path

from bertbuild.commands.arguments import at_least, output_file, text_file


def add_parser(sub) -> None:
    parser = sub.add_parser("bench", help="measure ONNX Runtime latency of one or more .onnx files on SQuAD windows")
    parser.add_argument("--onnx", action="append", required=True, type=Path, metavar="MODEL.onnx",
                        help="a model to time (repeatable; the first row is the baseline)")
    parser.add_argument("--batch", type=at_least(1), default=8, help="sequences per call (default 8)")
    parser.add_argument("--seq", type=at_least(32), default=384, help="tokens per sequence, 32..512 (default 384)")
    parser.add_argument("--threads", type=at_least(1), help="ONNX Runtime intra-op threads (default: all CPUs)")
    parser.add_argument("--iterations", type=at_least(1), help="timed calls per model (default: as many as --min-seconds allows)")
    parser.add_argument("--min-seconds", type=at_least(0.0, float), default=5.0, help="seconds per model without --iterations (default 5)")
    parser.add_argument("--warmup", type=at_least(0), default=5, help="untimed calls first (default 5)")
    parser.add_argument("--provider", default="CPUExecutionProvider",
                        help="ONNX Runtime execution provider (default CPUExecutionProvider)")
    parser.add_argument("--vocab", type=Path, help="vocab.txt for tokenizing (default: the bundled uncased vocab)")
    parser.add_argument("--cased", action="store_true", help="the vocab is cased (do not lower-case)")
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    parser.add_argument("--lengths", choices=("fixed", "heldout"), default="fixed",
                        help="fixed: one batch x seq feed timed per call (default); heldout: whole passes over "
                             "held-out windows batched as the scorer does, in windows/s and real tokens/s")
    parser.add_argument("--length-bucket", type=at_least(0), action="append", metavar="N",
                        help="with --lengths heldout: trim batches to multiples of N tokens; repeatable, one pass "
                             "per value and model; 0 pads to --seq (default: 0 and eval.length_bucket's default)")
    parser.add_argument("--limit", type=at_least(1),
                        help="with --lengths heldout: only the first N held-out questions (default: all)")
    parser.set_defaults(handler=run)


def run(args) -> int:
    import json

    from bertbuild.backends.onnxrt import OnnxRuntimeRunner
    from bertbuild.evaluation.latency import latency_table, machine_note, measure, squad_feed
    from bertbuild.errors import UserInputError

    missing = [str(p) for p in args.onnx if not p.is_file()]
    if missing:
        raise UserInputError(f"ONNX model not found: {', '.join(missing)}")
    if not 32 <= args.seq <= 512 or args.batch < 1:
        raise UserInputError(f"--seq must be in 32..512 and --batch >= 1 (got seq {args.seq}, batch {args.batch})")
    check_provider(args.provider)
    if args.vocab is not None:
        text_file(args.vocab, "--vocab", "a vocab.txt (UTF-8 text)")
    if args.json is not None:
        output_file(args.json, "--json")
    note = machine_note()
    threads = args.threads or os.cpu_count() or 1
    names = [p.name if [q.name for q in args.onnx].count(p.name) == 1 else str(p) for p in args.onnx]
    if args.lengths == "heldout":
        return _heldout_passes(args, names, threads, note)
    if args.length_bucket or args.limit is not None:
        raise UserInputError("--length-bucket and --limit go with --lengths heldout")
    feed = squad_feed(args.batch, args.seq, args.vocab, lower_case=not args.cased)
    rows, provider = [], args.provider
    for path, name in zip(args.onnx, names):
        runner = OnnxRuntimeRunner(path, providers=[provider], threads=threads, name=name)
        rows.append(measure(runner, feed, warmup=args.warmup, iterations=args.iterations,
                            min_seconds=args.min_seconds))
    print(f"ONNX Runtime {provider}, {threads} intra-op thread(s); batch {args.batch} x seq {args.seq}, "
          f"real SQuAD held-out windows; times are per infer() call and include host copies "
          f"(int32 feed in, float32 logits out); {note}.")
    print(latency_table(rows))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"provider": provider, "threads": threads, "machine": note,
                                         "rows": [r.to_dict() for r in rows]}, indent=2) + "\n")
    return 0


def check_provider(provider: str) -> None:
    """The execution provider must be one this ONNX Runtime has: a header must never name one that did not run."""
    import onnxruntime

    from bertbuild.errors import UserInputError

    available = onnxruntime.get_available_providers()
    if provider not in available:
        raise UserInputError(f"--provider {provider}: not available in this ONNX Runtime "
                             f"(available here: {', '.join(available)})")


def _heldout_passes(args, names: list[str], threads: int, note: str) -> int:
    """One timed pass per (model, length bucket) over the same held-out windows."""
    import json

    from bertbuild.backends.onnxrt import OnnxRuntimeRunner
    from bertbuild.errors import UserInputError
    from bertbuild.evaluation.latency import heldout_windows, measure_pass, pass_table
    from bertbuild.squad.batching import DEFAULT_LENGTH_BUCKET

    buckets = args.length_bucket or [0, DEFAULT_LENGTH_BUCKET]
    windows = heldout_windows(args.seq, args.vocab, lower_case=not args.cased, limit=args.limit)
    if len(windows) == 0:
        raise UserInputError("no held-out windows to time")
    rows = []
    for path, name in zip(args.onnx, names):
        runner = OnnxRuntimeRunner(path, providers=[args.provider], threads=threads, name=name)
        with runner:  # one session per model, every bucket timed on it
            rows += [measure_pass(runner, windows, args.batch, bucket, warmup=args.warmup > 0) for bucket in buckets]
    print(f"ONNX Runtime {args.provider}, {threads} intra-op thread(s); {len(windows)} held-out windows at seq "
          f"{args.seq} in batches of {args.batch}, batched as scoring does; seconds are inside infer(), summed "
          f"over the pass (after one untimed call per batch shape); {note}.")
    print(pass_table(rows))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"provider": args.provider, "threads": threads, "machine": note,
                                         "seq": args.seq, "lengths": "heldout",
                                         "rows": [r.to_dict() for r in rows]}, indent=2) + "\n")
    return 0
