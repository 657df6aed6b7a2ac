"""`bertbuild ask`: one question, any context length, any engine."""

from __future__ import annotations

import re

import pytest

from bertbuild.evaluation.ask import answer, find_vocab
from bertbuild.backends.onnxrt import OnnxRuntimeRunner
from bertbuild.cli import main
from bertbuild.errors import UserInputError


@pytest.fixture(scope="module")
def engine(tiny_onnx):
    return tiny_onnx["fp32"]


def test_answer_is_a_span_of_a_long_context(engine):
    context = " ".join(f"Sentence number {i} talks about the river Seine and Paris." for i in range(120))
    span = answer(OnnxRuntimeRunner(engine), find_vocab(engine), "Which river?", context,
                  max_seq_length=128, doc_stride=64)
    assert span is not None and span.text
    assert context[span.char_start:span.char_end] == span.text  # cut from the original text


def test_empty_inputs_are_user_errors(engine):
    with pytest.raises(UserInputError, match="question is empty"):
        answer(OnnxRuntimeRunner(engine), find_vocab(engine), " ", "text")


def test_cli_prints_answer_and_score(engine, tmp_path, capsys):
    context_file = tmp_path / "c.txt"
    context_file.write_text("The Eiffel Tower is in Paris, France.", encoding="utf-8")
    assert main(["ask", "--engine", str(engine), "--question", "Where is it?",
                 "--context-file", str(context_file)]) == 0
    answer_line, score_line = capsys.readouterr().out.splitlines()[:2]
    assert answer_line.strip() and answer_line in "The Eiffel Tower is in Paris, France."
    assert re.fullmatch(r"score -?\d+\.\d{3}  characters \d+-\d+", score_line), score_line


def test_cli_missing_engine_exits_2(tmp_path, capsys):
    assert main(["ask", "--engine", str(tmp_path / "none.onnx"), "--question", "q", "--context", "c"]) == 2
    assert "engine not found" in capsys.readouterr().err
