"""The deployment path end to end on a REAL Prefect server (no test harness).

server (127.0.0.1, own PREFECT_HOME, no UI, no analytics, scheduler ON) ->
process work pool -> `prefect --no-prompt deploy --all` from prefect.yaml ->
worker subprocess -> `prefect deployment run build-bert/on-demand --param config=... --watch`.

`--watch` exits 0 only when the run ends Completed: that exit code is the CI
gate, so a run whose parity gate fails must make it exit non-zero.

The scheduler service runs as it does in production: `build-bert/nightly` must
get its Scheduled runs at the next 02:00 America/Los_Angeles times, and a second
deployment scheduled a few seconds ahead must run to Completed with nobody
calling `deployment run`. Any ERROR line or traceback in the server log during a
test fails it: that is how a background service failing silently (SQLAlchemy 2.1
broke the scheduler that way) shows up here.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from datetime import datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

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
            # The scheduler runs as in production (nightly runs land days ahead and never start
            # here), but loops every 2 s instead of 60 so the test needs no long waits.
            "PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED": "true",
            "PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "2",
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

    def log_size(self, name: str) -> int:
        path = self.logs / f"{name}.log"
        return path.stat().st_size if path.exists() else 0

    def log_since(self, name: str, offset: int) -> str:
        with open(self.logs / f"{name}.log", "rb") as f:
            f.seek(offset)
            return f.read().decode(errors="replace")

    def api_call(self, method: str, path: str, body: dict | None = None):
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(f"{self.api}{path}", data=data, method=method,
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as resp:
            return json.loads(resp.read())

    def deployment_id(self, name: str) -> str:
        flow, deployment = name.split("/")
        return self.api_call("GET", f"/deployments/name/{flow}/{deployment}")["id"]

    def flow_runs(self, deployment: str) -> list[dict]:
        body = {"flow_runs": {"deployment_id": {"any_": [self.deployment_id(deployment)]}},
                "sort": "EXPECTED_START_TIME_ASC", "limit": 50}
        return self.api_call("POST", "/flow_runs/filter", body)

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


_ERROR_LINE = re.compile(r"\bERROR\b|Traceback \(most recent call last\)")
_LOG_RECORD = re.compile(r"^\d\d:\d\d:\d\d\.\d+ \|", re.MULTILINE)
# SQLite in WAL mode answers "database is locked" at once, whatever the busy timeout, when a read
# transaction must become a write after another connection wrote; Prefect's server logs it (e.g. for
# a worker heartbeat) and carries on. It is load, not breakage: a real server runs on PostgreSQL.
_SQLITE_CONTENTION = "(sqlite3.OperationalError) database is locked"
_MAX_CONTENTION_ERRORS = 3  # more than this in one test is a server that cannot keep up


def server_errors(text: str) -> tuple[list[str], int]:
    """(error records that mean something broke, count of SQLite write-contention records) in a server log."""
    starts = [m.start() for m in _LOG_RECORD.finditer(text)] or [0]
    records = [text[a:b] for a, b in zip(starts, starts[1:] + [len(text)])]
    if starts[0] > 0:
        records.insert(0, text[:starts[0]])
    errors = [r for r in records if _ERROR_LINE.search(r)]
    contention = [r for r in errors if _SQLITE_CONTENTION in r]
    return [r for r in errors if _SQLITE_CONTENTION not in r], len(contention)


def test_server_errors_tell_a_broken_service_from_sqlite_contention():
    broken = ("02:00:01.5 | ERROR   | prefect.server.services.scheduler - Unexpected error in: Scheduler\n"
              "Traceback (most recent call last):\n  File \"x.py\", line 1\n"
              "AttributeError: 'Select' object has no attribute 'columns'\n")
    locked = ("02:00:02.0 | ERROR   | prefect.server.utilities.worker_channel - heartbeat persistence failed\n"
              "Traceback (most recent call last):\n"
              "sqlalchemy.exc.OperationalError: (sqlite3.OperationalError) database is locked\n")
    fine = "02:00:03.0 | INFO    | prefect.server - Scheduled 10 runs\n"
    serious, contention = server_errors(fine + locked + broken + fine + locked)
    assert contention == 2 and len(serious) == 1 and "Unexpected error in: Scheduler" in serious[0]
    assert server_errors(fine) == ([], 0)


@pytest.fixture(autouse=True)
def server_log_stays_clean(request):
    """Fail a test during which the server logged an ERROR or a traceback (a background service broke)."""
    if "deployed" not in request.fixturenames:
        yield
        return
    prefect = request.getfixturevalue("deployed")
    offset = prefect.log_size("server")
    yield
    text = prefect.log_since("server", offset)
    serious, contention = server_errors(text)
    assert not serious and contention <= _MAX_CONTENTION_ERRORS, (
        f"the Prefect server logged errors during this test ({contention} SQLite contention):\n"
        + "\n".join(serious[:5]) + f"\n--- server log ---\n{text[-4000:]}")


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
        "cache": {"dir": str(directory / "cache")},
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


def _nightly_schedule() -> tuple[str, str]:
    """(cron, timezone) of build-bert/nightly as prefect.yaml declares it."""
    spec = yaml.safe_load((PROJECT_ROOT / "prefect.yaml").read_text())
    nightly = next(d for d in spec["deployments"] if d["name"] == "nightly")
    (schedule,) = nightly["schedules"]
    return schedule["cron"], schedule["timezone"]


def _daily_times(cron: str, tz: str, after: datetime, count: int) -> list[datetime]:
    """The next `count` UTC times a daily `M H * * *` cron fires in `tz` after `after`.

    Worked out with zoneinfo, not with Prefect's cron code, so a wrong schedule
    (or a wrong timezone, or DST handling) in Prefect would not agree with it.
    """
    minute, hour, *rest = cron.split()
    assert rest == ["*", "*", "*"], f"this check covers daily crons only, got {cron!r}"
    zone = ZoneInfo(tz)
    day = after.astimezone(zone).date()
    times = []
    while len(times) < count:
        local = datetime(day.year, day.month, day.day, int(hour), int(minute), tzinfo=zone)
        if local > after:
            times.append(local.astimezone(timezone.utc))
        day += timedelta(days=1)
    return times


def _utc(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).astimezone(timezone.utc)


def _wait_for(what: str, probe, timeout: float, every: float = 1.0):
    """Call `probe` until it returns something truthy; fail naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)


