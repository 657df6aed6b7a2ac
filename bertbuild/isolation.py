"""Run one heavy step in a fresh Python process, and say how it ended and what memory it took.

Why a child process: TensorFlow keeps what it allocates (its allocator and
graph caches never return memory to the OS), so the export and the TensorFlow
reference would leave gigabytes in the flow process for every later step. In
a child, the memory goes back when it exits, and when the OS kills it for
want of memory the flow survives to report which step died, at what peak,
instead of vanishing with signal 9.

The call is `module:function` with JSON keyword arguments; the child writes
its JSON result (or its error) to a file. Lines it prints starting with
`LOG_PREFIX` are progress, forwarded to the caller's logger; anything else
(TensorFlow's chatter) is kept only as the tail shown if the step fails.
"""

from __future__ import annotations

import collections
import importlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from bertbuild import interrupts
from bertbuild.errors import BertbuildError, StepFailed

LOG_PREFIX = "bertbuild-step: "
_TAIL_LINES = 20


@dataclass(frozen=True)
class ChildResult:
    value: dict
    seconds: float
    peak_rss_bytes: int  # the child's own high-water mark (its VmHWM at exit)


def child_log(message: str) -> None:
    """Progress from inside a child step: forwarded to the parent's logger."""
    print(LOG_PREFIX + message, flush=True)


def run_in_child(step: str, target: str, kwargs: dict, log: Callable[[str], None] | None = None,
                 hint: str = "") -> ChildResult:
    """`target(**kwargs)` in a new interpreter; its result, wall time and peak RSS.

    A `BertbuildError` raised in the child is raised here with its class and
    message (a user mistake stays one line); a crash or a kill becomes
    `StepFailed` naming the step, how it ended, its peak memory and `hint`.
    """
    log = log or (lambda message: None)
    with tempfile.TemporaryDirectory(prefix=f"bertbuild-{step}-") as tmp:
        call, answer = Path(tmp) / "call.json", Path(tmp) / "result.json"
        call.write_text(json.dumps({"target": target, "kwargs": kwargs}))
        start = time.perf_counter()
        process = subprocess.Popen([sys.executable, "-m", "bertbuild.isolation", str(call), str(answer)],
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
                                   preexec_fn=interrupts.die_with_parent())  # this thread waits for it
        interrupts.register_child(process)  # Ctrl-C or SIGTERM stops it (bertbuild/interrupts.py)
        tail: collections.deque[str] = collections.deque(maxlen=_TAIL_LINES)
        try:
            for line in process.stdout:
                line = line.rstrip("\n")
                if line.startswith(LOG_PREFIX):
                    log(line[len(LOG_PREFIX):])
                elif line.strip():
                    tail.append(line)
            process.stdout.close()
            # wait4, not wait: it returns this child's own rusage, so its peak RSS is its alone.
            _, status, usage = os.wait4(process.pid, 0)
        except BaseException:  # KeyboardInterrupt, Prefect's TerminationSignal: the child must not outlive this
            _stop(process)
            raise
        finally:
            interrupts.unregister_child(process)
        process.returncode = code = os.waitstatus_to_exitcode(status)
        if interrupts.interrupted_while_waiting(code):
            interrupts.park()  # the supervisor is stopping the command: no failure to report, no traceback
        seconds = time.perf_counter() - start
        outcome = json.loads(answer.read_text()) if answer.is_file() else None
        # The child's own VmHWM at exit is its true peak. wait4's ru_maxrss is the fallback for a killed
        # child: it also counts the pages of this (forking) process before exec, so it can only overstate.
        peak = (outcome or {}).get("peak_rss_bytes") or usage.ru_maxrss * 1024
    if code == 0 and outcome and "value" in outcome:
        return ChildResult(outcome["value"], seconds, peak)
    if outcome and "error" in outcome:
        error = outcome["error"]
        if error.get("user_facing"):
            raise _user_error(error["type"], error["message"])
        for line in error.get("traceback", "").splitlines()[-_TAIL_LINES:]:
            log(line)
        raise StepFailed(f"{step} failed in its child process after {seconds:.0f} s at {peak / 2**30:.1f} GiB "
                         f"peak RSS: {error['message']}")
    for line in tail:
        log(line)
    ended = _describe_exit(code)
    raise StepFailed(f"{step} was {ended} after {seconds:.0f} s at {peak / 2**30:.1f} GiB peak RSS"
                     + (f"; {hint}" if hint else ""))


def _stop(process: subprocess.Popen, grace_s: float = 1.0) -> None:
    """SIGTERM, then SIGKILL after `grace_s`; reaped either way."""
    for send, wait in ((process.terminate, grace_s), (process.kill, None)):
        try:
            send()
            process.wait(timeout=wait)
            return
        except ProcessLookupError:
            return
        except subprocess.TimeoutExpired:
            continue
        except ChildProcessError:  # already reaped
            return


def _describe_exit(code: int) -> str:
    if code < 0:
        name = signal.Signals(-code).name
        why = " (the kernel's out-of-memory killer sends this)" if -code == signal.SIGKILL else ""
        return f"killed by signal {-code} ({name}{why})"
    return f"ended with exit code {code} and no result"


def _user_error(type_name: str, message: str) -> BertbuildError:
    from bertbuild import errors

    cls = getattr(errors, type_name, None)
    if not (isinstance(cls, type) and issubclass(cls, BertbuildError)):
        cls = BertbuildError
    try:
        return cls(message)
    except TypeError:  # a subclass with extra required arguments
        return BertbuildError(message)


def _child_main(call_path: str, answer_path: str) -> int:
    call = json.loads(Path(call_path).read_text())
    module, _, name = call["target"].partition(":")
    try:
        value = getattr(importlib.import_module(module), name)(**call["kwargs"])
        result = {"value": value}
        code = 0
    except BertbuildError as exc:
        result = {"error": {"type": type(exc).__name__, "message": str(exc), "user_facing": True}}
        code = 3
    except Exception as exc:  # noqa: BLE001 - reported to the parent with its traceback
        result = {"error": {"type": type(exc).__name__, "message": f"{type(exc).__name__}: {exc}",
                            "traceback": traceback.format_exc()}}
        code = 4
    from bertbuild.resources import high_water_bytes

    result["peak_rss_bytes"] = high_water_bytes()
    Path(answer_path).write_text(json.dumps(result, default=str))
    return code


if __name__ == "__main__":
    sys.exit(_child_main(sys.argv[1], sys.argv[2]))
