"""Ctrl-C and SIGTERM during a real `bertbuild run`: real processes, real signals (bertbuild/interrupts.py).

Each run is the CLI in a process group of its own, as a terminal starts it, on the tiny generated model, with
Prefect's temporary server. The signal goes out once the export's child process is running: Ctrl-C to the
whole group (what a terminal does), SIGTERM to the bertbuild process alone (a Prefect worker, `docker stop`).
Then: exit 130/143 within seconds, one `bertbuild:` line naming the step, no traceback, no process of the run
left (the server sits in a group of its own: it is found as a descendant before the signal), nothing
published, the run directory marked INTERRUPTED, the flow run Cancelled/Crashed in Prefect's database, and
a run started afterwards with the same cache, output directory and store completes and becomes `latest`.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

PROJECT_ROOT = Path(__file__).resolve().parent.parent
BOUND_S = 15  # the promise is 5 s; a loaded 2-core CI host gets slack. The measured time is printed.
MODEL = "generated-tiny"
CONFIG = PROJECT_ROOT / "configs" / "generated-tiny.yaml"
SMALL = [f"--set={item}" for item in ("eval.limit=8", "validation.batches=1", "benchmark.batch=2", "benchmark.seq=128",
                                      "benchmark.warmup=1", "benchmark.iterations=2")]


@pytest.fixture(scope="module")
def place(tmp_path_factory) -> dict:
    """One output directory, store, step cache and Prefect home for the module's runs, in that order."""
    root = tmp_path_factory.mktemp("interrupts")
    return {"root": root, "runs": root / "runs", "store": root / "store", "cache": root / "cache",
            "prefect": root / "prefect"}


