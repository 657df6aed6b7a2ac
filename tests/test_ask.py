"""`bertbuild ask`: one question, any context length, any engine."""

from __future__ import annotations

import pytest

from bertbuild.ask import answer, find_vocab
from bertbuild.backends.onnxrt import OnnxRuntimeRunner
from bertbuild.cli import main
from bertbuild.errors import UserInputError


@pytest.fixture(scope="module")
def tiny_onnx(tiny_checkpoint, tmp_path_factory):
    import shutil

    from bertbuild.checkpoint import load_checkpoint
    from bertbuild.export import export_onnx

    out = tmp_path_factory.mktemp("ask") / "model-fp32.onnx"
    export_onnx(load_checkpoint(tiny_checkpoint), out)
    shutil.copy(tiny_checkpoint / "vocab.txt", out.parent / "vocab.txt")
    return out


def test_answer_is_a_span_of_a_long_context(tiny_onnx):
    context = " ".join(f"Sentence number {i} talks about the river Seine and Paris." for i in range(120))
    span = answer(OnnxRuntimeRunner(tiny_onnx), find_vocab(tiny_onnx), "Which river?", context,
                  max_seq_length=128, doc_stride=64)
    assert span is not None and span.text
    assert context[span.char_start:span.char_end] == span.text  # cut from the original text


def test_empty_inputs_are_user_errors(tiny_onnx):
    with pytest.raises(UserInputError, match="question is empty"):
        answer(OnnxRuntimeRunner(tiny_onnx), find_vocab(tiny_onnx), " ", "text")


def test_cli_prints_answer_and_score(tiny_onnx, tmp_path, capsys):
    context_file = tmp_path / "c.txt"
    context_file.write_text("The Eiffel Tower is in Paris, France.", encoding="utf-8")
    assert main(["ask", "--engine", str(tiny_onnx), "--question", "Where is it?",
                 "--context-file", str(context_file)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] in "The Eiffel Tower is in Paris, France." and out[1].startswith("score ")


def test_cli_missing_engine_exits_2(tmp_path, capsys):
    assert main(["ask", "--engine", str(tmp_path / "none.onnx"), "--question", "q", "--context", "c"]) == 2
    assert "engine not found" in capsys.readouterr().err
