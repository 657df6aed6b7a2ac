"""`bertbuild run --config configs/X.yaml [--set key=value ...] [--no-cache] [--refresh STEP ...]`."""

from __future__ import annotations


def add_parser(sub) -> None:
    from bertbuild.step_cache import STEPS

    parser = sub.add_parser("run", help="run the build-bert flow on a config")
    parser.add_argument("--config", required=True, help="a YAML build config (see configs/)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set eval.limit=50 (repeatable)")
    parser.add_argument("--no-cache", action="store_true",
                        help="recompute every step and store nothing in the step cache (cache.enabled=false)")
    parser.add_argument("--refresh", action="append", default=[], choices=STEPS, metavar="STEP",
                        help=f"recompute STEP and replace its cache entry (repeatable; one of {', '.join(STEPS)})")
    parser.set_defaults(handler=run)


def cache_overrides(no_cache: bool, refresh: list[str]) -> list[str]:
    """The flags as config overrides, so a deployment can set the same keys."""
    overrides = ["cache.enabled=false"] if no_cache else []
    if refresh:
        overrides.append(f"cache.refresh=[{', '.join(refresh)}]")
    return overrides


def preflight(cfg) -> None:
    """Fail on bad input in one line before a flow (and its server) starts.

    Inside a flow a user error would surface as a failed task with Prefect's
    traceback in the log. Fetching here is not wasted: the flow's own fetch
    is then a cache hit.
    """
    from bertbuild.backends.registry import get_backend
    from bertbuild.fetch import fetch_checkpoint
    from bertbuild.memory_budget import check_memory
    from bertbuild.model.checkpoint import inspect_checkpoint

    get_backend(cfg.engines.backend)  # e.g. tensorrt on a host without it: one line, exit 2
    info = inspect_checkpoint(fetch_checkpoint(cfg.model.source, sha256=cfg.model.sha256), cfg.model.lower_case)
    _check_sequence_lengths(cfg, info)
    _check_dataset_halves(cfg)
    if cfg.resources.check_memory:
        check_memory(info.config, cfg.model.source)


def _check_dataset_halves(cfg) -> None:
    """INT8 calibrates and tunes on the train half; the run scores `eval.split`: each must have questions."""
    from bertbuild.errors import UserInputError
    from bertbuild.squad.sets import load_split

    needed = {"train": "INT8 calibration and tuning need"} if "int8" in cfg.engines.precisions else {}
    needed.setdefault(cfg.eval.split, "scoring (eval.split) needs")
    names = {"train": "its train half", "heldout": "its held-out half", "all": "it"}
    for split, use in needed.items():
        if not load_split(cfg.eval.dataset, split):
            raise UserInputError(
                f"eval.dataset {cfg.eval.dataset}: {names[split]} has no questions, and {use} them "
                "(articles alternate between the train and held-out halves, so a dataset needs at least two)")


def _check_sequence_lengths(cfg, info) -> None:
    """Each sequence length the run will feed must fit the model's position embeddings (some HF models have < 512)."""
    from bertbuild.model.checkpoint import CONFIG_FILE, check_sequence_lengths

    lengths = {"eval.max_seq_length": cfg.eval.max_seq_length, "benchmark.seq": cfg.benchmark.seq}
    if "int8" in cfg.engines.precisions:
        lengths["precision.int8.max_seq_length"] = cfg.precision.int8.max_seq_length
    check_sequence_lengths(info.config, lengths, info.directory / CONFIG_FILE)


def run(args) -> int:
    from bertbuild.config import load_config
    from bertbuild.errors import GateFailed
    from bertbuild.flows.build_bert import build_bert

    cfg = load_config(args.config, [*args.overrides, *cache_overrides(args.no_cache, args.refresh)])
    preflight(cfg)
    try:
        result = build_bert(cfg)
    except GateFailed as failed:
        _print_saved_table(failed.results)  # show what failed, then the one-line error
        raise
    print(f"\n{result['title']}\n{result['table']}\n\nrun directory: {result['run_dir']}")
    return 0


def _print_saved_table(results: str | None) -> None:
    import json
    from pathlib import Path

    from bertbuild.evaluation.table import format_table

    if results and Path(results).is_file():
        print("\n" + format_table(json.loads(Path(results).read_text())["results"]) + "\n")
