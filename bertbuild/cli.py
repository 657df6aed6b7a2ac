"""`bertbuild` console script: a thin front over the flows and pure functions.

Each subcommand lives in `bertbuild/commands/<name>.py` with `add_parser` and
`run`; heavy imports happen inside `run`, so `--help` is instant. A
`BertbuildError` becomes one line on stderr and its exit code (2 for bad
input, 1 for failed gates and fetches); anything else is a bug and keeps its
traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
import threading

from bertbuild import __version__
from bertbuild.commands.arguments import OneLineParser
from bertbuild.errors import BertbuildError

# Explicit, ordered list: adding a command is one file plus one name here.
COMMANDS = ("run", "finetune", "ask", "eval", "fetch", "artifacts", "bench", "passes", "backends", "trt_check", "doctor")
# Commands that run a Prefect flow: a supervisor stops them on Ctrl-C/SIGTERM (bertbuild/interrupts.py).
FLOW_COMMANDS = ("run", "finetune")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(  # subcommands' parsers are of the same class
        prog="bertbuild",
        description="Turn a BERT SQuAD checkpoint into validated, gated inference engines.",
    )
    parser.add_argument("--version", action="version", version=f"bertbuild {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        importlib.import_module(f"bertbuild.commands.{name}").add_parser(sub)
    return parser


def prefect_environment() -> None:
    """Prefect settings every command wants, set before Prefect is first imported (commands import it lazily)."""
    # Prefect's temporary server sends telemetry unless told not to; build hosts are often offline.
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    # bertbuild.* loggers get Prefect's handlers, so their lines reach the run's log (and the UI), not only stderr.
    os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "bertbuild")
    # The temporary server gets 20 s to start by default; on a busy 2-core host (a big build's child steps,
    # other runs) it has missed that and the run died before any work. Two minutes, unless the user says.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")


class Terminated(BaseException):
    """SIGTERM arrived (outside a flow; inside one Prefect raises its own TerminationSignal)."""


def _terminate(signum, frame):
    raise Terminated()


def main(argv: list[str] | None = None) -> int:
    """Exit codes: 0 done; 2 a mistake in what was given (one line); 1 a failed gate or a transient failure
    retries could not get past; 130 Ctrl-C; 143 SIGTERM (README, "Mistakes and exit codes")."""
    prefect_environment()
    args = build_parser().parse_args(argv)
    previous = None
    try:
        previous = signal.signal(signal.SIGTERM, _terminate)
    except ValueError:  # not the main thread: leave signals alone
        pass
    try:
        if args.command in FLOW_COMMANDS and threading.current_thread() is threading.main_thread():
            from bertbuild.interrupts import supervise

            return int(supervise(lambda: args.handler(args)) or 0)
        return int(args.handler(args) or 0)
    except BertbuildError as exc:
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        print(f"bertbuild: error: {message}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("bertbuild: interrupted", file=sys.stderr)
        return 130
    except BaseException as exc:
        if not isinstance(exc, Terminated) and type(exc).__name__ != "TerminationSignal":  # Prefect's, in a flow
            raise
        print("bertbuild: terminated", file=sys.stderr)
        return 143
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
