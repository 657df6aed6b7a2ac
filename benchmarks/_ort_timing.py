"""What the micro-benchmarks share: an ONNX Runtime CPU session as `bertbuild bench` makes it, and a median timer."""

from __future__ import annotations

import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))


def cpu_session(model, threads: int, profiling: bool = False):
    """A CPU session of `model` (path or serialized bytes) with the engine's options, warnings off."""
    import onnxruntime as ort

    from bertbuild.backends.onnxrt import session_options

    options = session_options(threads)
    options.enable_profiling = profiling
    options.log_severity_level = 3
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def median_seconds(session, feed: dict, budget: float, warmup: int = 3, minimum: int = 5) -> float:
    """Median seconds per `session.run` over at least `minimum` calls and `budget` seconds."""
    for _ in range(warmup):
        session.run(None, feed)
    samples, begin = [], time.perf_counter()
    while len(samples) < minimum or time.perf_counter() - begin < budget:
        start = time.perf_counter()
        session.run(None, feed)
        samples.append(time.perf_counter() - start)
    return float(np.median(samples))
