"""`bertbuild run --config configs/X.yaml [--set key=value ...]`."""

from __future__ import annotations

from pathlib import Path


def add_parser(sub) -> None:
    parser = sub.add_parser("run", help="run the build-bert flow on a config")
    parser.add_argument("--config", required=True, help="a YAML build config (see configs/)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set eval.limit=50 (repeatable)")
    parser.set_defaults(handler=run)


def preflight(cfg) -> None:
    """Fail on bad input in one line before a flow (and its server) starts.

    Inside a flow a user error would surface as a failed task with Prefect's
    traceback in the log. Fetching here is not wasted: the flow's own fetch
    is then a cache hit.
    """
    from bertbuild.checkpoint import inspect_checkpoint
    from bertbuild.sources import resolve_checkpoint_dir

    directory = resolve_checkpoint_dir(cfg.model.source, cfg.model.sha256, Path(cfg.output_dir) / "checkpoints")
    inspect_checkpoint(directory, cfg.model.lower_case)


def run(args) -> int:
    from bertbuild.config import load_config

    cfg = load_config(args.config, args.overrides)
    preflight(cfg)
    from flows.build_bert import build_bert

    result = build_bert(cfg.model_dump(mode="json"))
    print(f"\n{result['title']}\n{result['table']}\n")
    return 0
