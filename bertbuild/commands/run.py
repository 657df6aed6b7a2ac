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
    from bertbuild.backends.registry import get_backend
    from bertbuild.model.checkpoint import inspect_checkpoint
    from bertbuild.fetch import fetch_checkpoint

    get_backend(cfg.engines.backend)  # e.g. tensorrt on a host without it: one line, exit 2
    directory = fetch_checkpoint(cfg.model.source, sha256=cfg.model.sha256)
    inspect_checkpoint(directory, cfg.model.lower_case)


def run(args) -> int:
    from bertbuild.config import load_config

    cfg = load_config(args.config, args.overrides)
    preflight(cfg)
    from bertbuild.errors import GateFailed
    from bertbuild.flows.build_bert import build_bert

    try:
        result = build_bert(cfg.model_dump(mode="json"))
    except GateFailed:
        _print_saved_table(Path(cfg.output_dir))  # show what failed, then the one-line error
        raise
    print(f"\n{result['title']}\n{result['table']}\n")
    return 0


def _print_saved_table(out: Path) -> None:
    import json

    from bertbuild.evaluation.table import format_table

    saved = out / "results.json"
    if saved.is_file():
        print("\n" + format_table(json.loads(saved.read_text())["results"]) + "\n")
