"""Polygraphy's messages, per call: into a report file of the bundle, not onto the terminal.

Polygraphy logs through one process-wide logger (`G_LOGGER`) whose verbosity
is process-wide too, and `G_LOGGER.verbosity(...)` saves and restores it. Two
validations running side by side in threads (engines of one group) undo each
other's setting: the first to finish restores INFO while the other is still
comparing, and its per-batch statistics, tolerances and error metrics are
printed between the run's step lines. So bertbuild never changes that
verbosity; instead, while a thread is inside `captured(path)`, every message
Polygraphy logs *on that thread* is written to `path` (INFO and up), and:

- WARNING and above also go to the `bertbuild.evaluation.polygraphy` logger
  at their own level, so they still reach the run's log and the terminal;
- the rest go to that logger at DEBUG, which is not shown unless asked
  (`bertbuild run -v`: `show_detail()`).

Other threads, and Polygraphy outside `captured`, behave as Polygraphy does.
"""

from __future__ import annotations

import logging
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

LOGGER_NAME = "bertbuild.evaluation.polygraphy"
_local = threading.local()
_install_lock = threading.Lock()
_installed = False


def show_detail(on: bool = True) -> None:
    """Polygraphy's comparison detail on the terminal (and the run log) too, not only in the report file."""
    logging.getLogger(LOGGER_NAME).setLevel(logging.DEBUG if on else logging.NOTSET)


class _Sink:
    def __init__(self, file):
        self.file, self.once = file, set()


def _install() -> None:
    """Route G_LOGGER.log through `_routed` (once per process; a thread without a sink sees no change)."""
    global _installed
    with _install_lock:
        if _installed:
            return
        from polygraphy.logger import G_LOGGER

        original = G_LOGGER.log  # the bound method: Polygraphy's own behaviour, for threads not capturing

        def routed(message, severity, mode=0, stack_depth=2, error_ok=False):
            sink = getattr(_local, "sink", None)
            if sink is None:
                return original(message, severity, mode=mode, stack_depth=stack_depth + 1, error_ok=error_ok)
            return _to_sink(sink, message, severity, mode, error_ok)

        G_LOGGER.log = routed  # instance attribute: G_LOGGER.info() etc. call self.log
        _installed = True


def _to_sink(sink: _Sink, message, severity: int, mode: int, error_ok: bool) -> None:
    from polygraphy.logger import G_LOGGER, LogMode

    if severity < G_LOGGER.INFO:
        return
    if mode == LogMode.ONCE:
        if hash(message) in sink.once:
            return
        sink.once.add(hash(message))
    if callable(message):
        try:
            message = message()
        except Exception as err:
            if not error_ok:
                raise
            message = f"<Error while logging this message: {err}>"
    letter = G_LOGGER.SEVERITY_LETTER_MAPPING.get(severity, "[?]")
    text = "\n".join(f"{letter} {line}" for line in str(message).splitlines() or [""])
    sink.file.write(text + "\n")
    sink.file.flush()
    level = logging.WARNING if severity >= G_LOGGER.WARNING else logging.DEBUG
    if severity >= G_LOGGER.ERROR:
        level = logging.ERROR
    logging.getLogger(LOGGER_NAME).log(level, "%s", text)


@contextmanager
def captured(path: Path | str) -> Iterator[Path]:
    """Polygraphy's messages on this thread, from INFO, go to `path` (overwritten) while inside."""
    _install()
    path = Path(path)
    previous = getattr(_local, "sink", None)
    with open(path, "w") as file:
        _local.sink = _Sink(file)
        try:
            yield path
        finally:
            _local.sink = previous
