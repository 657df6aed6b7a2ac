"""Where an ONNX file spends its time in ONNX Runtime: kernel time per op type at b8 s384.

ORT's own profiler, on the same real SQuAD feed as `bertbuild bench`; prints
each op type's share of kernel time. This is how the INT8 work found that,
once the weight GEMMs were INT8, the opset-23 Attention kernel was the
largest single cost (see ort_int8.py).

    python benchmarks/profile_ops.py runs/base/int8/model.int8-u8s8.onnx [more.onnx ...]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import Counter


def profile(path: str, feed: dict, runs: int, threads: int) -> tuple[float, Counter]:
    from _ort_timing import cpu_session

    session = cpu_session(path, threads, profiling=True)
    for _ in range(2):
        session.run(None, feed)
    begin = time.perf_counter()
    for _ in range(runs):
        session.run(None, feed)
    per_call = (time.perf_counter() - begin) / runs
    trace = session.end_profiling()
    with open(trace) as handle:
        events = json.load(handle)
    os.remove(trace)
    totals: Counter = Counter()
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            totals[event["args"]["op_name"]] += event["dur"] / (runs + 2)  # microseconds per call
    return per_call, totals


def main(argv=None) -> int:
    import _ort_timing  # noqa: F401  (puts the repository on sys.path)

    from bertbuild.evaluation.latency import squad_feed
    from bertbuild.host import machine_note

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("onnx", nargs="+")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--top", type=int, default=10)
    args = parser.parse_args(argv)
    feed = squad_feed(8, 384)
    for path in args.onnx:
        per_call, totals = profile(path, feed, args.runs, args.threads)
        kernel = sum(totals.values())
        print(f"{path}: {1e3 * per_call:.1f} ms per call, kernels {kernel / 1e3:.1f} ms; {machine_note()}")
        for op, micros in totals.most_common(args.top):
            print(f"  {op:28s} {micros / 1e3:8.1f} ms  {100 * micros / kernel:5.1f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
