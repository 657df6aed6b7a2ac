"""The embedded default model end to end: every precision on a fixed held-out subset.

The recorded figures live in the model card (`models/minilm-l6-squad/card.json`,
`ci_subset`), written from a real run of the same config; this test reruns it
and holds the TensorFlow reference to within ±1.0 F1 of that figure, and every
engine to the issue's precision budgets against it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.slow

PROJECT_ROOT = Path(__file__).resolve().parent.parent
MODEL = PROJECT_ROOT / "models" / "minilm-l6-squad"


@pytest.fixture(scope="module")
def card() -> dict:
    return json.loads((MODEL / "card.json").read_text())


@pytest.fixture(scope="module")
def run(card, tmp_path_factory, prefect_harness):
    from bertbuild.flows.build_bert import build_bert

    subset = card["ci_subset"]
    out = tmp_path_factory.mktemp("embedded")
    import yaml

    config = yaml.safe_load((PROJECT_ROOT / "configs" / "default.yaml").read_text())  # what `make demo` runs
    config |= {
        "model": {"source": str(MODEL), "name": "minilm-l6-squad"},
        "eval": {"split": subset["split"], "offset": subset["offset"], "limit": subset["limit"]},
        "publish": {"store": str(out / "store")},
        "output_dir": str(out / "runs"),
        "cache": {"dir": str(out / "cache")},
    }
    assert config["engines"]["precisions"] == ["fp32", "fused-fp32", "fp16", "bf16", "int8"]
    result = build_bert(config)
    return {row["precision"]: row for row in result["rows"]}, Path(result["run_dir"]), result


def test_reference_f1_matches_the_recorded_subset_figure(card, run):
    rows, _, _ = run
    subset = card["ci_subset"]
    assert subset["limit"] >= 200 and subset["split"] == "heldout"
    reference = rows["fp32 (reference)"]
    assert reference["questions"] == subset["limit"]
    assert abs(reference["f1"] - subset["f1"]) <= 1.0, (reference["f1"], subset["f1"])
    assert reference["f1"] >= 40, "the embedded model must be a real QA model"


def test_export_and_fusion_keep_fp32_logits(run):
    rows, _, result = run
    # ONNX FP32 vs TensorFlow: summation order alone gives ~2e-4 here (see configs/default.yaml).
    assert rows["fp32"]["max_abs_dlogit"] <= 5e-4
    outputs = result["reports"]["outputs"]
    unfused, fused = (np.load(outputs[rows[p]["engine"]]["logits"]) for p in ("fp32", "fused-fp32"))
    assert max(np.abs(unfused[k] - fused[k]).max() for k in ("start", "end")) <= 1e-4
    assert rows["fused-fp32"]["f1"] == rows["fp32"]["f1"]


def test_reduced_precisions_stay_within_their_f1_budgets(run):
    rows, _, result = run
    reference = rows["fp32 (reference)"]["f1"]
    assert reference - rows["fp16"]["f1"] <= 0.1
    if "bf16" in rows:  # where the backend computes BF16 (OpenVINO on a CPU with AVX512_BF16 or AMX)
        assert reference - rows["bf16"]["f1"] <= 0.1
    assert reference - rows["int8"]["f1"] <= 1.0
    assert all(row["gates"] == "PASS" for key, row in rows.items() if key != "fp32 (reference)")
    assert result["published"]["released"]


def test_ask_answers_a_heldout_question_with_the_published_int8_engine(run, capsys):
    """The INT8 engine, as a user would call it, gives the gold answer where the reference does."""
    from bertbuild.cli import main
    from bertbuild.squad import data
    from bertbuild.squad.metrics import normalize_answer

    rows, out, result = run
    # The INT8 engine of the run's backend (`auto`): OpenVINO IR of the s8s8 file on a CPU host with OpenVINO,
    # else ONNX Runtime's saved graph of the ORT-only file. One per run.
    (engine,) = [p for p in (out / "engines" / "int8").iterdir() if p.suffix in (".xml", ".onnx")]
    reference = json.loads((out / "predictions-tensorflow-fp32.json").read_text())
    _, heldout = data.split_by_article(data.load_dataset())
    examples = {e.qid: e for e in data.examples_from(heldout)}
    right = [qid for qid, text in reference.items()
             if normalize_answer(text) in {normalize_answer(a) for a in examples[qid].answers}]
    assert len(right) >= 40
    example = examples[right[0]]
    assert main(["ask", "--engine", str(engine), "--question", example.question, "--context", example.context]) == 0
    said = capsys.readouterr().out.splitlines()[0]
    assert normalize_answer(said) in {normalize_answer(a) for a in example.answers}