def test_nightly_deployment_is_scheduled(deployed):
    out = deployed.cli("deployment", "inspect", "build-bert/nightly")
    _check(out, "deployment inspect")
    text = out.stdout
    cron, tz = _nightly_schedule()
    assert (cron, tz) == ("0 2 * * *", "America/Los_Angeles")
    assert cron in text and tz in text
    assert "configs/nightly.yaml" in text and POOL in text
    assert "set_working_directory" in text and str(PROJECT_ROOT) in text


def test_nightly_has_scheduled_runs_at_the_next_0200_los_angeles(deployed):
    """The scheduler service must create the nightly runs (it silently did not with SQLAlchemy 2.1)."""
    cron, tz = _nightly_schedule()
    t = time.monotonic()

    def scheduled():
        runs = [r for r in deployed.flow_runs("build-bert/nightly") if r["state"]["type"] == "SCHEDULED"]
        return runs if len(runs) >= 3 else None

    runs = _wait_for("3 Scheduled runs of build-bert/nightly", scheduled, timeout=90)
    TIMINGS["nightly_scheduled_s"] = time.monotonic() - t
    starts = [_utc(r["expected_start_time"]) for r in runs]
    expected = _daily_times(cron, tz, datetime.now(timezone.utc) - timedelta(minutes=1), len(starts))
    assert starts == expected, f"scheduled {starts}, but {cron} in {tz} fires at {expected}"
    assert all(r["auto_scheduled"] and r["state"]["name"] == "Scheduled" for r in runs)

    # `bertbuild doctor` on this working setup: every check passes and it names the same next run.
    doctor = subprocess.run([sys.executable, "-m", "bertbuild.cli", "doctor"], cwd=PROJECT_ROOT, env=deployed.env,
                            capture_output=True, text=True, timeout=120)
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr
    assert "no problems found" in doctor.stdout
    assert re.search(rf"\[ok  \] next run of build-bert/nightly +{expected[0]:%Y-%m-%d %H:%M} UTC = "
                     rf"{expected[0].astimezone(ZoneInfo(tz)):%Y-%m-%d} 02:00 {tz}", doctor.stdout), doctor.stdout
    print("\n$ bertbuild doctor\n" + doctor.stdout)


