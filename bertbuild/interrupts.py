"""Ctrl-C and SIGTERM during a command: stop everything in seconds, say so in one line, leave no half-work behind.

Why the command runs beside a supervisor: Python delivers a signal only to
the main thread, as an exception wherever that thread happens to be. A flow
is mostly elsewhere: task threads scoring an engine, a child process running
the TensorFlow reference, and Prefect's temporary server, which (started the
usual way, in the same process group) dies with the same Ctrl-C, so the flow
spent minutes retrying it and ended with tracebacks and a run left Running.

So `supervise` runs the command on a worker thread, and the main thread only
waits. On the first SIGINT or SIGTERM it:

1. silences the abandoned work's output (its lines go to /dev/null; Prefect's
   API still has the run's log),
2. stops the child steps (`register_child`: SIGTERM, then SIGKILL after a second),
3. writes `INTERRUPTED` into every run directory the command opened (`note_run`),
4. ends the flow runs it noted Cancelled (Ctrl-C) or Crashed (SIGTERM), and their
   unfinished task runs with them, on the temporary server, which started in a
   process group of its own (`server_in_own_group`) so the Ctrl-C did not kill it first,
5. stops that server, removes half-written step cache entries, prints one line
   (`bertbuild: interrupted during export-onnx (run directory ... marked INTERRUPTED;
   nothing published)`) and exits 130 (SIGINT) or 143 (SIGTERM) without waiting
   for the worker thread.

Nothing is published, and `latest` does not move: publishing and `mark_complete`
call `stop_if_interrupted()`, which never returns once an interruption began; so
does a step cache entry about to be installed, and a worker thread whose child
step was stopped (`isolation.run_in_child`) parks instead of reporting a failure.

Each stage is bounded (children 1.5 s, the API 2 s, the server 1.5 s); measured,
the whole takes under a second. A second signal exits at once. Without a
supervisor (a flow run by a Prefect worker and cancelled from the UI, a flow
called in a test), `flow_run_noted` stops the child steps and marks the run
directory as the flow unwinds, and Prefect's engine reports the state itself.
"""

from __future__ import annotations

import contextvars
import datetime
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

MARKER = "INTERRUPTED"
EXIT_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143}
WORDS = {signal.SIGINT: "interrupted", signal.SIGTERM: "terminated"}
_CHILD_GRACE_S = 1.0  # SIGTERM, then SIGKILL: TensorFlow in a C++ op may not see SIGTERM for a while
_API_TIMEOUT_S = 2.0
_SERVER_GRACE_S = 1.5

_lock = threading.RLock()
_requested = threading.Event()
_signal: int | None = None
_supervised = False
_children: dict[int, subprocess.Popen] = {}
_steps: dict[int, str] = {}  # id of a token -> step name, in the order the steps started
_runs: dict[str, dict] = {}  # flow run id (or run dir) -> {"flow_run_id", "run_dir"}
_scratch: set[Path] = set()  # step cache directories being written
_unwound: list[str] = []  # steps an interruption's exception passed through (no supervisor)


def _is_interruption(exc: BaseException) -> bool:
    return isinstance(exc, KeyboardInterrupt) or type(exc).__name__ == "TerminationSignal"  # Prefect's


# -- what the command's threads tell the supervisor -----------------------------------------------------------

def stop_if_interrupted() -> None:
    """Call before anything that must not happen once interrupted (publishing, moving `latest`):
    returns at once normally; after an interruption, never returns (the process is about to exit)."""
    if _requested.is_set():
        park()


def park() -> None:
    """Block this (worker) thread for good: the supervisor is stopping the process."""
    while True:
        time.sleep(3600)


def interrupted_while_waiting(exit_code: int, wait_s: float = 2.0) -> bool:
    """A child step ended with `exit_code`: was that the interruption? A Ctrl-C reaches the child (same
    process group) as it reaches this process; the child may die a moment before the supervisor's handler
    runs, so a death by signal waits up to `wait_s` for it."""
    if _requested.is_set():
        return True
    if not _supervised or exit_code not in (-signal.SIGINT, -signal.SIGTERM, -signal.SIGKILL, 130, 143):
        return False
    return _requested.wait(wait_s)


def register_child(process: subprocess.Popen) -> None:
    with _lock:
        _children[process.pid] = process


def unregister_child(process: subprocess.Popen) -> None:
    with _lock:
        _children.pop(process.pid, None)


