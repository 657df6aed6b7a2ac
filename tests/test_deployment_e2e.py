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

The server runs on PostgreSQL (the session's `postgres`, through asyncpg), as a
shared server should, and no ERROR at all is allowed. One more server, on
SQLite (Prefect's default, a single user's), runs one on-demand build: the only
test where a few SQLite "database is locked" records are forgiven
(`prefect_server.SQLITE_CONTENTION_ALLOWANCE`).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import yaml
from prefect_server import (POOL, PROJECT_ROOT, Prefect, check, deployed_server, server_errors, server_log_checked,
                            wait_for)

from bertbuild.reporting.run_table import format_table

pytestmark = pytest.mark.slow

DEPLOYMENT = "build-bert/on-demand"
TIMINGS: dict[str, float] = {}


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
    yield from server_log_checked(request, "deployed_sqlite" if "deployed_sqlite" in request.fixturenames
                                  else "deployed")


@pytest.fixture(scope="module")
def deployed(tmp_path_factory, postgres):
    """Server (on PostgreSQL), pool, the deployments from prefect.yaml, and a worker; torn down by PID."""
    with deployed_server(tmp_path_factory.mktemp("prefect-e2e"), {"worker": []}, TIMINGS,
                         database=postgres.database("deployment_e2e")) as prefect:
        yield prefect


@pytest.fixture(scope="module")
def deployed_sqlite(tmp_path_factory):
    """The same, on SQLite in the server's PREFECT_HOME: Prefect's single-user default."""
    with deployed_server(tmp_path_factory.mktemp("prefect-e2e-sqlite"), {"worker": []}, TIMINGS,
                         database=None) as prefect:
        yield prefect


def _flow_run_logs(prefect: Prefect, flow_run_id: str) -> list[str]:
    """The flow run's log messages (its tasks' included) as the server stored them, oldest first."""
    messages, offset = [], 0
    while True:
        page = prefect.api_call("POST", "/logs/filter", {"logs": {"flow_run_id": {"any_": [flow_run_id]}},
                                                         "sort": "TIMESTAMP_ASC", "limit": 200, "offset": offset})
        messages += [entry["message"] for entry in page]
        if len(page) < 200:
            return messages
        offset += 200


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


def test_nightly_deployment_is_scheduled(deployed):
    out = deployed.cli("deployment", "inspect", "build-bert/nightly")
    check(out, "deployment inspect")
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

    runs = wait_for("3 Scheduled runs of build-bert/nightly", scheduled, timeout=90)
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
    check(deployed.cli("--no-prompt", "deploy", "--all", "--prefect-file", str(prefect_file), timeout=600),
           "prefect deploy (scheduled-e2e)")

    t = time.monotonic()

    def finished():
        runs = deployed.flow_runs("build-bert/scheduled-e2e")
        done = [r for r in runs if r["state"]["type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED")]
        return done[0] if done else None

    run = wait_for("the scheduled run of build-bert/scheduled-e2e to finish", finished, timeout=600, every=2)
    TIMINGS["scheduled_run_finished_s"] = time.monotonic() - t
    assert run["state"]["type"] == "COMPLETED", (run["state"], deployed.log("worker"))
    assert run["auto_scheduled"], "the run was not created by the scheduler"
    assert abs((_utc(run["expected_start_time"]) - first).total_seconds()) < 1
    assert (tmp_path / "out" / "e2e-tiny" / "latest" / "results.json").is_file()


def _run_to_completion(prefect: Prefect, tmp_path: Path, timing: str):
    """An on-demand build of the fixture config, watched: it must exit 0 and leave results under `latest`."""
    config = _fixture_config(tmp_path)
    t = time.monotonic()
    result = _run(prefect, f"config={config}")
    TIMINGS[timing] = time.monotonic() - t
    assert result.returncode == 0, (f"--watch exit {result.returncode}\n{result.stdout[-4000:]}\n"
                                    f"{result.stderr[-2000:]}\nworker:\n{prefect.log('worker')}")
    assert (tmp_path / "out" / "e2e-tiny" / "latest" / "results.json").is_file()
    return result


def test_on_demand_run_completes_and_publishes(deployed, postgres, tmp_path):
    result = _run_to_completion(deployed, tmp_path, "run_completed_s")
    assert "Completed" in result.stdout
    from bertbuild.cli import main

    dest = tmp_path / "bundle"
    assert main(["artifacts", "download", "--store", str(tmp_path / "store"), "--model", "e2e-tiny",
                 "--run", "latest", "--dest", str(dest)]) == 0
    from bertbuild.artifacts.download import verify_dir

    manifest = verify_dir(dest)
    assert manifest.passed and manifest.flow_run_id
    assert all((dest / name).is_file() for name in manifest.files)
    assert any(name.startswith("validation-") and name.endswith(".log") for name in manifest.files)

    # What the run logged reached the server: a line as each step started and ended, each engine's
    # verdict and the results table; Polygraphy's comparison detail did not (it is in the bundle).
    logs = _flow_run_logs(deployed, manifest.flow_run_id)
    text = "\n".join(logs)
    started, finished = logs.count("Started"), logs.count("Finished in state Completed()")
    assert started >= 8 and finished >= started, text[-3000:]  # fetch-checkpoint and a few more log no start
    assert any(m.startswith("PASSED: ") for m in logs), logs
    results = json.loads((dest / "results.json").read_text())["results"]
    table = format_table(results)
    assert sum(table in m for m in logs) == 1, text[-3000:]
    assert not [m for m in logs if "Stats: mean=" in m or m.startswith("[I]")], text[-3000:]

    # ... and the run is a row of PostgreSQL's flow_run table, not of some SQLite file.
    state = postgres.psql(f"SELECT state_type FROM flow_run WHERE id = '{manifest.flow_run_id}';",
                          postgres.name_of(deployed.database))
    assert "COMPLETED" in state, state
    assert not list(deployed.home.glob("*.db")), list(deployed.home.iterdir())


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


def test_single_user_server_on_sqlite_runs_on_demand(deployed_sqlite, tmp_path):
    """Prefect's default database, as on a laptop: one on-demand build completes and publishes.

    The one test that forgives a few SQLite "database is locked" records (see
    `prefect_server.SQLITE_CONTENTION_ALLOWANCE`); every other runs on PostgreSQL.
    """
    assert deployed_sqlite.on_sqlite and list(deployed_sqlite.home.glob("*.db"))
    _run_to_completion(deployed_sqlite, tmp_path, "sqlite_run_completed_s")
