"""How a build-bert run ends: Completed with its results, or Failed naming every failed gate.

Publishing itself is the `publish-run` task (`bertbuild.tasks.publish.publish_run`).
"""

from __future__ import annotations

from pathlib import Path

from prefect.states import Failed, State

from bertbuild.errors import GateFailed
from bertbuild.evaluation.gates import enforce


def outcome(result: dict, report: Path) -> dict | State:
    """`result`, or a Failed state carrying `GateFailed` (naming every failed gate) when a gate failed.

    A failed gate is a verdict, not a crash: returned as a state, it ends the
    run Failed without Prefect logging a traceback, and a caller of the flow
    still gets `GateFailed` raised (`bertbuild run` prints it and exits 1).
    """
    try:
        enforce(result["gates"], report=str(report))
    except GateFailed as failed:
        return Failed(message=str(failed), data=failed)
    return result
