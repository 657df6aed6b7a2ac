"""Steps in a child process: results, errors and kills come back as what they are, with the child's own peak."""

from __future__ import annotations

from pathlib import Path

import pytest

from bertbuild.errors import CheckpointError, StepFailed
from bertbuild.isolation import run_in_child

TESTS = Path(__file__).resolve().parent


@pytest.fixture(autouse=True)
def _targets_importable(monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(TESTS))


def test_result_time_and_the_childs_own_peak_memory():
    small = run_in_child("add", "child_targets:add", {"a": 2, "b": 3})
    big = run_in_child("hold", "child_targets:hold_memory", {"mib": 400})
    assert small.value == {"sum": 5} and small.seconds > 0
    assert big.value == {"held": 400 * 2**20}
    # The child's VmHWM: it counts the 400 MiB it touched, and not this (bigger, pytest) process's pages.
    assert big.peak_rss_bytes >= 400 * 2**20
    assert big.peak_rss_bytes - small.peak_rss_bytes >= 380 * 2**20


def test_a_user_error_in_the_child_is_the_same_one_line_error_here():
    with pytest.raises(CheckpointError, match=r"^/x/model.ckpt-5: missing variable 'cls/squad/output_bias'$"):
        run_in_child("export-onnx", "child_targets:refuse", {"path": "/x/model.ckpt-5"})


def test_a_crash_names_the_step_and_the_exception_and_logs_the_traceback():
    lines = []
    with pytest.raises(StepFailed, match=r"^export-onnx failed in its child process after \d+ s at [\d.]+ GiB "
                                         r"peak RSS: ZeroDivisionError"):
        run_in_child("export-onnx", "child_targets:crash", {}, log=lines.append)
    assert any("ZeroDivisionError" in line for line in lines) and any("Traceback" in line for line in lines)


def test_a_killed_child_is_a_failed_step_naming_signal_peak_and_hint_not_a_silent_death():
    lines = []
    with pytest.raises(StepFailed) as caught:
        run_in_child("tensorflow-reference", "child_targets:killed", {}, log=lines.append,
                     hint="bert-large needs about 9.5 GiB: use a bigger host")
    message = str(caught.value)
    assert message.startswith("tensorflow-reference was killed by signal 9 (SIGKILL")
    assert "out-of-memory" in message and "GiB peak RSS" in message
    assert message.endswith("; bert-large needs about 9.5 GiB: use a bigger host")
    assert "\n" not in message
    assert "about to be killed" in lines  # progress got through before the end


@pytest.mark.slow
def test_a_flow_whose_export_is_killed_fails_naming_the_step_and_journals_it(tmp_path, monkeypatch, prefect_harness):
    from prefect import get_client  # noqa: F401 - the harness's API serves the flow run below

    from bertbuild.flows.build_bert import build_bert
    from bertbuild.resources import read_journal
    from bertbuild.tasks import model

    monkeypatch.setattr(model, "EXPORT_TARGET", "child_targets:killed")
    config = {"model": {"source": "generated:tiny", "name": "killed"}, "eval": {"limit": 4},
              "engines": {"precisions": ["fp32"]}, "publish": {"store": str(tmp_path / "store")},
              "cache": {"enabled": False}, "output_dir": str(tmp_path / "runs")}
    with pytest.raises(StepFailed, match=r"^export-onnx was killed by signal 9 .* peak RSS; killed is estimated "
                                         r"to need .* GiB .* for a whole build: free memory or use a bigger host$"):
        build_bert(config)
    (run_dir,) = (tmp_path / "runs" / "killed").glob("2*")
    export = next(r for r in read_journal(run_dir) if r["step"] == "export-onnx")
    assert export["failed"] is True
