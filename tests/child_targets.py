"""Functions the child-process tests run in a fresh interpreter (imported there by module name)."""

import os
import signal

import numpy as np


def add(a: int, b: int) -> dict:
    return {"sum": a + b}


def hold_memory(mib: int) -> dict:
    """Touch `mib` MiB (every page written), so the child's peak RSS must exceed it."""
    block = np.ones(mib * 2**20, dtype=np.uint8)
    return {"held": int(block.sum())}


def refuse(path: str) -> dict:
    from bertbuild.errors import CheckpointError

    raise CheckpointError(f"{path}: missing variable 'cls/squad/output_bias'")


def crash() -> dict:
    return {"value": 1 / 0}


def killed(**_kwargs) -> dict:
    """Die the way the kernel's OOM killer ends a process, after saying something and taking some memory."""
    from bertbuild.isolation import child_log

    child_log("about to be killed")
    block = np.ones(64 * 2**20, dtype=np.uint8)  # noqa: F841 - held until the kill
    os.kill(os.getpid(), signal.SIGKILL)
    return {}


def slow(**_kwargs) -> dict:
    """A step that takes long enough to be interrupted (says so first)."""
    import time

    from bertbuild.isolation import child_log

    child_log("working slowly")
    time.sleep(120)
    return {}
