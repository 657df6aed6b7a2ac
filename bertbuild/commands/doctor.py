"""`bertbuild doctor`: versions against the lock, backends, the Prefect server, pool, deployments, next nightly."""

from __future__ import annotations

from pathlib import Path


def add_parser(sub) -> None:
    parser = sub.add_parser("doctor", help="check this host: versions vs the lock, backends, Prefect server and "
                                           "deployments, the next nightly run (exit 1 on a problem)")
    parser.add_argument("--lock", type=Path, help="lock file to compare with (default: ./requirements.lock)")
    parser.add_argument("--prefect-file", type=Path, help="deployments to look for (default: ./prefect.yaml)")
    parser.set_defaults(handler=run)


def run(args) -> int:
    from prefect.settings import PREFECT_API_URL

    from bertbuild.commands.arguments import text_file
    from bertbuild.doctor import report, run_checks

    for flag, given in (("--lock", args.lock), ("--prefect-file", args.prefect_file)):
        if given is not None and given.exists():  # a missing one is reported among the checks
            text_file(given, flag)

    checks = run_checks(args.lock, args.prefect_file, PREFECT_API_URL.value())
    print(report(checks))
    return 1 if any(c.problem for c in checks) else 0
