"""`bertbuild eval --onnx FILE [--split heldout|train|all] [--limit N] [--json OUT] [--compare REF.json]`.

Scores any ONNX file with the project's own SQuAD pipeline (features,
post-processing, EM/F1: the ones every engine in a run is scored with), so a
user's own quantization can be put beside the published files. `--json`
also records each question's EM and F1 and the windows/s of the pass
(`--length-bucket 0` gives the padded baseline); `--compare` reads such a file of
another model on the same questions and prints ΔEM and ΔF1 with their paired
bootstrap 95 % intervals.
"""

from __future__ import annotations

import sys
from pathlib import Path

from bertbuild.commands.arguments import at_least, output_file, text_file


def add_parser(sub) -> None:
    parser = sub.add_parser("eval", help="score any ONNX file on SQuAD with the project's evaluation")
    parser.add_argument("--onnx", required=True, type=Path, metavar="MODEL.onnx", help="the model to score")
    parser.add_argument("--split", choices=("heldout", "train", "all"), default="heldout",
                        help="article half of the dev set (default heldout: the questions the model never saw)")
    parser.add_argument("--limit", type=at_least(1), help="only the first N questions of the split (default: all)")
    parser.add_argument("--offset", type=at_least(0), default=0, help="skip this many questions first (default 0)")
    parser.add_argument("--dataset", default="bundled", help="SQuAD v1.1 JSON path or URL (default: the bundled dev set)")
    parser.add_argument("--vocab", type=Path,
                        help="vocab.txt (default: beside the model or above it, else the bundled uncased vocab)")
    parser.add_argument("--cased", action="store_true", help="do not lower-case (default: read off the vocab)")
    parser.add_argument("--batch-size", type=at_least(1), default=8, help="sequences per inference call (default 8)")
    parser.add_argument("--length-bucket", type=at_least(0), metavar="N",
                        help="sort windows by real length and trim each batch to a multiple of N tokens "
                             "(default: eval.length_bucket's default; 0: pad every window to 384, the old way)")
    parser.add_argument("--threads", type=at_least(1), help="ONNX Runtime intra-op threads (default: all CPUs)")
    parser.add_argument("--json", type=Path, help="write the scores, with every question's EM and F1, here")
    parser.add_argument("--compare", type=Path, metavar="REF.json",
                        help="a --json file of another model: print ΔEM/ΔF1 vs it with bootstrap 95%% intervals")
    parser.set_defaults(handler=run)


def _vocab(args) -> tuple[Path, bool]:
    from bertbuild.data import UNCASED_VOCAB, bundled_file
    from bertbuild.errors import UserInputError
    from bertbuild.evaluation.ask import find_vocab
    from bertbuild.model.checkpoint import vocab_is_uncased

    if args.vocab is not None:
        vocab = args.vocab
    else:
        try:
            vocab = find_vocab(args.onnx)
        except UserInputError:
            vocab = bundled_file(UNCASED_VOCAB)
    if not Path(vocab).is_file() and not Path(vocab).is_dir():
        raise UserInputError(f"vocab file not found: {vocab}")
    text_file(vocab, "--vocab", "a vocab.txt (UTF-8 text)")
    return Path(vocab), False if args.cased else vocab_is_uncased(vocab)


def _comparison(reference_path: Path, candidate: dict) -> str:
    import json

    from bertbuild.errors import UserInputError
    from bertbuild.evaluation.bootstrap import paired_bootstrap

    try:
        reference = json.loads(reference_path.read_text())
        ref_scores = {qid: tuple(pair) for qid, pair in reference["per_question"].items()}
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise UserInputError(f"--compare {reference_path}: not a `bertbuild eval --json` file ({error})") from None
    try:
        deltas = paired_bootstrap(ref_scores, {qid: tuple(pair) for qid, pair in candidate["per_question"].items()})
    except ValueError as error:
        raise UserInputError(f"--compare {reference_path}: {error}") from None
    em, f1 = deltas["exact_match"], deltas["f1"]
    return (f"vs {reference.get('onnx', reference_path)}: ΔEM {em}  ΔF1 {f1}  "
            f"(paired bootstrap {100 * f1.confidence:.0f}% interval, {f1.resamples} resamples, seed {f1.seed})")


def run(args) -> int:
    import json

    from bertbuild.backends.onnxrt import OnnxRuntimeRunner
    from bertbuild.config import EvalConfig, build_section
    from bertbuild.errors import UserInputError
    from bertbuild.evaluation.score import evaluate, scoring_set
    from bertbuild.squad.metrics import question_scores

    from bertbuild.squad.sets import check_offset

    if not args.onnx.is_file():
        raise UserInputError(f"ONNX model not found: {args.onnx}")
    if args.json is not None:
        output_file(args.json, "--json")
    if args.compare is not None:
        text_file(args.compare, "--compare", "a `bertbuild eval --json` file")
    vocab, lower_case = _vocab(args)
    bucket = {} if args.length_bucket is None else {"length_bucket": args.length_bucket}
    cfg = build_section(EvalConfig, "eval", dataset=args.dataset, split=args.split, limit=args.limit,
                        offset=args.offset, batch_size=args.batch_size, **bucket)
    check_offset(cfg.dataset, cfg.split, cfg.offset, "--offset")
    eval_set = scoring_set(cfg, vocab, lower_case)
    if not eval_set.examples:
        raise UserInputError(f"no questions in split {args.split!r} at offset {args.offset}")
    runner = OnnxRuntimeRunner(args.onnx, providers=["CPUExecutionProvider"], threads=args.threads,
                               name=args.onnx.name)
    result = evaluate(runner, eval_set, cfg, log=lambda line: print(line, file=sys.stderr))
    per_question = question_scores(eval_set.examples, result.predictions)
    record = {"onnx": str(args.onnx), "split": args.split, "limit": args.limit, "offset": args.offset,
              "vocab": str(vocab), "lower_case": lower_case, **result.summary(),
              "per_question": {qid: list(pair) for qid, pair in per_question.items()}}
    print(f"{args.onnx.name}: EM {result.exact_match:.2f}  F1 {result.f1:.2f}  questions {result.questions} "
          f"(split {args.split}{'' if args.limit is None else f', first {args.limit}'}; {result.seconds:.1f} s)")
    summary = result.summary()
    if summary["windows_per_s"] is not None:
        print(f"{result.windows} windows at {summary['windows_per_s']:.1f} windows/s, "
              f"{summary['real_tokens_per_s']:.0f} real tokens/s (length bucket {cfg.length_bucket}"
              f"{': padded to max_seq_length' if cfg.length_bucket == 0 else ''})")
    if args.compare is not None:
        print(_comparison(args.compare, record))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(record, indent=1) + "\n")
    return 0
