"""`bertbuild eval`: any ONNX file scored with the project's pipeline; per-question JSON; paired comparison."""

from __future__ import annotations

import json

import pytest

from bertbuild.cli import main


def test_eval_scores_a_file_and_writes_per_question_scores(tiny_onnx, tmp_path, capsys):
    out = tmp_path / "fused.json"
    assert main(["eval", "--onnx", str(tiny_onnx["fused"]), "--limit", "3", "--json", str(out)]) == 0
    line = capsys.readouterr().out
    assert "model-fused.onnx: EM" in line and "questions 3" in line and "split heldout, first 3" in line
    record = json.loads(out.read_text())
    assert record["questions"] == 3 and len(record["per_question"]) == 3 and record["split"] == "heldout"
    assert record["vocab"].endswith("vocab.txt") and record["lower_case"] is True  # found beside the model
    mean_f1 = 100 * sum(f1 for _, f1 in record["per_question"].values()) / 3
    assert record["f1"] == pytest.approx(mean_f1, abs=0.01)

    from bertbuild.squad import data

    train, heldout = data.split_by_article(data.load_dataset())
    assert list(record["per_question"]) == [e.qid for e in data.examples_from(heldout)[:3]]

    # The same model against itself: a zero difference with a zero-width interval.
    again = tmp_path / "again.json"
    assert main(["eval", "--onnx", str(tiny_onnx["fp32"]), "--limit", "3", "--json", str(again),
                 "--compare", str(out)]) == 0
    compared = capsys.readouterr().out
    assert "ΔEM" in compared and "ΔF1" in compared and "bootstrap 95% interval" in compared

    assert main(["eval", "--onnx", str(tiny_onnx["fused"]), "--split", "train", "--limit", "2"]) == 0
    assert "questions 2 (split train" in capsys.readouterr().out


def test_eval_user_errors_exit_2(tiny_onnx, tmp_path, capsys):
    assert main(["eval", "--onnx", str(tmp_path / "missing.onnx")]) == 2
    assert "ONNX model not found" in capsys.readouterr().err
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"per_question": {"not-a-question": [1, 1]}}))
    assert main(["eval", "--onnx", str(tiny_onnx["fused"]), "--limit", "2", "--compare", str(other)]) == 2
    assert "same questions" in capsys.readouterr().err


def test_length_bucket_zero_is_the_padded_baseline_with_the_same_answers(tiny_onnx, tmp_path, capsys):
    """`--length-bucket 0` pads as before; the default trims batches: same answers, both rates recorded."""
    runs = {}
    for bucket in ("0", None):
        out = tmp_path / f"bucket-{bucket}.json"
        args = ["eval", "--onnx", str(tiny_onnx["fused"]), "--limit", "6", "--json", str(out)]
        assert main(args + ([] if bucket is None else ["--length-bucket", bucket])) == 0
        printed = capsys.readouterr().out
        assert "windows/s" in printed and "real tokens/s" in printed
        runs[bucket] = json.loads(out.read_text())
    padded, bucketed = runs["0"], runs[None]
    assert padded["length_bucket"] == 0 and bucketed["length_bucket"] == 32
    for record in (padded, bucketed):
        assert record["windows"] >= 6 and record["windows_per_s"] > 0 and record["real_tokens_per_s"] > 0
    assert padded["per_question"] == bucketed["per_question"]


def test_a_negative_length_bucket_is_a_user_error(tiny_onnx, capsys):
    with pytest.raises(SystemExit) as stop:  # argparse refuses it: one line, exit 2
        main(["eval", "--onnx", str(tiny_onnx["fused"]), "--limit", "1", "--length-bucket", "-1"])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and "argument --length-bucket: must be >= 0 (got -1)" in err and err.count("\n") == 1
