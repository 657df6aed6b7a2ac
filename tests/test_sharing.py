"""Engines scored side by side split the cores between them, and their waiting threads do not spin."""

from __future__ import annotations

import os

from bertbuild.backends.onnxrt import session_options
from bertbuild.sharing import threads_each


def test_engines_side_by_side_get_a_share_of_the_cores_each():
    assert threads_each(None, 4, cores=2) == 1
    assert threads_each(None, 2, cores=16) == 8
    assert threads_each(None, 1, cores=16) is None  # alone: every core, as ONNX Runtime's default
    assert threads_each(3, 4, cores=2) == 3  # engines.threads, when set, is the user's choice


def test_a_session_with_a_share_of_the_cores_does_not_spin_and_one_with_all_does():
    cores = os.cpu_count() or 1
    alone = session_options(None)
    assert alone.intra_op_num_threads == cores
    assert _spinning(alone)
    if cores > 1:
        shared = session_options(max(1, cores // 2))
        assert not _spinning(shared)


def _spinning(options) -> bool:
    try:
        return options.get_session_config_entry("session.intra_op.allow_spinning") != "0"
    except RuntimeError:  # never set: ONNX Runtime's default, spinning on
        return True
