"""Cold and warm `bertbuild run` on one config, and what each run adds to the artifact store.

    .venv/bin/python benchmarks/rerun.py --config configs/default.yaml [--runs 2] [--set KEY=VALUE ...]
        [--then-set KEY=VALUE ...]

Every run is a separate `bertbuild run` process, timed wall-clock from process
start to exit (so Prefect's temporary server and Python start-up are counted).
The step cache and the store start empty (fresh directories under --work), so
the first run is cold and later runs show what the cache and the
content-addressed store save. `--then-set` adds one last run with those
overrides on top (e.g. a new gate threshold: it should re-gate and rebuild
nothing). Prints one line per run; each run's output is kept in
`<work>/run-N.log`.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path


def tree_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file() and not p.is_symlink())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/default.yaml")
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--work", type=Path, default=Path("runs/rerun-benchmark"))
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--then-set", dest="then", action="append", default=[],
                        help="overrides for one extra run after the others")
    args = parser.parse_args()

    shutil.rmtree(args.work, ignore_errors=True)
    cache, store, out = args.work / "cache", args.work / "store", args.work / "runs"
    env = {**os.environ, "BERTBUILD_CACHE": str(cache)}
    command = [sys.executable, "-m", "bertbuild.cli", "run", "--config", args.config,
               "--set", f"publish.store={store}", "--set", f"output_dir={out}"]
    for assignment in args.overrides:
        command += ["--set", assignment]
    load = os.getloadavg()[0]
    print(f"{args.config}: {args.runs} runs, fresh cache and store under {args.work}; "
          f"{os.cpu_count()} CPUs, 1-min load {load:.2f} at start")
    before = 0
    plans = [command] * args.runs
    if args.then:
        plans.append(command + [arg for assignment in args.then for arg in ("--set", assignment)])
    for number, plan in enumerate(plans, start=1):
        begin = time.perf_counter()
        done = subprocess.run(plan, env=env, capture_output=True, text=True)
        seconds = time.perf_counter() - begin
        stored = tree_bytes(store) if store.exists() else 0
        (args.work / f"run-{number}.log").write_text(done.stdout + done.stderr)
        verdict = "ok" if done.returncode == 0 else f"exit {done.returncode}: {done.stderr.strip().splitlines()[-1]}"
        extra = f" (+ {' '.join(args.then)})" if number > args.runs else ""
        print(f"run {number}{extra}: {seconds:7.1f} s wall  store {stored / 1e6:8.2f} MB (+{(stored - before) / 1e6:.3f} MB)"
              f"  {verdict}")
        before = stored
    return 0


if __name__ == "__main__":
    sys.exit(main())
