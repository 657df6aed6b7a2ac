"""Shared fixtures. Prefect gets a throwaway home and no telemetry (no network here)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

# Must happen before anything imports prefect.
os.environ["PREFECT_HOME"] = tempfile.mkdtemp(prefix="bertbuild-prefect-")
os.environ["DO_NOT_TRACK"] = "1"
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402

PROJECT_ROOT = Path(__file__).resolve().parent.parent
VOCAB = PROJECT_ROOT / "data" / "vocab-uncased.txt"


@pytest.fixture(scope="session")
def vocab_path() -> Path:
    return VOCAB


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A 2-layer random-weight QA checkpoint in the exact Google layout (adam slots, global_step)."""
    from bertbuild.synthetic import write_random_checkpoint

    return write_random_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny", VOCAB, layers=2, step=1000)


@pytest.fixture(scope="session")
def prefect_harness():
    """One throwaway Prefect API for every flow test (starting one takes seconds)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness():
        yield
