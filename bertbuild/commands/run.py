"""`bertbuild run --config configs/X.yaml [--set key=value ...] [--no-cache] [--refresh STEP ...] [--check] [-v]`.

The terminal gets a line as each step starts and ends (Prefect's run log),
progress on long passes (`bertbuild.progress`), the one-line verdict of each
engine's Polygraphy validation and, on stdout at the end, the results table
once. Polygraphy's comparison detail goes to `validation-<engine>.log` in the
bundle; `-v` shows it here too.
"""

from __future__ import annotations


def add_parser(sub) -> None:
    from bertbuild.kinds import STEPS

    parser = sub.add_parser("run", help="run the build-bert flow on a config")
    parser.add_argument("--config", required=True, help="a YAML build config (see configs/)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set eval.limit=50 (repeatable)")
    parser.add_argument("--no-cache", action="store_true",
                        help="recompute every step and store nothing in the step cache (cache.enabled=false)")
    parser.add_argument("--refresh", action="append", default=[], choices=STEPS, metavar="STEP",
                        help=f"recompute STEP and replace its cache entry (repeatable; one of {', '.join(STEPS)})")
    parser.add_argument("--check", action="store_true",
                        help="only run the checks made before any work (config, paths, questions, checkpoint, "
                             "memory, store) and exit: 0 if the run would start, 2 naming the first problem")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="also show Polygraphy's comparison detail (per-batch statistics, tolerances, error "
                             "metrics), which otherwise goes only to validation-<engine>.log in the bundle")
    parser.set_defaults(handler=run)


def cache_overrides(no_cache: bool, refresh: list[str]) -> list[str]:
    """The flags as config overrides, so a deployment can set the same keys."""
    overrides = ["cache.enabled=false"] if no_cache else []
    if refresh:
        overrides.append(f"cache.refresh=[{', '.join(refresh)}]")
    return overrides


def run(args) -> int:
    from bertbuild.config import load_config
    from bertbuild.errors import GateFailed
    from bertbuild.preflight import preflight

    cfg = load_config(args.config, [*args.overrides, *cache_overrides(args.no_cache, args.refresh)])
    preflight(cfg)  # every mistake is one line here, before Prefect starts
    if args.check:
        print(f"{args.config}: ready to run {cfg.model_name} ({', '.join(cfg.engines.precisions)}; "
              f"output_dir {cfg.output_dir})")
        return 0
    from bertbuild.console import console_skips
    from bertbuild.evaluation.polygraphy_log import show_detail
    from bertbuild.flows.build_bert import build_bert

    show_detail(getattr(args, "verbose", False))
    try:
        with console_skips():  # the table is printed below, once, not also by the flow's log on stderr
            result = build_bert(cfg)
    except GateFailed as failed:
        _print_saved_table(failed.results)  # show what failed, then the one-line error
        raise
    print(f"\n{result['title']}\n{result['table']}\n\nrun directory: {result['run_dir']}")
    return 0


def _print_saved_table(results: str | None) -> None:
    import json
    from pathlib import Path

    from bertbuild.reporting.run_table import format_table

    if results and Path(results).is_file():
        print("\n" + format_table(json.loads(Path(results).read_text())["results"]) + "\n")
