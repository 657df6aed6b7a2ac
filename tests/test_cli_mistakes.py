"""Every user mistake a command can meet is one line on stderr and exit 2, never a traceback."""

from __future__ import annotations

import json

import pytest

from bertbuild.cli import main


def _cli(argv, capsys) -> tuple[int, list[str]]:
    try:
        code = main(argv)
    except SystemExit as stop:  # argparse's own errors
        code = stop.code
    return code, capsys.readouterr().err.strip().splitlines()


@pytest.fixture()
def not_onnx(tmp_path):
    path = tmp_path / "model.onnx"
    path.write_text("not a model\n")
    return str(path)


@pytest.mark.parametrize("argv, fragment", [
    (["eval", "--onnx", "{onnx}", "--batch-size", "0"], "argument --batch-size: must be >= 1 (got 0)"),
    (["eval", "--onnx", "{onnx}", "--threads", "0"], "argument --threads: must be >= 1"),
    (["eval", "--onnx", "{onnx}", "--offset", "-1"], "argument --offset: must be >= 0"),
    (["eval", "--onnx", "{onnx}", "--limit", "ten"], "argument --limit: expected a whole number, got 'ten'"),
    (["eval", "--onnx", "{onnx}", "--dataset", "missing.json"], "dataset: missing.json does not exist"),
    (["eval", "--onnx", "{onnx}", "--limit", "2"], "ONNX Runtime cannot load it"),
    (["bench", "--onnx", "{onnx}", "--iterations", "0"], "argument --iterations: must be >= 1"),
    (["bench", "--onnx", "{onnx}", "--min-seconds", "-1"], "argument --min-seconds: must be >= 0.0"),
    (["bench", "--onnx", "{onnx}", "--iterations", "1", "--warmup", "0"], "ONNX Runtime cannot load it"),
    (["ask", "--engine", "{onnx}", "--question", "q", "--context", "c", "--max-seq-length", "8"],
     "argument --max-seq-length: must be >= 32"),
    (["artifacts", "prune", "--model", "m", "--keep", "-1"], "argument --keep: must be >= 0 (got -1)"),
    (["eval"], "the following arguments are required: --onnx"),
])
def test_bad_flags_and_files_are_one_line_with_exit_2(argv, fragment, not_onnx, capsys):
    code, lines = _cli([a.replace("{onnx}", not_onnx) for a in argv], capsys)
    assert code == 2 and len(lines) == 1 and fragment in lines[0], lines
    assert lines[0].startswith("bertbuild")


def test_ask_with_a_window_too_short_for_the_question_is_one_line(tiny_onnx, capsys):
    code, lines = _cli(["ask", "--engine", str(tiny_onnx["fp32"]), "--question", "where?", "--context", "here",
                        "--max-seq-length", "64"], capsys)
    assert code == 2 and len(lines) == 1 and "leaves no room for context" in lines[0], lines


ONE_ARTICLE = [{"title": "only", "paragraphs": [{
    "context": "Paris is the capital of France.",
    "qas": [{"id": "q1", "question": "What is the capital?", "answers": [{"text": "Paris", "answer_start": 0}]}],
}]}]


@pytest.mark.parametrize("articles, split, fragment", [
    ([], "all", "its train half has no questions, and INT8 calibration and tuning need them"),
    (ONE_ARTICLE, "heldout", "its held-out half has no questions, and scoring (eval.split) needs them"),
])
def test_a_dataset_without_a_half_the_run_needs_is_refused_before_the_run(articles, split, fragment,
                                                                          tiny_checkpoint, tmp_path, capsys):
    dataset = tmp_path / "custom.json"
    dataset.write_text(json.dumps({"version": "1.1", "data": articles}))
    config = tmp_path / "run.yaml"
    config.write_text(f"model:\n  source: {tiny_checkpoint}\noutput_dir: {tmp_path / 'out'}\n"
                      f"eval:\n  dataset: {dataset}\n  split: {split}\n  max_seq_length: 128\n"
                      "benchmark:\n  seq: 128\nprecision:\n  int8:\n    max_seq_length: 128\n")
    code, lines = _cli(["run", "--config", str(config)], capsys)
    assert code == 2 and len(lines) == 1 and fragment in lines[0], lines
    assert not (tmp_path / "out").exists()  # refused before any run directory
