"""Which INT8 file, with which float parts, OpenVINO should run: judged on the TRAIN-half tune split only.

For each INT8 file of a run (`int8/model.int8-{s8s8,u8s8,ort}.onnx`) and each float-parts
precision this CPU has (FP32, and BF16 where it has AVX512_BF16 or AMX), OpenVINO's
logits on the tune windows are compared with OpenVINO FP32 running the fused FP32 file
(`bertbuild.evaluation.tune_split.compare`: the share of questions with FP32's exact answer,
KL, argmax agreement), and one pass over those windows is timed. No held-out question
is read. `bertbuild bench` gives the fixed-shape speed of the same pairs.

    .venv/bin/python benchmarks/openvino_int8_files.py --run runs/minilm-l6-squad/latest [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> int:
    from bertbuild.backends.openvino import OpenVinoRunner, can_compute, capabilities, inference_precision
    from bertbuild.host import machine_note
    from bertbuild.evaluation.score import run_logits
    from bertbuild.precision.calibration_set import calibration_set
    from bertbuild.config.precision import Int8Config, TuneConfig
    from bertbuild.evaluation.tune_split import compare, tune_set

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True, help="a run directory (runs/<model>/latest)")
    parser.add_argument("--questions", type=int, default=TuneConfig().questions)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    vocab = args.run / "vocab.txt"
    calibration_questions = set(calibration_set(Int8Config(), vocab, True).question_ids)
    tune_cfg = TuneConfig(questions=args.questions)
    tune = tune_set("bundled", vocab, True, tune_cfg.questions, tune_cfg.seed, calibration_questions)
    print(f"{machine_note()}; tune split: {len(tune.examples)} train-half questions, {len(tune)} windows, "
          f"seed {tune_cfg.seed}", flush=True)

    def logits(path: Path, hint: str) -> tuple:
        start = time.perf_counter()
        s, e, _ = run_logits(OpenVinoRunner(path, hint), tune.features, args.batch)
        return (s, e), time.perf_counter() - start

    reference, ref_seconds = logits(args.run / "model-fused.onnx", "f32")
    parts = ["fp32", *(["bf16"] if can_compute("bf16", capabilities())[0] else [])]
    rows = [{"file": "model-fused.onnx", "float_parts": "fp32", "answer_agreement": 1.0, "kl": 0.0,
             "windows_per_s": round(len(tune) / ref_seconds, 2)}]
    for variant in ("s8s8", "u8s8", "ort"):
        path = args.run / "int8" / f"model.int8-{variant}.onnx"
        if not path.is_file():
            continue
        for float_parts in parts:
            found, seconds = logits(path, inference_precision("int8", float_parts))
            signal = compare(tune, reference, found)
            rows.append({"file": path.name, "float_parts": float_parts,
                         "answer_agreement": round(signal.answer_agreement, 4), "kl": round(signal.kl, 5),
                         "start_agreement": round(signal.start_agreement, 4),
                         "windows_per_s": round(len(tune) / seconds, 2)})
    print(f"{'file':24s} {'float parts':>11s} {'same answer':>12s} {'KL':>9s} {'win/s':>7s}")
    for row in rows:
        print(f"{row['file']:24s} {row['float_parts']:>11s} {row['answer_agreement']:>12.2%} {row['kl']:>9.5f} "
              f"{row['windows_per_s']:>7.2f}")
    if args.json:
        args.json.write_text(json.dumps({"machine": machine_note(), "tune_questions": len(tune.examples),
                                         "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
