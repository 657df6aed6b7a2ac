"""Wall time and peak memory of each step of a run, written as one JSON line per step.

What "peak" means, honestly: a step run in a child process (the export, the
TensorFlow reference) reports that child's own high-water mark (`wait4`). A
step run inside the flow process shares it with whatever runs beside it, so
its figure is the highest RSS of the whole flow process while the step ran:
exact when the process set a new high-water mark (VmHWM) during the step,
otherwise the highest of RSS samples taken every 50 ms.

The journal is a file in the run directory rather than state in memory, so
steps on other threads (or processes) of the same run can all append to it.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
import json
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

# Kept in the run directory's hidden scratch: the journal is how the report
# learns each step's figures, not a bundle file (results.json carries them).
JOURNAL = ".scratch/steps.jsonl"
_SAMPLE_SECONDS = 0.05
_lock = threading.Lock()


def _status_kib(field: str) -> int:
    """A `/proc/self/status` field in KiB (VmRSS, VmHWM); 0 where /proc is missing."""
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def rss_bytes() -> int:
    return _status_kib("VmRSS") * 1024


def high_water_bytes() -> int:
    return _status_kib("VmHWM") * 1024


class StepMeter:
    """Measures one step; `child(peak, seconds)` adds what a child process used."""

    def __init__(self, step: str):
        self.step = step
        self.child_peak: int | None = None
        self.child_seconds: float | None = None
        self.cached: bool | None = None
        self._peak = 0
        self._stop = threading.Event()

    def child(self, peak_rss_bytes: int, seconds: float) -> None:
        self.child_peak, self.child_seconds = int(peak_rss_bytes), float(seconds)

    def _sample(self) -> None:
        while not self._stop.wait(_SAMPLE_SECONDS):
            self._peak = max(self._peak, rss_bytes())

    @contextmanager
    def running(self) -> Iterator["StepMeter"]:
        start, hwm_before = time.perf_counter(), high_water_bytes()
        self._peak = rss_bytes()
        sampler = threading.Thread(target=self._sample, name=f"meter-{self.step}", daemon=True)
        sampler.start()
        try:
            yield self
        finally:
            self._stop.set()
            sampler.join()
            hwm_after = high_water_bytes()
            self.seconds = time.perf_counter() - start
            self.process_peak = hwm_after if hwm_after > hwm_before else max(self._peak, rss_bytes())

    def record(self) -> dict:
        record = {"step": self.step, "seconds": round(self.seconds, 2),
                  "process_peak_rss_mb": round(self.process_peak / 2**20, 1)}
        if self.child_peak is not None:
            record["child_peak_rss_mb"] = round(self.child_peak / 2**20, 1)
            record["child_seconds"] = round(self.child_seconds, 2)
        if self.cached is not None:
            record["cached"] = self.cached
        return record


@contextmanager
def metered(run_dir: Path | str, step: str) -> Iterator[StepMeter]:
    """Measure the body as `step` and append its record to the run's journal (also when it fails)."""
    from bertbuild.interrupts import step as naming

    meter = StepMeter(step)
    failed = True
    try:
        with meter.running(), naming(step):  # an interruption's line names the steps running
            yield meter
        failed = False
    finally:
        record = meter.record() | ({"failed": True} if failed else {})
        path = Path(run_dir) / JOURNAL
        with _lock:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "a") as handle:
                handle.write(json.dumps(record) + "\n")


def read_journal(run_dir: Path | str) -> list[dict]:
    """Every step's record, in the order they finished.

    Each gets its headline figures: `peak_rss_mb` is the child's own peak for a
    step run in a child process, else the flow process's peak while it ran
    (`measured_in` says which).
    """
    path = Path(run_dir) / JOURNAL
    if not path.is_file():
        return []
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    for record in records:
        in_child = "child_peak_rss_mb" in record
        record["peak_rss_mb"] = record["child_peak_rss_mb"] if in_child else record["process_peak_rss_mb"]
        record["measured_in"] = "child process" if in_child else "flow process"
    return records


_current: contextvars.ContextVar[StepMeter | None] = contextvars.ContextVar("bertbuild_step_meter", default=None)


def measured(step: str):
    """Decorate a task body: time and peak memory go to the journal of the run passed to it.

    The run is the body's parameter named `run` (a `RunContext`); a body
    without one, or called with None, is not measured. Inside, `current_meter()`
    is this step's meter, which a child-process call reports to. Inside a task
    run it first logs "Started".
    """
    def decorate(function):
        signature = inspect.signature(function)
        takes_run = "run" in signature.parameters

        @functools.wraps(function)
        def wrapper(*args, **kwargs):
            _say_started()
            run = signature.bind(*args, **kwargs).arguments.get("run") if takes_run else None
            if run is None:
                return function(*args, **kwargs)
            with metered(run.run_dir, step) as meter, _current_is(meter):
                return function(*args, **kwargs)
        return wrapper
    return decorate


def _say_started() -> None:
    """"Started" in the task run's log: Prefect logs only "Finished in state ...", so a long step was silent.

    Module-level for the same reason as `_current_is`.
    """
    from prefect.context import TaskRunContext

    if TaskRunContext.get() is None:
        return
    from prefect.logging import get_run_logger

    get_run_logger().info("Started")


@contextmanager
def _current_is(meter: StepMeter) -> Iterator[None]:
    # Reached through this module-level function, never named in `measured`'s wrapper: a task runner
    # that pickles task functions by value (Dask) would otherwise have to pickle the ContextVar.
    token = _current.set(meter)
    try:
        yield
    finally:
        _current.reset(token)


def current_meter() -> StepMeter | None:
    """The meter of the step running on this thread, if it is measured."""
    return _current.get()