def test_a_scheduled_deployment_runs_with_no_deployment_run_call(deployed, tmp_path):
    """What "nightly" means: the schedule alone starts a run, the worker takes it, and it ends Completed.

    A second deployment of the same flow, cut from prefect.yaml's own on-demand
    entry (same entrypoint, pool, build and pull steps), gets an interval
    schedule whose first run is a few seconds away and the tiny config.
    """
    config = _fixture_config(tmp_path)
    spec = yaml.safe_load((PROJECT_ROOT / "prefect.yaml").read_text())
    entry = dict(next(d for d in spec["deployments"] if d["name"] == "on-demand"))
    first = datetime.now(timezone.utc) + timedelta(seconds=15)
    entry.update(name="scheduled-e2e", parameters={"config": str(config)},
                 schedules=[{"interval": 3600, "anchor_date": first.isoformat(), "active": True}])
    spec = {k: v for k, v in spec.items() if k != "definitions"} | {"deployments": [entry]}
    prefect_file = tmp_path / "prefect-scheduled.yaml"
    prefect_file.write_text(yaml.safe_dump(spec, sort_keys=False))
    _check(deployed.cli("--no-prompt", "deploy", "--all", "--prefect-file", str(prefect_file), timeout=600),
           "prefect deploy (scheduled-e2e)")

    t = time.monotonic()

    def finished():
        runs = deployed.flow_runs("build-bert/scheduled-e2e")
        done = [r for r in runs if r["state"]["type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED")]
        return done[0] if done else None

    run = _wait_for("the scheduled run of build-bert/scheduled-e2e to finish", finished, timeout=600, every=2)
    TIMINGS["scheduled_run_finished_s"] = time.monotonic() - t
    assert run["state"]["type"] == "COMPLETED", (run["state"], deployed.log("worker"))
    assert run["auto_scheduled"], "the run was not created by the scheduler"
    assert abs((_utc(run["expected_start_time"]) - first).total_seconds()) < 1
    assert (tmp_path / "out" / "e2e-tiny" / "latest" / "results.json").is_file()


def test_on_demand_run_completes_and_publishes(deployed, tmp_path):
    config = _fixture_config(tmp_path)
    t = time.monotonic()
    result = _run(deployed, f"config={config}")
    TIMINGS["run_completed_s"] = time.monotonic() - t
    assert result.returncode == 0, (f"--watch exit {result.returncode}\n{result.stdout[-4000:]}\n"
                                    f"{result.stderr[-2000:]}\nworker:\n{deployed.log('worker')}")
    assert "Completed" in result.stdout
    assert (tmp_path / "out" / "e2e-tiny" / "latest" / "results.json").is_file()
    from bertbuild.cli import main

    dest = tmp_path / "bundle"
    assert main(["artifacts", "download", "--store", str(tmp_path / "store"), "--model", "e2e-tiny",
                 "--run", "latest", "--dest", str(dest)]) == 0
    from bertbuild.artifacts.download import verify_dir

    manifest = verify_dir(dest)
    assert manifest.passed and manifest.flow_run_id
    assert all((dest / name).is_file() for name in manifest.files)


def test_a_bad_config_parameter_is_refused_before_a_run_is_created(deployed, tmp_path):
    """The flow's parameter is the typed config: Prefect checks it against its schema and creates no run."""
    before = len(deployed.flow_runs(DEPLOYMENT))
    bad = json.dumps({"model": {"source": "generated:tiny"}, "evall": {"limit": 5}})
    result = _run(deployed, f"config={bad}")
    assert result.returncode != 0
    assert "evall" in result.stdout + result.stderr
    assert len(deployed.flow_runs(DEPLOYMENT)) == before


def test_failing_gate_makes_watch_exit_nonzero(deployed, tmp_path):
    config = _fixture_config(tmp_path)
    t = time.monotonic()
    result = _run(deployed, f"config={config}", 'overrides=["parity.max_abs_logit=1e-12"]')
    TIMINGS["run_failed_s"] = time.monotonic() - t
    assert result.returncode != 0, result.stdout[-4000:]
    assert "Failed" in result.stdout
    from bertbuild.artifacts.store import ArtifactStore

    store = ArtifactStore(tmp_path / "store")
    assert store.runs("e2e-tiny") == [] and store.latest("e2e-tiny") is None
    assert len(store.runs("e2e-tiny", failed=True)) == 1
