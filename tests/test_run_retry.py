"""A retried flow run keeps its run id and starts in a clean run directory."""

from __future__ import annotations

from pathlib import Path

import pytest
from prefect import flow

from bertbuild.tasks.publish import current_attempt, current_run_id
from bertbuild.runs import open_run


def test_a_first_attempt_never_takes_over_a_directory_and_a_retry_sets_the_old_one_aside(tmp_path):
    first = open_run(tmp_path, "model", "r1", cache_enabled=False)
    (first.run_dir / "partial.onnx").write_bytes(b"half")
    with pytest.raises(FileExistsError):
        open_run(tmp_path, "model", "r1", cache_enabled=False)
    retry = open_run(tmp_path, "model", "r1", cache_enabled=False, attempt=2)
    assert retry.run_dir == first.run_dir and list(retry.run_dir.iterdir()) == []
    assert (tmp_path / "model" / ".r1.attempt-1" / "partial.onnx").read_bytes() == b"half"
    open_run(tmp_path, "model", "r1", cache_enabled=False, attempt=3)
    assert (tmp_path / "model" / ".r1.attempt-2").is_dir()


def test_a_flow_that_fails_once_is_retried_under_the_same_run_id(prefect_harness, tmp_path):
    seen = []

    @flow(retries=1, retry_delay_seconds=0)
    def fails_once() -> str:
        run = open_run(tmp_path, "model", current_run_id(), cache_enabled=False, attempt=current_attempt())
        seen.append((current_attempt(), run.run_id, sorted(p.name for p in run.run_dir.iterdir())))
        if current_attempt() == 1:
            (run.run_dir / "partial.onnx").write_bytes(b"half")
            raise RuntimeError("first attempt dies")
        return run.run_id

    run_id = fails_once()
    assert [attempt for attempt, _, _ in seen] == [1, 2]
    assert seen[0][1] == seen[1][1] == run_id and seen[1][2] == []  # same id, clean directory
    assert (tmp_path / "model" / f".{run_id}.attempt-1" / "partial.onnx").is_file()


def test_a_gate_for_another_commit_refuses_to_start(prefect_harness, tmp_path):
    from bertbuild.artifacts.manifest import git_info
    from bertbuild.errors import UserInputError
    from bertbuild.flows.build_bert import build_bert
    from bertbuild.runs import check_commit

    with pytest.raises(UserInputError, match="require_commit 000000000000: this worker's code is"):
        build_bert(str(Path(__file__).resolve().parent.parent / "configs" / "default.yaml"), require_commit="0" * 40)
    here = git_info()
    if here["commit"] and not here["dirty"]:  # a clean checkout passes for its own commit
        check_commit(here["commit"][:10])


def test_latest_names_only_a_completed_run_and_the_newest_of_them(tmp_path):
    from bertbuild.runs import mark_complete

    latest = tmp_path / "model" / "latest"
    first = open_run(tmp_path, "model", "20261201T020000Z-aaaa", cache_enabled=False)
    (first.run_dir / ".scratch").mkdir()
    assert not latest.exists() and not latest.is_symlink()  # a run still working (only .scratch) is not latest
    assert mark_complete(first)
    assert latest.resolve() == first.run_dir.resolve()

    crashed = open_run(tmp_path, "model", "20261202T020000Z-bbbb", cache_enabled=False)
    (crashed.run_dir / ".scratch").mkdir()  # it dies here: never marked complete
    newer = open_run(tmp_path, "model", "20261203T020000Z-cccc", cache_enabled=False)
    assert latest.resolve() == first.run_dir.resolve()
    assert mark_complete(newer)
    assert latest.resolve() == newer.run_dir.resolve()
    # a run started earlier that finishes later does not take `latest` back
    assert not mark_complete(crashed)
    assert latest.resolve() == newer.run_dir.resolve()
