"""A whole build of a full-size NGC-layout checkpoint: where the time and the memory go, step by step.

    .venv/bin/python benchmarks/scale.py --size base|large [--work /tmp/bertbuild-scale] [--layers N]
        [--set KEY=VALUE ...]

1. Generates a random-weight checkpoint of the seed model's shape in NVIDIA's
   NGC layout (Adam slots, `global_step`, a flat zip) under --work, once.
2. Runs `bertbuild run --config configs/bert-<size>-ngc.yaml --no-cache` on it
   with small evaluation limits (below), as a separate process.
3. Prints each step's seconds and peak RSS (from the run's results.json), the
   flow process's and every child's peak, the budgets of issue #21, and each
   engine's time per window at the config's sequence length, with what a CPU
   nightly over the whole SQuAD dev set would cost at that rate.

With random weights the accuracy gates fail by design: the run ends Failed
with its reports, and that is the expected end here (exit 0 if every step ran).
Generated files stay under --work (default in /tmp), never in the checkout.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

GiB = 2**30
# Small limits: a few batches per pass, so a 2-core CPU builds BERT-large in well under an hour.
SMALL_LIMITS = [
    "eval.limit=16", "validation.batches=1", "precision.int8.samples=16", "precision.tune.questions=16",
    "precision.fallback.enabled=false", "benchmark.warmup=1", "benchmark.iterations=3",
]
WHOLE_RUN_BUDGET = {"base": 6 * GiB, "large": 12 * GiB}


def export_budget(weight_bytes: int) -> int:
    return int(2.5 * weight_bytes + 1.5 * GiB)


def generate(size: str, work: Path, layers: int | None) -> Path:
    from bertbuild.data import UNCASED_VOCAB, bundled_file
    from bertbuild.model.random_checkpoint import write_ngc_zip

    name = f"bert-{size}-ngc" + (f"-{layers}l" if layers else "") + ".zip"
    target = work / name
    if not target.is_file():
        start = time.perf_counter()
        write_ngc_zip(target, size, bundled_file(UNCASED_VOCAB), layers=layers)
        print(f"generated {target} ({target.stat().st_size / 2**20:.0f} MiB) in {time.perf_counter() - start:.0f} s")
    return target


class TreeSampler:
    """The highest summed RSS of a process and all its descendants (the flow and its child steps at once)."""

    def __init__(self, pid: int):
        import threading

        self.peak, self._pid, self._stop = 0, pid, threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        import psutil

        root = psutil.Process(self._pid)
        while not self._stop.wait(0.2):
            try:
                tree = [root, *root.children(recursive=True)]
                self.peak = max(self.peak, sum(p.memory_info().rss for p in tree if p.is_running()))
            except psutil.Error:
                continue

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak


def run_build(size: str, source: Path, work: Path, overrides: list[str]) -> tuple[int, float, int, int, Path]:
    """(exit code, seconds, flow process peak RSS, process tree peak RSS, results.json) of one `bertbuild run`."""
    out = work / "runs"
    command = [sys.executable, "-m", "bertbuild.cli", "run", "--config", str(ROOT / f"configs/bert-{size}-ngc.yaml"),
               "--no-cache", "--set", f"model.source={source}", "--set", f"model.name=scale-{size}",
               "--set", f"output_dir={out}", "--set", f"publish.store={work / 'store'}"]
    for assignment in SMALL_LIMITS + overrides:
        command += ["--set", assignment]
    env = {**os.environ, "BERTBUILD_CACHE": str(work / "cache")}
    log = work / f"run-{size}.log"
    print(f"running: {' '.join(command[1:])}\n  log: {log}", flush=True)
    start = time.perf_counter()
    with open(log, "w") as handle:
        process = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
        sampler = TreeSampler(process.pid)
        _, status, usage = os.wait4(process.pid, 0)  # this process's own rusage: the flow process's peak
        process.returncode = os.waitstatus_to_exitcode(status)
        tree_peak = sampler.stop()
    seconds = time.perf_counter() - start
    return (process.returncode, seconds, usage.ru_maxrss * 1024, tree_peak,
            out / f"scale-{size}" / "latest" / "results.json")


def dev_set_windows(seq: int, stride: int, query: int) -> int:
    """How many windows the whole SQuAD v1.1 dev set (10,570 questions) makes at this sequence length."""
    from bertbuild.config import EvalConfig
    from bertbuild.data import UNCASED_VOCAB, bundled_file
    from bertbuild.evaluation.score import scoring_set

    cfg = EvalConfig(split="all", limit=None, max_seq_length=seq, doc_stride=stride, max_query_length=query)
    return len(scoring_set(cfg, bundled_file(UNCASED_VOCAB), lower_case=True))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=("base", "large"), required=True)
    parser.add_argument("--work", type=Path, default=Path("/tmp/bertbuild-scale"))
    parser.add_argument("--layers", type=int, default=None, help="fewer encoder layers than the real model")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()

    from bertbuild.evaluation.table import STEP_COLUMNS, format_table
    from bertbuild.memory_budget import estimate
    from bertbuild.model.random_checkpoint import ngc_config

    args.work.mkdir(parents=True, exist_ok=True)
    source = generate(args.size, args.work, args.layers)
    code, seconds, flow_peak, tree_peak, results_path = run_build(args.size, source, args.work, args.overrides)
    if not results_path.is_file():
        print(f"bertbuild run exited {code} after {seconds:.0f} s without results.json; see the log")
        return 1
    results = json.loads(results_path.read_text())
    steps = results["reports"]["steps"]
    config = results["config"]
    weights = estimate(ngc_config(args.size, layers=args.layers)).weight_bytes
    print(f"\nbert-{args.size} ({weights / GiB:.2f} GiB FP32 weights): bertbuild run exited {code} after "
          f"{seconds / 60:.1f} min; {os.cpu_count()} CPUs\n")
    print(format_table(steps, STEP_COLUMNS))

    child_peaks = [s["child_peak_rss_mb"] * 2**20 for s in steps if "child_peak_rss_mb" in s]
    export = next(s for s in steps if s["step"] == "export-onnx")
    # The host's figure: the flow process and the child running beside it (the TensorFlow reference runs
    # while the flow fuses and quantizes), summed, sampled every 0.2 s; never below any single peak.
    whole = max([tree_peak, flow_peak, *child_peaks])
    print(f"\nflow process peak RSS {flow_peak / GiB:.2f} GiB (wait4); largest child step {max(child_peaks) / GiB:.2f} GiB; "
          f"flow + children together {tree_peak / GiB:.2f} GiB (sampled)")
    checks = [("export-onnx peak", export["peak_rss_mb"] * 2**20, export_budget(weights),
               "2.5 x FP32 weights + 1.5 GiB"),
              ("whole run peak", whole, WHOLE_RUN_BUDGET[args.size], f"bert-{args.size} budget")]
    for label, value, limit, rule in checks:
        print(f"{label:18s} {value / GiB:6.2f} GiB  budget {limit / GiB:5.2f} GiB ({rule}): "
              f"{'within' if value <= limit else 'OVER'}")

    ev, bench = config["eval"], config["benchmark"]
    windows = dev_set_windows(ev["max_seq_length"], ev["doc_stride"], ev["max_query_length"])
    print(f"\ntime per window at sequence {bench['seq']} (benchmark batch {bench['batch']}, p50), "
          f"and one pass over the whole dev set ({windows} windows):")
    for row in results["results"]:
        if row.get("p50_ms") is None:
            continue
        per_window = row["p50_ms"] / bench["batch"]
        print(f"  {row['engine']:24s} {per_window:8.1f} ms/window   {per_window * windows / 3.6e6:5.2f} h")
    return 0 if all(not s.get("failed") for s in steps) else 1


if __name__ == "__main__":
    sys.exit(main())
