"""What `bertbuild run` shows on its terminal, beside Prefect's run log.

The flow logs the results table (so a deployment's run log and the UI have
it), and `bertbuild run` prints it on stdout when the flow returns; in between,
Prefect's console handler would print it a second time on stderr. A record
logged with `extra=NOT_ON_CONSOLE` reaches every handler (the Prefect API's
included) but the console ones while `console_skips()` is active: `bertbuild
run` turns that on, a worker running a deployment does not.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from typing import Iterator

NOT_ON_CONSOLE = {"bertbuild_console": False}


class _SkipMarked(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return getattr(record, "bertbuild_console", True)


def _console_handlers() -> list[logging.Handler]:
    from prefect.logging.handlers import PrefectConsoleHandler

    loggers = [logging.getLogger(), *(logging.getLogger(name) for name in list(logging.root.manager.loggerDict))]
    found: list[logging.Handler] = []
    for logger in loggers:
        for handler in getattr(logger, "handlers", []):
            if isinstance(handler, PrefectConsoleHandler) and handler not in found:
                found.append(handler)
    return found


@contextmanager
def console_skips() -> Iterator[None]:
    """While inside, records marked `NOT_ON_CONSOLE` are left off Prefect's console handlers."""
    marked = _SkipMarked()
    handlers = _console_handlers()
    for handler in handlers:
        handler.addFilter(marked)
    try:
        yield
    finally:
        for handler in handlers:
            handler.removeFilter(marked)
