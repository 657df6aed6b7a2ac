"""A bounded load test on loopback: four builds at once on a PostgreSQL-backed Prefect server.

server (127.0.0.1, on the session's PostgreSQL) -> pool -> `prefect --no-prompt deploy --all` -> workers
`worker-a` and `worker-b` (2 runs at a time each) -> four flow runs of `build-bert/on-demand`, the tiny
model, created in one burst through the API. They share one store, run directory root and step cache, as
builds on one host do. Meanwhile a reader lists the store's runs and downloads `latest` every second.

It must end with all four runs Completed and released, every one of the reader's downloads complete and
verified (never a partial bundle: `latest` moves only once a bundle is whole), both workers used, and no
ERROR in the server log. It stops by itself: the builds get BUILDS_BOUND_S, then whatever is still running
is killed by PID. Wall time and the peak resident memory of the server, the workers, each build (its
process tree) and PostgreSQL are printed (`load figures:`) and kept in FIGURES; docs/deploy.md quotes them.
"""

from __future__ import annotations

import json
import shutil
import threading
import time
from pathlib import Path

import psutil
import pytest
import yaml
from prefect_server import Prefect, deployed_server, server_log_checked, tree_rss

from bertbuild.artifacts.download import download, verify_dir
from bertbuild.artifacts.store import ArtifactStore

pytestmark = pytest.mark.slow

MODEL = "load-tiny"
DEPLOYMENT = "build-bert/on-demand"
BUILDS = 4
BUILDS_BOUND_S = 200  # the four builds must be done by then; with the server's start, about 3.5 min in all
WORKERS = ("worker-a", "worker-b")
TIMINGS: dict[str, float] = {}
FIGURES: dict[str, object] = {}
MIB = 1024 * 1024


@pytest.fixture(autouse=True)
def server_log_stays_clean(request):
    yield from server_log_checked(request, "load_server")


@pytest.fixture(scope="module")
def load_server(tmp_path_factory, postgres):
    workers = {name: ["--name", name, "--limit", "2"] for name in WORKERS}
    with deployed_server(tmp_path_factory.mktemp("load-e2e"), workers, TIMINGS,
                         database=postgres.database("load_e2e")) as prefect:
        yield prefect


def _config(shared: Path) -> Path:
    raw = {
        "model": {"source": "generated:tiny", "name": MODEL},
        "eval": {"limit": 10, "batch_size": 4},
        "validation": {"batches": 2},
        "benchmark": {"batch": 2, "seq": 128, "warmup": 1, "iterations": 2},
        "engines": {"precisions": ["fp32"]},
        "output_dir": str(shared / "out"),
        "cache": {"dir": str(shared / "cache")},
        "publish": {"store": str(shared / "store")},
        # four builds share two cores: their timings say nothing about a release against the last one
        "regression": {"max_latency_ratio_vs_latest": None},
    }
    path = shared / "load.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


class Reader(threading.Thread):
    """Every second: list the model's runs (each manifest read), then download `latest` and verify it."""

    def __init__(self, store: Path, scratch: Path):
        super().__init__(daemon=True)
        self.store, self.scratch = store, scratch
        self.stop = threading.Event()
        self.rounds = self.downloads = 0
        self.latest_seen: set[str] = set()
        self.problems: list[str] = []

    def read_once(self) -> None:
        store = ArtifactStore(self.store)
        for run_id in store.runs(MODEL):
            assert store.read_manifest(MODEL, run_id) is not None, f"{run_id} listed without a manifest"
        if store.latest(MODEL) is None:
            return  # nothing released yet
        dest = self.scratch / f"read-{self.rounds}"
        result = download(self.store, MODEL, dest, run="latest")
        manifest = verify_dir(dest)  # every file there, every digest right: a whole bundle
        assert manifest.passed and set(manifest.files) <= set(result.files)
        self.latest_seen.add(result.run_id)
        self.downloads += 1
        shutil.rmtree(dest)

    def run(self) -> None:
        while not self.stop.is_set():
            begin = time.monotonic()
            self.rounds += 1
            try:
                self.read_once()
            except Exception as exc:  # noqa: BLE001 - every failure is a finding, reported at the end
                self.problems.append(f"round {self.rounds}: {type(exc).__name__}: {exc}")
            self.stop.wait(max(0.0, 1.0 - (time.monotonic() - begin)))


