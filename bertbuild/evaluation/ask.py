"""Answer one question over one context with any engine (contexts of any length)."""

from __future__ import annotations

from pathlib import Path

from bertbuild.runner import Runner
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
    for folder in list(engine_path.parents)[:4]:
        if (folder / "vocab.txt").is_file():
            return folder / "vocab.txt"
    raise UserInputError(f"no vocab.txt found beside {engine_path} or above it; pass --vocab")


def max_positions(engine_path: Path) -> tuple[int, str] | None:
    """(max_position_embeddings, where it was read) for an engine, or None where it cannot be told.

    From the `bert_config.json` beside the engine or up to three folders above it, else, for an ONNX
    file, from the first dimension of its position embedding table.
    """
    import json

    for folder in list(engine_path.parents)[:4]:
        config = folder / "bert_config.json"
        if config.is_file():
            try:
                value = json.loads(config.read_text())["max_position_embeddings"]
            except (OSError, ValueError, KeyError, TypeError):
                continue
            if isinstance(value, int) and value > 0:
                return value, str(config)
    if engine_path.suffix != ".onnx":
        return None
    try:
        import onnx

        model = onnx.load(str(engine_path), load_external_data=False)
    except Exception:  # noqa: BLE001 - not ONNX: loading it later says so in one line
        return None
    for tensor in model.graph.initializer:
        if tensor.name.endswith("position_embeddings") and len(tensor.dims) == 2:
            return int(tensor.dims[0]), f"{engine_path}'s position embeddings"
    return None


def check_max_seq_length(engine_path: Path, max_seq_length: int, flag: str = "--max-seq-length") -> None:
    """A window longer than the model's position embeddings is one line, not an inference traceback."""
    known = max_positions(engine_path)
    if known is not None and max_seq_length > known[0]:
        raise UserInputError(f"{flag} {max_seq_length} is above the model's max_position_embeddings {known[0]} "
                             f"({known[1]}); use at most {known[0]}")
