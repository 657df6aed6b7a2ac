"""The flow's task runner is swappable: build-bert on prefect-dask's DaskTaskRunner (local, in-process cluster)."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("prefect_dask")

pytestmark = pytest.mark.slow


def _config(tmp_path) -> dict:
    return {
        "model": {"source": "generated:tiny", "name": "tiny-dask"},
        "eval": {"limit": 10, "batch_size": 4},
        "engines": {"precisions": ["fp32", "fused-fp32"]},
        "publish": {"store": str(tmp_path / "store")},
        "cache": {"dir": str(tmp_path / "cache")},
        "output_dir": str(tmp_path / "runs"),
    }


def test_build_bert_runs_on_dask_task_runner(tmp_path, prefect_harness, monkeypatch):
    from prefect_dask import DaskTaskRunner

    from bertbuild.flows.build_bert import build_bert

    submitted: list[str] = []
    original_submit = DaskTaskRunner.submit

    def counting_submit(self, task, *args, **kwargs):
        submitted.append(task.name)
        return original_submit(self, task, *args, **kwargs)

    monkeypatch.setattr(DaskTaskRunner, "submit", counting_submit)
    # One in-process worker with two threads: cheap, no worker processes, nothing to pickle across.
    runner = DaskTaskRunner(cluster_kwargs={"n_workers": 1, "threads_per_worker": 2, "processes": False,
                                            "dashboard_address": None})
    state = build_bert.with_options(task_runner=runner)(_config(tmp_path), return_state=True)
    assert state.is_completed(), state.message
    result = state.result()
    assert [r["engine"] for r in result["rows"]][0] == "tensorflow-fp32"
    assert len(result["rows"]) >= 2 and all(r["questions"] == 10 for r in result["rows"])
    assert (Path(result["run_dir"]) / "results.json").is_file()
    # Only `.submit()`/`.map()` calls go through the task runner; direct task calls run in the flow's thread.
    assert submitted, "the flow submitted no task: DaskTaskRunner was never used"
