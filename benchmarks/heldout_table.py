"""The final table: `bertbuild eval --json` files (all held-out questions) + one `bertbuild bench --json` run.

Each row: EM, F1, ΔEM and ΔF1 vs the reference with paired bootstrap 95 %
intervals (bertbuild.evaluation.bootstrap), and the speed-up over the bench
run's first row (FP32), matched by the ONNX file's path as given to both
commands (or its name).

    python benchmarks/heldout_table.py --reference fp32=runs/heldout/fp32.json \\
        --row "plain INT8=runs/heldout/plain.json" ... --bench runs/bench.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path


def main(argv=None) -> int:
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    from bertbuild.evaluation.bootstrap import paired_bootstrap

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", required=True, metavar="NAME=EVAL.json")
    parser.add_argument("--row", action="append", default=[], metavar="NAME=EVAL.json")
    parser.add_argument("--bench", type=Path, help="a `bertbuild bench --json` file")
    args = parser.parse_args(argv)

    def load(item: str) -> tuple[str, dict]:
        name, _, path = item.partition("=")
        return name, json.loads(Path(path).read_text())

    speed = {}
    if args.bench:
        bench = json.loads(args.bench.read_text())
        base = bench["rows"][0]["p50_ms"]
        # bench names a row by the file name, or by the path as given when two files share a name
        speed = {row["name"]: base / row["p50_ms"] for row in bench["rows"]}
        print(f"speed: one `bertbuild bench` run, b8 s384, p50 vs the first row; {bench['machine']}")
    ref_name, reference = load(args.reference)
    ref_scores = {q: tuple(v) for q, v in reference["per_question"].items()}
    print("| file | EM | F1 | ΔEM [95% CI] | ΔF1 [95% CI] | questions | speed vs FP32 |")
    print("|---|---|---|---|---|---|---|")
    for name, record in [(ref_name, reference), *map(load, args.row)]:
        deltas = paired_bootstrap(ref_scores, {q: tuple(v) for q, v in record["per_question"].items()})
        ratio = speed.get(record["onnx"], speed.get(Path(record["onnx"]).name))
        print(f"| {name} | {record['exact_match']:.2f} | {record['f1']:.2f} | {deltas['exact_match']} | "
              f"{deltas['f1']} | {record['questions']} | {'' if ratio is None else f'{ratio:.2f}x'} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