@contextmanager
def step(name: str) -> Iterator[None]:
    """Name the step running on this thread, for the interruption's line."""
    token = object()
    with _lock:
        _steps[id(token)] = name
    try:
        yield
    except BaseException as exc:
        if _is_interruption(exc):  # for `flow_run_noted`, which sees the exception after this step ended
            with _lock:
                _unwound.append(name)
        raise
    finally:
        with _lock:
            _steps.pop(id(token), None)


@contextmanager
def writing(directory: Path) -> Iterator[None]:
    """`directory` is a half-written step cache entry until the body ends: removed if interrupted."""
    with _lock:
        _scratch.add(Path(directory))
    try:
        yield
    finally:
        with _lock:
            _scratch.discard(Path(directory))


def running_steps() -> list[str]:
    with _lock:
        names = list(_steps.values())
    return list(dict.fromkeys(names))


def note_run(flow_run_id: str | None = None, run_dir: str | os.PathLike | None = None) -> None:
    """The flow run (and, once opened, the run directory) this command is working on."""
    key = str(flow_run_id or run_dir)
    with _lock:
        record = _runs.setdefault(key, {"flow_run_id": None, "run_dir": None})
        if flow_run_id:
            record["flow_run_id"] = str(flow_run_id)
        if run_dir:
            record["run_dir"] = str(run_dir)


# -- stopping --------------------------------------------------------------------------------------------------

def stop_children(grace_s: float = _CHILD_GRACE_S) -> None:
    """SIGTERM every registered child step, then SIGKILL what is left after `grace_s`.

    The thread that started a child reaps it (and unregisters it); this only waits for that, so the two
    never race for the same exit status."""
    with _lock:
        children = list(_children.values())
    for child in children:
        _send(child, signal.SIGTERM)
    for signum, wait_s in ((signal.SIGKILL, grace_s), (None, 0.5)):
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline and any(c.pid in _children for c in children):
            time.sleep(0.02)
        if signum is not None:
            for child in children:
                if child.pid in _children:
                    _send(child, signum)


def _send(child: subprocess.Popen, signum: int) -> None:
    try:
        os.kill(child.pid, signum)
    except (ProcessLookupError, PermissionError):
        pass


