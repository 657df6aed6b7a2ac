"""Per-step wall time and peak memory, journaled in the run directory."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import numpy as np

from bertbuild.reporting.run_table import STEP_COLUMNS, format_table
from bertbuild.resources import current_meter, measured, metered, read_journal


def test_a_step_that_takes_memory_records_a_peak_above_it_and_a_step_that_does_not_stays_below(tmp_path):
    with metered(tmp_path, "quiet"):
        time.sleep(0.2)
    with metered(tmp_path, "hungry"):
        block = np.ones(300 * 2**20, dtype=np.uint8)
        # Held across several 50 ms samples: in a process whose high-water mark was already set
        # higher (a long pytest run), the peak comes from the sampler, which a block freed at once
        # can slip past on a loaded host. A real step holds its memory for seconds, not microseconds.
        time.sleep(0.5)
        del block
    quiet, hungry = read_journal(tmp_path)
    assert quiet["step"] == "quiet" and quiet["seconds"] >= 0.2 and quiet["measured_in"] == "flow process"
    assert hungry["peak_rss_mb"] >= quiet["peak_rss_mb"] + 290


def test_a_failed_step_is_journaled_as_failed(tmp_path):
    try:
        with metered(tmp_path, "broken"):
            raise RuntimeError("no")
    except RuntimeError:
        pass
    assert read_journal(tmp_path)[0] | {"failed": True} == read_journal(tmp_path)[0]


def test_decorated_task_bodies_find_the_run_report_children_and_cache_hits(tmp_path):
    run = SimpleNamespace(run_dir=tmp_path, cache=None)

    @measured("export-onnx")
    def export(model: str, run) -> dict:
        current_meter().child(2 * 2**30, 12.5)
        current_meter().cached = False  # what a cached step reports (`steps.CachedStep.run`)
        return {"path": "x"}

    @measured("fuse-onnx")
    def fuse(run) -> dict:
        assert current_meter().step == "fuse-onnx"
        current_meter().cached = True
        return {"path": "y"}

    threads = [threading.Thread(target=export, args=("m", run)), threading.Thread(target=fuse, kwargs={"run": run})]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    records = {r["step"]: r for r in read_journal(tmp_path)}
    unmeasured = measured("no-run")(lambda value: {"value": value})  # a call without a run is not journaled
    assert unmeasured(3) == {"value": 3} and len(read_journal(tmp_path)) == 2
    assert records["export-onnx"]["peak_rss_mb"] == 2048 and records["export-onnx"]["measured_in"] == "child process"
    assert records["export-onnx"]["child_seconds"] == 12.5 and records["export-onnx"]["cached"] is False
    assert records["fuse-onnx"]["cached"] is True and current_meter() is None
    table = format_table(list(records.values()), STEP_COLUMNS)
    assert "export-onnx" in table and "child process" in table and "2048" in table


def test_the_run_report_has_a_row_per_step_with_time_memory_and_where_it_was_measured():
    from bertbuild.reporting.run_report import results_markdown

    rows = [{"engine": "tensorflow-fp32", "exact_match": 1.0, "f1": 2.0, "questions": 4, "seconds": 0.4}]
    published = {"model": "m", "run_id": "r", "released": False, "latest": False, "url": "file:///store/m/r"}
    steps = [{"step": "export-onnx", "seconds": 59.8, "peak_rss_mb": 3270.0, "measured_in": "child process",
              "cached": False},
             {"step": "fuse-onnx", "seconds": 37.7, "peak_rss_mb": 5674.4, "measured_in": "flow process",
              "failed": True}]
    markdown = results_markdown(published, rows, None, steps)
    assert "## Time and memory per step" in markdown
    assert "| export-onnx | 59.8 | 3270 | child process | no |" in markdown
    assert "| fuse-onnx (failed) | 37.7 | 5674 | flow process | - |" in markdown
    assert "per step" not in results_markdown(published, rows)
