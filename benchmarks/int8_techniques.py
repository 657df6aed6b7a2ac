"""INT8 accuracy techniques, one by one, judged on the TRAIN-half tune split only.

For each technique (an `Int8Config` override) the recipe (bertbuild.precision.recipe)
writes the INT8 file from the run's fused FP32 graph, and the file's logits on
the tune windows are compared with the FP32 file's (bertbuild.evaluation.tune_split):
KL of the start/end distributions, logit error, start/end argmax agreement and
answer agreement. The choice (`closest_to_fp32`) is the first technique in the
list, simplest first, whose per-window KL is not measurably (2 paired standard
errors) above the lowest one. No held-out question is read to make any choice.

`--alpha` runs the smoothing-strength search (on top of the given base
overrides) and reports the chosen alpha. `--heldout` then scores the listed
techniques' files on ALL held-out questions, once, for the final table (with
the paired bootstrap ΔEM/ΔF1 vs the FP32 export, model-fp32.onnx).

    python benchmarks/int8_techniques.py --run runs/base --out runs/techniques
    python benchmarks/int8_techniques.py --run runs/base --out runs/techniques \\
        --base method=minmax --alpha 0.3 0.5 0.7 0.9
    python benchmarks/int8_techniques.py --run runs/base --out runs/techniques \\
        --technique plain= --technique "smooth=smoothing_alpha=0.5,method=minmax" --heldout

A technique is NAME=KEY=VALUE,KEY=VALUE (values parsed as JSON when they can be).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

# Plain INT8: the calibration the project shipped before (percentile 99.99 over 256 rows) and no rewrites.
PLAIN = {"method": "percentile", "percentile": 99.99, "smoothing_alpha": None, "outlier_channels": 0}
MINMAX_SMOOTH = {"method": "minmax", "smoothing_alpha": 0.7}
DEFAULT_TECHNIQUES = {  # each on top of PLAIN (or --base), in the order they were tried
    "plain (percentile 99.99, 256 rows)": {},
    "calibration: percentile 99.9": {"percentile": 99.9},
    "calibration: percentile 99.999": {"percentile": 99.999},
    "calibration: entropy": {"method": "entropy"},
    "calibration: minmax": {"method": "minmax"},
    "calibration: per tensor (auto)": {"method": "auto"},
    "calibration: 1024 rows": {"samples": 1024},
    "bias correction": {"bias_correction": True},
    "minmax + bias correction": {"method": "minmax", "bias_correction": True},
    "smoothing LN a0.5": {"smoothing_alpha": 0.5},
    "minmax + smoothing LN a0.3": {**MINMAX_SMOOTH, "smoothing_alpha": 0.3},
    "minmax + smoothing LN a0.5": {**MINMAX_SMOOTH, "smoothing_alpha": 0.5},
    "minmax + smoothing LN a0.7": MINMAX_SMOOTH,
    "minmax + smoothing LN a0.85": {**MINMAX_SMOOTH, "smoothing_alpha": 0.85},
    "minmax + smoothing GELU a0.5": {"method": "minmax", "smoothing_alpha": 0.5, "smoothing_after": ["Gelu"]},
    "minmax + outliers k4": {"method": "minmax", "outlier_channels": 4},
    "minmax + smoothing a0.7 + outliers k1": {**MINMAX_SMOOTH, "outlier_channels": 1},
    "minmax + smoothing a0.7 + outliers k2": {**MINMAX_SMOOTH, "outlier_channels": 2},
    "minmax + smoothing a0.7 + outliers k4": {**MINMAX_SMOOTH, "outlier_channels": 4},
    "minmax + smoothing a0.7 + outliers k8": {**MINMAX_SMOOTH, "outlier_channels": 8},  # chosen: the default
    "minmax + smoothing a0.6 + outliers k4": {**MINMAX_SMOOTH, "smoothing_alpha": 0.6, "outlier_channels": 4},
    "auto + smoothing a0.7 + outliers k4": {**MINMAX_SMOOTH, "method": "auto", "outlier_channels": 4},
    "minmax + smoothing a0.7 + outliers k4 + bias correction": {**MINMAX_SMOOTH, "outlier_channels": 4,
                                                                "bias_correction": True},
}


def parse_overrides(text: str) -> dict:
    """KEY=VALUE,KEY=VALUE; a comma inside [...] belongs to a JSON list value."""
    items, depth, current = [], 0, ""
    for char in text:
        depth += {"[": 1, "]": -1}.get(char, 0)
        if char == "," and depth == 0:
            items.append(current)
            current = ""
        else:
            current += char
    items.append(current)
    overrides = {}
    for item in filter(None, items):
        key, _, value = item.partition("=")
        try:
            overrides[key] = json.loads(value)
        except json.JSONDecodeError:
            overrides[key] = value
    return overrides


def main(argv=None) -> int:
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    from bertbuild.host import machine_note
    from bertbuild.precision.calibration_set import calibration_set
    from bertbuild.config.precision import Int8Config, TuneConfig
    from bertbuild.precision.recipe import build_int8
    from bertbuild.evaluation.tune_split import closest_to_fp32, compare, onnx_logits, tune_set

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True, help="a run directory (model-fused.onnx, vocab.txt)")
    parser.add_argument("--out", type=Path, required=True, help="where the INT8 files and results.json go")
    parser.add_argument("--technique", action="append", default=[], metavar="NAME=OVERRIDES",
                        help="a technique to try (repeatable; default: the built-in list)")
    parser.add_argument("--base", default="", metavar="OVERRIDES",
                        help="overrides under every technique, on top of plain INT8 (PLAIN)")
    parser.add_argument("--alpha", type=float, nargs="*", help="search the smoothing alpha over these values")
    parser.add_argument("--variant", choices=("u8s8", "ort"), default="u8s8", help="the file judged (default u8s8)")
    parser.add_argument("--questions", type=int, default=TuneConfig().questions, help="tune questions")
    parser.add_argument("--heldout", action="store_true", help="also score each file on ALL held-out questions")
    parser.add_argument("--reuse", action="store_true",
                        help="reuse a file an earlier run in --out built with the same overrides (judge it again)")
    args = parser.parse_args(argv)
    earlier = json.loads((args.out / "results.json").read_text())["results"] if args.reuse and \
        (args.out / "results.json").is_file() else {}

    fused, vocab = args.run / "model-fused.onnx", args.run / "vocab.txt"
    base = {**PLAIN, **parse_overrides(args.base)}
    techniques = {}
    for item in args.technique:
        name, _, overrides = item.partition("=")
        techniques[name] = {**base, **parse_overrides(overrides)}
    if args.alpha:
        techniques.update({f"smoothing a{alpha:g}": {**base, "smoothing_alpha": alpha} for alpha in args.alpha})
    if not techniques:
        techniques = {name: {**base, **overrides} for name, overrides in DEFAULT_TECHNIQUES.items()}

    print(f"{machine_note()}", flush=True)
    calibration_questions = set(calibration_set(Int8Config(), vocab, True).question_ids)
    tune_cfg = TuneConfig(questions=args.questions)
    tune = tune_set("bundled", vocab, True, tune_cfg.questions, tune_cfg.seed, calibration_questions)
    print(f"tune split: {len(tune.examples)} train-half questions, {len(tune)} windows, seed {tune_cfg.seed} "
          f"(calibration's {len(calibration_questions)} questions left out)", flush=True)
    reference = onnx_logits(fused, tune)
    results, signals = {}, {}
    header = f"{'technique':38s} {'KL':>8s} {'|dlogit|':>9s} {'start=':>7s} {'end=':>7s} {'answer=':>8s} " \
             f"{'changed':>7s} {'build s':>8s}"
    print(header + "\n" + "-" * len(header), flush=True)
    for index, (name, overrides) in enumerate(techniques.items()):
        before = earlier.get(name, {})
        if before.get("overrides") == overrides and Path(before.get("file", "")).is_file():
            path, built, applied = before["file"], before["build_seconds"], before["techniques"]
        else:
            cfg = Int8Config(**overrides)
            begin = time.perf_counter()
            samples = calibration_set(cfg, vocab, True)
            files = build_int8(fused, args.out / f"t{index:02d}", samples, cfg,
                               variants=("u8s8", "ort") if args.variant == "ort" else ("u8s8",))
            path, built, applied = files.paths[args.variant], round(time.perf_counter() - begin, 1), files.techniques
        signal = compare(tune, reference, onnx_logits(path, tune))
        signals[name] = signal
        results[name] = {"overrides": overrides, "file": path, "tune": signal.to_json(), "build_seconds": built,
                         "techniques": applied}
        changed = round((1 - signal.answer_agreement) * signal.questions)
        print(f"{name:38s} {signal.kl:8.4f} {signal.mean_abs_dlogit:9.4f} {signal.start_agreement:7.3f} "
              f"{signal.end_agreement:7.3f} {signal.answer_agreement:8.3f} {changed:7d} {built:8.0f}", flush=True)
    chosen = closest_to_fp32(signals)
    best = min(signals, key=lambda label: signals[label].kl)
    print(f"lowest KL: {best}; chosen (first listed within 2 paired SE of it): {chosen}  "
          f"{json.dumps(techniques[chosen])}")
    if args.heldout:
        _score_heldout(args.run / "model-fp32.onnx", results, args.out)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(
        {"machine": machine_note(), "tune_set": {**tune.origin, "question_ids": tune.question_ids}, "chosen": chosen,
         "results": results}, indent=1) + "\n")
    return 0


def _score_heldout(fp32: Path, results: dict, out: Path) -> None:
    """FP32 and every technique's file on ALL held-out questions, once each; ΔEM/ΔF1 with bootstrap intervals."""
    from bertbuild.cli import main as cli
    from bertbuild.evaluation.bootstrap import paired_bootstrap

    def scored(path: str, target: Path) -> dict:
        cli(["eval", "--onnx", path, "--json", str(target)])
        return json.loads(target.read_text())

    reference = scored(str(fp32), out / "heldout-fp32.json")
    for index, (name, result) in enumerate(results.items()):
        record = scored(result["file"], out / f"heldout-t{index:02d}.json")
        deltas = paired_bootstrap({q: tuple(v) for q, v in reference["per_question"].items()},
                                  {q: tuple(v) for q, v in record["per_question"].items()})
        result["heldout"] = {"exact_match": record["exact_match"], "f1": record["f1"], "questions": record["questions"],
                             **{f"delta_{metric}": interval.to_json() for metric, interval in deltas.items()}}
        print(f"held-out  {name:38s} F1 {record['f1']:.2f}  ΔF1 {deltas['f1']}  ΔEM {deltas['exact_match']}",
              flush=True)
    results["FP32"] = {"file": str(fp32), "heldout": {k: reference[k] for k in ("exact_match", "f1",
                                                                                          "questions")}}


if __name__ == "__main__":
    sys.exit(main())