def mark_runs(signum: int, during: list[str], only: str | None = None, **more: Any) -> list[Path]:
    """Write `INTERRUPTED` (what, when, during which steps) into every run directory noted (or flow run `only`'s)."""
    with _lock:
        runs = [dict(r) for r in _runs.values() if only is None or r["flow_run_id"] == only]
    marked = []
    for record in runs:
        if not record["run_dir"] or not Path(record["run_dir"]).is_dir():
            continue
        path = Path(record["run_dir"]) / MARKER
        try:
            path.write_text(json.dumps({"signal": signal.Signals(signum).name, "during": during,
                                        "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                                        "flow_run_id": record["flow_run_id"], **more}, indent=1) + "\n")
            marked.append(path)
        except OSError:
            pass
    return marked


def remove_scratch() -> None:
    with _lock:
        directories = list(_scratch)
    for directory in directories:
        shutil.rmtree(directory, ignore_errors=True)


def end_flow_runs(signum: int, message: str, timeout_s: float = _API_TIMEOUT_S) -> str:
    """Set every noted flow run (and its unfinished task runs) Cancelled (SIGINT) or Crashed (SIGTERM).

    Returns what happened, for the INTERRUPTED note. Bounded by `timeout_s`: a server that is gone
    makes the client retry for minutes, so the call runs on a daemon thread that is left behind."""
    with _lock:
        ids = [r["flow_run_id"] for r in _runs.values() if r["flow_run_id"]]
    if not ids:
        return "no flow run"
    outcome: dict[str, Any] = {}

    def report() -> None:
        try:
            outcome["states"] = _set_states(ids, signum, message)
        except Exception as exc:  # noqa: BLE001 - reported in the note, never raised
            outcome["error"] = f"{type(exc).__name__}: {exc}"

    worker = threading.Thread(target=report, name="bertbuild-interrupt-report", daemon=True)
    worker.start()
    worker.join(timeout_s)
    if "states" in outcome:
        return outcome["states"]
    why = outcome.get("error", f"the Prefect API did not answer in {timeout_s:.0f} s")
    return f"flow run state not recorded ({why})"


def _set_states(ids: list[str], signum: int, message: str) -> str:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import LogCreate
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
    from prefect.states import Cancelled, Crashed

    make = Cancelled if signum == signal.SIGINT else Crashed
    with get_client(sync_client=True, httpx_settings={"timeout": _API_TIMEOUT_S}) as client:
        now = datetime.datetime.now(datetime.timezone.utc)  # the run's log (the UI) says why it ended
        client.create_logs([LogCreate(name="bertbuild", level=30, message=f"bertbuild: {message}", timestamp=now,
                                      flow_run_id=flow_run_id) for flow_run_id in ids])
        for flow_run_id in ids:
            tasks = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
            for task_run in tasks:
                if task_run.state is None or not task_run.state.is_final():
                    client.set_task_run_state(task_run.id, make(message=message), force=True)
            client.set_flow_run_state(flow_run_id, make(message=message), force=True)
    return f"flow run {make.__name__}" if len(ids) == 1 else f"{len(ids)} flow runs {make.__name__}"


# -- the temporary Prefect server, in a process group of its own ---------------------------------------------

class _OwnGroup:
    """`subprocess`, with Popen starting the child in its own process group (a terminal's Ctrl-C goes to the
    foreground group only, so the server outlives the Ctrl-C long enough to record how the run ended) and,
    on Linux, killed when bertbuild dies (a SIGKILLed bertbuild leaves no server behind)."""

    def __init__(self, real):
        self._real = real

    def __getattr__(self, name):
        return getattr(self._real, name)

    def Popen(self, *args, **kwargs):  # noqa: N802 - subprocess's name
        # PR_SET_PDEATHSIG fires when the thread that forked exits: fork from one that lasts.
        return _on_lasting_thread(lambda: self._real.Popen(*args, process_group=0, preexec_fn=die_with_parent(),
                                                           **kwargs))


def die_with_parent() -> Callable[[], None] | None:
    """A `preexec_fn` that has the child killed (SIGTERM) when this process dies, even by SIGKILL (Linux's
    PR_SET_PDEATHSIG, which fires when the forking *thread* ends: fork from one that waits for the child or
    outlives it). None where unavailable. libc is looked up here, in the parent: the function run between
    fork and exec only calls it, never imports (another thread may hold the import lock at the fork)."""
    global _prctl
    if _prctl is None:
        try:
            import ctypes

            _prctl = ctypes.CDLL(None, use_errno=True).prctl
        except (OSError, AttributeError):
            _prctl = False
    if not _prctl or not sys.platform.startswith("linux"):
        return None
    prctl = _prctl
    return lambda: prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


_prctl: Any = None
_spawner: "queue.Queue | None" = None


def _on_lasting_thread(call: Callable[[], Any]) -> Any:
    """`call()` on the main thread or on a daemon thread that lives as long as the process."""
    global _spawner
    import queue

    if threading.current_thread() is threading.main_thread():
        return call()
    with _lock:
        if _spawner is None:
            _spawner = queue.Queue()

            def serve(jobs: queue.Queue) -> None:
                while True:
                    job, answer = jobs.get()
                    try:
                        answer.put((True, job()))
                    except BaseException as exc:  # noqa: BLE001 - handed back to the caller
                        answer.put((False, exc))

            threading.Thread(target=serve, args=(_spawner,), name="bertbuild-spawner", daemon=True).start()
    answer: queue.Queue = queue.Queue()
    _spawner.put((call, answer))
    ok, value = answer.get()
    if not ok:
        raise value
    return value


@contextmanager
def server_in_own_group() -> Iterator[None]:
    """While the body runs, Prefect's temporary server (started whenever a flow first needs it) starts in a
    process group of its own."""
    from prefect.server.api import server as api_server

    real = api_server.subprocess
    api_server.subprocess = _OwnGroup(real)
    try:
        yield
    finally:
        api_server.subprocess = real


def temporary_server() -> Any:
    """Prefect's temporary server of this process, if one was started."""
    from prefect.server.api.server import SubprocessASGIServer

    return SubprocessASGIServer._instances.get(None)


def stop_temporary_server(server: Any, grace_s: float = _SERVER_GRACE_S) -> None:
    process = getattr(server, "server_process", None)
    if process is None:
        return
    process.terminate()
    try:
        process.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        process.kill()
    server.server_process = None
    server.running = False


# -- the supervisor --------------------------------------------------------------------------------------------

def supervise(command: Callable[[], int]) -> int:
    """Run `command` (it runs Prefect flows) on a worker thread; return its value or raise its exception here.

    On SIGINT/SIGTERM: the stages in the module docstring, then `os._exit` (never returns).
    """
    global _supervised

    previous = {}
    saved_err = None

    def on_signal(signum, frame):
        global _signal
        if _requested.is_set():  # a second Ctrl-C: stop now
            _exit(_signal or signum, saved_err)
        _signal = signum
        _requested.set()

    for signum in (signal.SIGINT, signal.SIGTERM):
        previous[signum] = signal.signal(signum, on_signal)
    _supervised = True
    try:
        with server_in_own_group():
            outcome: dict[str, Any] = {}
            context = contextvars.copy_context()

            def work() -> None:
                try:
                    outcome["value"] = context.run(command)
                except BaseException as exc:  # noqa: BLE001 - re-raised on the main thread
                    outcome["error"] = exc

            worker = threading.Thread(target=work, name="bertbuild-command", daemon=True)
            worker.start()
            while worker.is_alive() and not _requested.is_set():
                worker.join(0.2)
            if _requested.is_set():
                saved_err = _silence()
                _stop_everything(_signal, temporary_server(), saved_err)
        if "error" in outcome:
            raise outcome["error"]
        return outcome.get("value", 0)
    finally:
        _supervised = False
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _silence() -> int | None:
    """Send this process's stdout and stderr to /dev/null (the abandoned work may still print);
    return a copy of the real stderr for the last line."""
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except Exception:  # noqa: BLE001
        pass
    try:
        saved = os.dup(2)
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, 1)
        os.dup2(null, 2)
        os.close(null)
        return saved
    except OSError:
        return None


def _stop_everything(signum: int, server: Any, saved_err: int | None) -> None:
    """The stages of the module docstring, each bounded; the process exits whatever one of them raises."""
    started = time.monotonic()
    during, marked = running_steps(), []
    try:
        stop_children()
        marked = mark_runs(signum, during)
        what = WORDS.get(signum, "interrupted")
        message = f"{what} ({signal.Signals(signum).name})" + (f" during {', '.join(during)}" if during else "")
        state = end_flow_runs(signum, message)
        for path in marked:  # what became of the flow run, honestly (the server may be gone)
            note = json.loads(path.read_text())
            path.write_text(json.dumps({**note, "flow_run": state,
                                        "seconds_to_stop": round(time.monotonic() - started, 2)}, indent=1) + "\n")
    except BaseException:  # noqa: BLE001 - stopping must not turn into a traceback
        pass
    finally:
        try:
            stop_temporary_server(server)
            remove_scratch()
        finally:
            _exit(signum, saved_err, during, marked)


def _exit(signum: int, saved_err: int | None, during: list[str] | None = None, marked: list[Path] = ()) -> None:
    line = f"bertbuild: {WORDS.get(signum, 'interrupted')}"
    if during:
        line += f" during {', '.join(during)}"
    if marked:
        line += f" (run directory {marked[0].parent} marked {MARKER}; nothing published)"
    try:
        os.write(saved_err if saved_err is not None else 2, (line + "\n").encode())
    except OSError:
        pass
    os._exit(EXIT_CODES.get(signum, 130))


# -- inside a flow ----------------------------------------------------------------------------------------------

@contextmanager
def flow_run_noted(flow_run_id: Any) -> Iterator[None]:
    """The body of a flow: its run is one an interruption ends (`note_run`) until the body returns.

    Without a supervisor (a deployment's run on a worker, cancelled from the UI or stopped: Prefect raises
    TerminationSignal; a flow called in a terminal: KeyboardInterrupt), the exception passes through here:
    the child steps are stopped and the run directory marked, and Prefect's engine then reports the state."""
    note_run(flow_run_id)
    try:
        yield
    except BaseException as exc:
        if _is_interruption(exc):
            signum = int(getattr(exc, "signal", 0) or (signal.SIGINT if isinstance(exc, KeyboardInterrupt)
                                                        else signal.SIGTERM))
            stop_children()
            with _lock:
                during = list(dict.fromkeys([*_unwound, *running_steps()]))
                _unwound.clear()
            mark_runs(signum, during, only=str(flow_run_id),
                      flow_run="left to Prefect's engine: Crashed, or Cancelled for a cancel from the UI")
        raise
    finally:
        with _lock:
            _runs.pop(str(flow_run_id), None)
