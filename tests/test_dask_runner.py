"""The flow's task runner is swappable: build-bert on prefect-dask's DaskTaskRunner, in-process or separate-process."""

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


def test_build_bert_runs_on_a_separate_process_dask_cluster(tmp_path, prefect_harness):
    """`processes=True`: the tasks run in Dask worker processes and hand each other files through the run directory.

    Every task argument and result is plain data or a path on this host's disk
    (the run directory, the step cache), so worker processes of one host can
    share the work; hosts of their own do not see those paths (docs/deploy.md).
    """
    import os

    from distributed import Client, LocalCluster, get_task_stream
    from prefect_dask import DaskTaskRunner

    from bertbuild.flows.build_bert import build_bert

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        worker_pids = client.run(os.getpid)  # worker address -> pid
        assert len(set(worker_pids.values())) == 2 and os.getpid() not in worker_pids.values()
        runner = DaskTaskRunner(address=cluster.scheduler_address)
        with get_task_stream(client) as stream:
            state = build_bert.with_options(task_runner=runner)(_config(tmp_path), return_state=True)
        assert state.is_completed(), state.message
        ran = [(t["key"], t["worker"]) for t in stream.data]
    print("tasks on Dask workers:", ran)
    assert ran and {worker for _, worker in ran} <= set(worker_pids)
    names = " ".join(str(key) for key, _ in ran)
    # the engines were built in one worker process and scored from their files in (maybe) another
    assert all(f"{task}-" in names for task in ("build_engine", "score_engine", "tensorflow_reference")), names
    result = state.result()
    from bertbuild.backends.registry import resolve_backend

    backend = resolve_backend("auto")[0]  # the config leaves engines.backend at auto
    assert [r["engine"] for r in result["rows"]][1:] == [f"{backend}-fp32", f"{backend}-fused-fp32"]
    assert all(r["questions"] == 10 and r["gates"] == "PASS" for r in result["rows"][1:])
