"""Answer one question over one context with any engine (contexts of any length)."""

from __future__ import annotations

from pathlib import Path

from bertbuild.backends.base import Runner
from bertbuild.errors import UserInputError
from bertbuild.squad.data import Example
from bertbuild.squad.postprocess import Span, best_spans
from bertbuild.squad.sets import featurize


def answer(runner: Runner, vocab_path: Path, question: str, context: str, lower_case: bool = True,
           max_seq_length: int = 384, doc_stride: int = 128, batch_size: int = 8) -> Span | None:
    """The best span over every window of `context`, or None when no valid span exists."""
    if not question.strip():
        raise UserInputError("the question is empty")
    if not context.strip():
        raise UserInputError("the context is empty")
    from bertbuild.evaluation.score import run_logits

    example = Example(qid="ask", title="", question=question, context=context, answers=(), answer_starts=())
    windows = featurize([example], vocab_path, lower_case, max_seq_length=max_seq_length, doc_stride=doc_stride)
    start, end, _ = run_logits(runner, windows.features, batch_size)
    return best_spans(windows.features, start, end).get(0)


def find_vocab(engine_path: Path) -> Path:
    """vocab.txt beside the engine or up to three folders above it (a run or bundle root)."""
    for folder in [engine_path.parent, *list(engine_path.parents)[1:4]]:
        if (folder / "vocab.txt").is_file():
            return folder / "vocab.txt"
    raise UserInputError(f"no vocab.txt found beside {engine_path} or above it; pass --vocab")
