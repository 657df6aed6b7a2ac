"""The deployment path end to end on a REAL Prefect server (no test harness).

server (127.0.0.1, own PREFECT_HOME, no UI, no analytics) -> process work pool ->
`prefect --no-prompt deploy --all` from prefect.yaml -> worker subprocess ->
`prefect deployment run build-bert/on-demand --param config=... --watch`.

`--watch` exits 0 only when the run ends Completed: that exit code is the CI
gate, so a run whose parity gate fails must make it exit non-zero.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.slow

PROJECT_ROOT = Path(__file__).resolve().parent.parent
POOL = "bertbuild-process"
DEPLOYMENT = "build-bert/on-demand"
TIMINGS: dict[str, float] = {}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop(proc: subprocess.Popen, name: str) -> None:
    """terminate, wait, kill: by PID, then anything left in its own process group (flow-run children)."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=20)
    try:  # the group id is the PID of the process we started (start_new_session=True)
        os.killpg(proc.pid, signal.SIGTERM)
        time.sleep(1)
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


class Prefect:
    """A running server + worker and a way to call the `prefect` CLI against them."""

    def __init__(self, home: Path, port: int, logs: Path):
        self.home, self.port, self.logs = home, port, logs
        self.api = f"http://127.0.0.1:{port}/api"
        env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
        env.update({
            "PREFECT_HOME": str(home),
            "PREFECT_API_URL": self.api,
            "PREFECT_UI_ENABLED": "false",
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "DO_NOT_TRACK": "1",
            "PREFECT_WORKER_QUERY_SECONDS": "1",
            "PREFECT_WORKER_PREFETCH_SECONDS": "5",
            "PREFECT_SERVER_LOGGING_LEVEL": "WARNING",
            # No scheduler: the nightly schedule must not start a real run on this throwaway server.
            "PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED": "false",
            "TF_CPP_MIN_LOG_LEVEL": "2",
        })
        self.env = env

    def cli(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "prefect", *args], cwd=PROJECT_ROOT, env=self.env,
                              capture_output=True, text=True, timeout=timeout)

    def spawn(self, name: str, *args: str) -> subprocess.Popen:
        log = open(self.logs / f"{name}.log", "w")
        return subprocess.Popen([sys.executable, "-m", "prefect", *args], cwd=PROJECT_ROOT, env=self.env,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def log(self, name: str, tail: int = 4000) -> str:
        path = self.logs / f"{name}.log"
        return path.read_text(errors="replace")[-tail:] if path.exists() else ""

    def wait_healthy(self, server: subprocess.Popen, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if server.poll() is not None:
                raise RuntimeError(f"prefect server exited with {server.returncode}:\n{self.log('server')}")
            try:
                with urllib.request.urlopen(f"{self.api}/health", timeout=2) as resp:
                    if resp.status == 200 and json.loads(resp.read()) is True:
                        return
            except (OSError, ValueError):
                pass
            time.sleep(0.5)
        raise RuntimeError(f"prefect server not healthy after {timeout}s:\n{self.log('server')}")


def _check(result: subprocess.CompletedProcess, what: str) -> None:
    assert result.returncode == 0, f"{what} failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"


@pytest.fixture(scope="module")
def deployed(tmp_path_factory):
    """Server, pool, both deployments from prefect.yaml, and a worker; torn down by PID."""
    tmp = tmp_path_factory.mktemp("prefect-e2e")
    (tmp / "home").mkdir()
    prefect = Prefect(tmp / "home", _free_port(), tmp)
    procs: list[tuple[str, subprocess.Popen]] = []
    start = time.monotonic()
    try:
        server = prefect.spawn("server", "server", "start", "--host", "127.0.0.1", "--port", str(prefect.port))
        procs.append(("server", server))
        prefect.wait_healthy(server)
        TIMINGS["server_ready_s"] = time.monotonic() - start

        _check(prefect.cli("work-pool", "create", POOL, "--type", "process"), "work-pool create")
        t = time.monotonic()
        deploy = prefect.cli("--no-prompt", "deploy", "--all", timeout=600)
        _check(deploy, "prefect deploy --all")
        TIMINGS["deploy_s"] = time.monotonic() - t
        listed = prefect.cli("deployment", "ls")
        _check(listed, "deployment ls")
        assert "build-bert/nightly" in listed.stdout and "build-bert/on-demand" in listed.stdout

        worker = prefect.spawn("worker", "worker", "start", "--pool", POOL, "--type", "process")
        procs.append(("worker", worker))
        yield prefect
    finally:
        for name, proc in reversed(procs):
            _stop(proc, name)
        TIMINGS["fixture_total_s"] = time.monotonic() - start
        print("\ne2e timings:", json.dumps({k: round(v, 1) for k, v in TIMINGS.items()}))


def _fixture_config(directory: Path, **extra) -> Path:
    """generated:tiny, 10 questions; output and publish.store under `directory`."""
    raw = {
        "model": {"source": "generated:tiny", "name": "e2e-tiny"},
        "eval": {"limit": 10, "batch_size": 4},
        "engines": {"precisions": ["fp32"]},
        "output_dir": str(directory / "out"),
        "publish": {"store": str(directory / "store")},
        **extra,
    }
    path = directory / "e2e.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _run(prefect: Prefect, *params: str) -> subprocess.CompletedProcess:
    args = ["deployment", "run", DEPLOYMENT, "--watch", "--watch-timeout", "900"]
    for p in params:
        args += ["--param", p]
    return prefect.cli(*args, timeout=960)


def test_nightly_deployment_is_scheduled(deployed):
    out = deployed.cli("deployment", "inspect", "build-bert/nightly")
    _check(out, "deployment inspect")
    text = out.stdout
    assert "0 2 * * *" in text and "America/Los_Angeles" in text
    assert "configs/default.yaml" in text and POOL in text
    assert "set_working_directory" in text and str(PROJECT_ROOT) in text


def test_on_demand_run_completes_and_publishes(deployed, tmp_path):
    config = _fixture_config(tmp_path)
    t = time.monotonic()
    result = _run(deployed, f"config={config}")
    TIMINGS["run_completed_s"] = time.monotonic() - t
    assert result.returncode == 0, (f"--watch exit {result.returncode}\n{result.stdout[-4000:]}\n"
                                    f"{result.stderr[-2000:]}\nworker:\n{deployed.log('worker')}")
    assert "Completed" in result.stdout
    assert (tmp_path / "out" / "results.json").is_file()
    from bertbuild.cli import main

    dest = tmp_path / "bundle"
    assert main(["artifacts", "download", "--store", str(tmp_path / "store"), "--model", "e2e-tiny",
                 "--run", "latest", "--dest", str(dest)]) == 0
    from artifacts.download import verify_dir

    manifest = verify_dir(dest)
    assert manifest.passed and manifest.flow_run_id
    assert all((dest / name).is_file() for name in manifest.files)


def test_failing_gate_makes_watch_exit_nonzero(deployed, tmp_path):
    config = _fixture_config(tmp_path)
    t = time.monotonic()
    result = _run(deployed, f"config={config}", 'overrides=["parity.max_abs_logit=1e-12"]')
    TIMINGS["run_failed_s"] = time.monotonic() - t
    assert result.returncode != 0, result.stdout[-4000:]
    assert "Failed" in result.stdout
    from artifacts.store import ArtifactStore

    store = ArtifactStore(tmp_path / "store")
    assert store.runs("e2e-tiny") == [] and store.latest("e2e-tiny") is None
    assert len(store.runs("e2e-tiny", failed=True)) == 1