class Sampler(threading.Thread):
    """Peak resident memory, every 0.5 s: the server (with its children), each worker, each build's tree."""

    def __init__(self, prefect: Prefect, postgres):
        super().__init__(daemon=True)
        self.prefect, self.postgres = prefect, postgres
        self.stop = threading.Event()
        self.peak: dict[str, int] = {}
        self.builds: dict[int, psutil.Process] = {}  # flow-run processes the workers started

    def _note(self, name: str, value: int) -> None:
        self.peak[name] = max(self.peak.get(name, 0), value)

    def sample(self) -> None:
        self._note("server", tree_rss(psutil.Process(self.prefect.procs["server"].pid)))
        self._note("postgres", self.postgres.rss_bytes())
        for name in WORKERS:
            worker = psutil.Process(self.prefect.procs[name].pid)
            self._note(name, worker.memory_info().rss)
            for child in worker.children():
                self.builds.setdefault(child.pid, child)
                self._note(f"build-{child.pid}", tree_rss(child))

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                self.sample()
            except psutil.Error:
                pass
            self.stop.wait(0.5)


def _terminal(prefect: Prefect, ids: list[str]) -> list[dict] | None:
    runs = [prefect.api_call("GET", f"/flow_runs/{i}") for i in ids]
    return runs if all(r["state"]["type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED") for r in runs) else None


def test_four_builds_at_once_on_postgresql_with_a_reader(load_server, postgres, tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    config = _config(shared)
    (shared / "store").mkdir()
    reader, sampler = Reader(shared / "store", tmp_path), Sampler(load_server, postgres)
    deployment = load_server.deployment_id(DEPLOYMENT)
    reader.start()
    sampler.start()
    begin = time.monotonic()
    ids = [load_server.api_call("POST", f"/deployments/{deployment}/create_flow_run",
                                {"name": f"load-{i}", "parameters": {"config": str(config)}})["id"]
           for i in range(BUILDS)]
    runs = None
    try:
        while runs is None and time.monotonic() - begin < BUILDS_BOUND_S:
            time.sleep(1)
            runs = _terminal(load_server, ids)
        wall = time.monotonic() - begin
    finally:
        sampler.stop.set()
        sampler.join(10)
        for proc in sampler.builds.values():  # stops by itself: nothing of a build outlives the bound
            for p in [*proc.children(recursive=True), proc] if proc.is_running() else []:
                try:
                    p.kill()
                except psutil.Error:
                    pass
        reader.stop.set()
        reader.join(30)
    reader.rounds += 1
    try:
        reader.read_once()  # once more, after the last release
    except Exception as exc:  # noqa: BLE001
        reader.problems.append(f"last round: {type(exc).__name__}: {exc}")

    builds = sorted((v for k, v in sampler.peak.items() if k.startswith("build-")), reverse=True)
    FIGURES.update({
        "builds": BUILDS, "builds_wall_s": round(wall, 1),
        "peak_rss_mib": {"server": round(sampler.peak.get("server", 0) / MIB),
                         "postgres": round(sampler.peak.get("postgres", 0) / MIB),
                         **{w: round(sampler.peak.get(w, 0) / MIB) for w in WORKERS},
                         "builds": [round(b / MIB) for b in builds]},
        "reader": {"rounds": reader.rounds, "downloads_verified": reader.downloads,
                   "latest_runs_seen": len(reader.latest_seen), "problems": len(reader.problems)},
        **{k: round(v, 1) for k, v in TIMINGS.items()},
    })
    print("\nload figures:", json.dumps(FIGURES))

    assert runs is not None, f"not all {BUILDS} builds finished within {BUILDS_BOUND_S} s"
    states = {r["name"]: r["state"]["type"] for r in runs}
    assert set(states.values()) == {"COMPLETED"}, (states, load_server.log("worker-a"), load_server.log("worker-b"))
    assert sorted(r["labels"].get("prefect.worker.name") for r in runs) == sorted(WORKERS * 2)
    store = ArtifactStore(shared / "store")
    assert len(store.runs(MODEL)) == BUILDS and store.latest(MODEL) in store.runs(MODEL)
    assert not reader.problems, reader.problems[:5]
    assert reader.downloads >= 1 and store.latest(MODEL) in reader.latest_seen
    assert len(builds) == BUILDS, sampler.peak
