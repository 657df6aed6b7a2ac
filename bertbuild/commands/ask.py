"""`bertbuild ask --engine PATH --question Q (--context TEXT | --context-file F)`."""

from __future__ import annotations

from pathlib import Path

from bertbuild.commands.arguments import at_least


def add_parser(sub) -> None:
    parser = sub.add_parser("ask", help="answer a question over a context with a built engine")
    parser.add_argument("--engine", required=True, type=Path,
                        help="an engine (.onnx for ONNX Runtime, .xml for OpenVINO, .plan for TensorRT)")
    parser.add_argument("--question", required=True)
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--context", help="the passage to search")
    group.add_argument("--context-file", type=Path, help="a UTF-8 text file holding the passage")
    parser.add_argument("--vocab", type=Path, help="the model's vocab.txt (default: found beside the engine)")
    parser.add_argument("--cased", action="store_true", help="the model is cased (default: uncased)")
    parser.add_argument("--max-seq-length", type=at_least(32), default=384)
    parser.add_argument("--doc-stride", type=at_least(1), default=128)
    parser.set_defaults(handler=run)


def run(args) -> int:
    from bertbuild.commands.arguments import text_file
    from bertbuild.evaluation.ask import answer, check_max_seq_length, find_vocab
    from bertbuild.backends.registry import get_backend
    from bertbuild.errors import UserInputError

    if not args.engine.is_file():
        raise UserInputError(f"engine not found: {args.engine}")
    check_max_seq_length(args.engine, args.max_seq_length)
    if args.context_file is not None:
        text_file(args.context_file, "--context-file")
        try:
            context = args.context_file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise UserInputError(f"cannot read --context-file {args.context_file}: {exc}") from None
    else:
        context = args.context
    backend = get_backend({".plan": "tensorrt", ".xml": "openvino"}.get(args.engine.suffix, "onnxruntime"))
    vocab = text_file(args.vocab, "--vocab", "a vocab.txt (UTF-8 text)") if args.vocab else find_vocab(args.engine)
    span = answer(backend.load(args.engine), vocab, args.question, context, lower_case=not args.cased,
                  max_seq_length=args.max_seq_length, doc_stride=args.doc_stride)
    if span is None:
        print("(no answer found)")
        return 0
    print(span.text)
    print(f"score {span.score:.3f}  characters {span.char_start}-{span.char_end}")
    return 0
