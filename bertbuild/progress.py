"""Progress of a long job, reported one way everywhere (scoring, fine-tuning, downloads).

A person at a terminal gets a tqdm bar. Without one (a nightly, a Prefect
worker, CI) the job instead writes a line to the caller's `log` every
PROGRESS_EVERY_S seconds: a nightly scores 5,400 windows per engine (minutes
each), fine-tunes for hours or downloads gigabytes with no terminal, and
without the lines its log would be silent for the whole of that time.

    with Progress(len(features), "onnxruntime-fp32", unit="seq", noun="windows", log=log) as progress:
        progress.update(batch_rows)
"""

from __future__ import annotations

import os
import sys
import time
from typing import Callable

PROGRESS_EVERY_S = 30.0  # seconds between progress lines in a log


def want_progress(progress: bool | None) -> bool:
    """Show a bar only for a person watching: stderr is a TTY and not in CI; True/False force it."""
    if progress is not None:
        return progress
    return sys.stderr.isatty() and not os.environ.get("CI")


class Progress:
    """A bar (`bar`: None decides by `want_progress`, True/False force it), else lines to `log` if given.

    `total`: None when unknown (a download without Content-Length). `initial`:
    already done before this run (a resumed download or fine-tuning); the rate
    and time left count only what this run does. `noun` names the units in
    lines ("windows"), `unit` on the bar ("seq"); `unit_scale` shows bytes as
    kB/MB on the bar. Lines stop once the total is reached.
    """

    def __init__(self, total: int | None, label: str, *, unit: str = "it", noun: str | None = None,
                 log: Callable[[str], None] | None = None, bar: bool | None = None, initial: int = 0,
                 unit_scale: bool = False, leave: bool = True):
        self.total, self.label, self.noun, self.log = total, label, noun or unit, log
        self.done = self.initial = initial
        self.begin = self.last_line = time.monotonic()
        self.every_s = PROGRESS_EVERY_S
        self.bar = None
        if want_progress(bar):
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=initial, desc=label or None, unit=unit, unit_scale=unit_scale,
                            unit_divisor=1024 if unit_scale else 1000, leave=leave, dynamic_ncols=True,
                            file=sys.stderr)

    def update(self, count: int, **figures: str) -> None:
        """`count` more done; `figures` (already formatted, e.g. loss="2.31") ride along on the bar or line."""
        self.done += count
        if self.bar is not None:
            self.bar.update(count)
            if figures:
                self.bar.set_postfix(figures, refresh=False)
            return
        now = time.monotonic()
        finished = self.total is not None and self.done >= self.total
        if self.log is None or finished or now - self.last_line < self.every_s:
            return
        self.last_line = now
        self.log(self.line(now, figures))

    def line(self, now: float, figures: dict[str, str]) -> str:
        if self.total is None:
            text = f"{self.label}: {self.done} {self.noun}"
        else:
            rate = (self.done - self.initial) / max(now - self.begin, 1e-9)
            left = (self.total - self.done) / rate if rate > 0 else float("inf")
            text = (f"{self.label}: {self.done}/{self.total} {self.noun} ({100 * self.done / max(self.total, 1):.0f} %), "
                    f"about {left / 60:.1f} min left")
        return ", ".join([text, *(f"{name} {value}" for name, value in figures.items())])

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