def _start(place: dict) -> tuple[subprocess.Popen, list[str]]:
    env = {**os.environ, "PREFECT_HOME": str(place["prefect"]), "BERTBUILD_STORE": str(place["store"]),
           "BERTBUILD_CACHE": str(place["cache"]), "PYTHONPATH": os.pathsep.join(sys.path)}
    env.pop("PREFECT_API_URL", None)  # the temporary server, as a user's run has it
    process = subprocess.Popen(
        [sys.executable, "-m", "bertbuild.cli", "run", "--config", str(CONFIG),
         "--set", f"output_dir={place['runs']}", *SMALL],
        cwd=place["root"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True)  # its own process group, as a shell gives a foreground job
    lines: list[str] = []
    for stream in (process.stdout, process.stderr):
        threading.Thread(target=lambda s=stream: lines.extend(s), daemon=True).start()
    return process, lines


def _wait_for_child_step(process: subprocess.Popen, timeout_s: float = 180) -> list[psutil.Process]:
    """Wait until the export's child process runs; every descendant of the run at that moment."""
    deadline = time.monotonic() + timeout_s
    root = psutil.Process(process.pid)
    while time.monotonic() < deadline:
        assert process.poll() is None, "the run ended before its export started"
        family = root.children(recursive=True)
        if any("bertbuild.isolation" in " ".join(_cmdline(p)) for p in family):
            time.sleep(0.5)  # the child has started importing TensorFlow
            return family
        time.sleep(0.1)
    raise AssertionError("no child step started")


def _cmdline(p: psutil.Process) -> list[str]:
    try:
        return p.cmdline()
    except psutil.Error:
        return []


def _flow_run_states(prefect_home: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(prefect_home / "prefect.db") as db:
        return db.execute("SELECT state_type, state_name FROM flow_run ORDER BY created").fetchall()


def _interrupt(place: dict, how: str) -> dict:
    process, lines = _start(place)
    family = _wait_for_child_step(process)
    sent = time.monotonic()
    if how == "ctrl-c":
        os.killpg(process.pid, signal.SIGINT)
    else:
        os.kill(process.pid, signal.SIGTERM)
    try:
        code = process.wait(timeout=120)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    seconds = time.monotonic() - sent
    print(f"\n{how}: signal -> exit {seconds:.2f} s")
    time.sleep(0.3)  # the reader threads drain the pipes
    left = [p for p in family if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    for p in left:
        p.kill()
    return {"code": code, "seconds": seconds, "lines": lines, "left": [" ".join(_cmdline(p))[:120] for p in left]}


@pytest.mark.slow
@pytest.mark.parametrize("how, code, word, state", [("ctrl-c", 130, "interrupted", "CANCELLED"),
                                                    ("sigterm", 143, "terminated", "CRASHED")])
def test_an_interrupted_run_stops_everything_in_seconds_and_says_so_in_one_line(place, how, code, word, state):
    ended = _interrupt(place, how)
    ours = [line for line in ended["lines"] if line.startswith("bertbuild:")]
    assert ended["code"] == code, "".join(ended["lines"])[-3000:]
    assert len(ours) == 1 and ours[0].startswith(f"bertbuild: {word} during export-onnx"), ours
    assert not any("Traceback" in line for line in ended["lines"]), "".join(ended["lines"])[-3000:]
    assert ended["seconds"] < BOUND_S
    assert ended["left"] == []  # the export's child and Prefect's temporary server are gone

    runs = sorted(p for p in (place["runs"] / MODEL).iterdir() if not p.name.startswith("."))
    marker = json.loads((runs[-1] / "INTERRUPTED").read_text())
    assert marker["signal"] == ("SIGINT" if how == "ctrl-c" else "SIGTERM") and marker["during"] == ["export-onnx"]
    assert marker["flow_run"] == f"flow run {state.title()}"
    assert not (place["runs"] / MODEL / "latest").exists()
    assert not list(place["store"].rglob("manifest.json"))  # nothing published
    assert _flow_run_states(place["prefect"])[-1][0] == state  # not left Running
    entries = place["cache"] / "steps" / "export"
    assert not entries.is_dir() or not any(entries.iterdir())  # no half-written cache entry


@pytest.mark.slow
def test_the_next_run_completes_and_becomes_latest(place):
    env = {**os.environ, "PREFECT_HOME": str(place["prefect"]), "BERTBUILD_STORE": str(place["store"]),
           "BERTBUILD_CACHE": str(place["cache"]), "PYTHONPATH": os.pathsep.join(sys.path)}
    env.pop("PREFECT_API_URL", None)
    done = subprocess.run(
        [sys.executable, "-m", "bertbuild.cli", "run", "--config", str(CONFIG),
         "--set", f"output_dir={place['runs']}", *SMALL],
        cwd=place["root"], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    latest = (place["runs"] / MODEL / "latest").resolve()
    assert latest.is_dir() and not (latest / "INTERRUPTED").exists()
    assert list(place["store"].rglob("manifest.json"))
    assert _flow_run_states(place["prefect"])[-1][0] == "COMPLETED"


@pytest.mark.slow
def test_a_flow_run_stopped_without_the_cli_stops_its_child_and_marks_its_run(tmp_path):
    """A worker's flow run (no supervisor: `build_bert` called directly) gets SIGTERM, as a cancel from the UI
    or a worker shutting down sends it: Prefect raises TerminationSignal; the flow stops its child step and
    marks its run directory as it unwinds, and Prefect's engine ends the run Crashed."""
    tests = Path(__file__).resolve().parent
    config = {"model": {"source": "generated:tiny", "name": MODEL}, "eval": {"limit": 4},
              "engines": {"precisions": ["fp32"]}, "cache": {"enabled": False}, "output_dir": str(tmp_path / "runs")}
    script = f"""
import sys
sys.path.insert(0, {str(tests)!r})
from bertbuild.interrupts import server_in_own_group
from bertbuild.tasks import model
model.EXPORT_TARGET = "child_targets:slow"
from bertbuild.flows.build_bert import build_bert
with server_in_own_group():  # dies with this process (a worker has a real server instead)
    build_bert({config!r})
"""
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect"), "BERTBUILD_STORE": str(tmp_path / "store"),
           "PYTHONPATH": os.pathsep.join(sys.path)}
    env.pop("PREFECT_API_URL", None)
    process = subprocess.Popen([sys.executable, "-c", script], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, start_new_session=True)
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(process.stdout), daemon=True).start()
    try:
        family = _wait_for_child_step(process)
        sent = time.monotonic()
        os.kill(process.pid, signal.SIGTERM)
        code = process.wait(timeout=60)
        print(f"\nflow run without the CLI, SIGTERM: signal -> exit {time.monotonic() - sent:.2f} s")
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    time.sleep(0.3)
    assert code in (-signal.SIGTERM, 143), "".join(lines)[-3000:]
    assert not [p for p in family if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    (run_dir,) = (tmp_path / "runs" / MODEL).glob("2*")
    marker = json.loads((run_dir / "INTERRUPTED").read_text())
    assert marker["signal"] == "SIGTERM" and marker["during"] == ["export-onnx"]
    assert _flow_run_states(tmp_path / "prefect")[-1][0] == "CRASHED"
