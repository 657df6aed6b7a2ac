"""How engines scored side by side share the host's cores.

ONNX Runtime gives each session as many intra-op threads as the host has
cores, and those threads spin while they wait for work. Four sessions scoring
at once on two cores then run eight spinning threads: most of the CPU time
goes to spinning and switching, not to inference (the nightly's scoring took
2,464 CPU-seconds in 1,474 s of wall time that way). A session given a share
of the cores instead gets that many threads and does not spin
(`backends.onnxrt.session_options`).
"""

from __future__ import annotations

import os


def threads_each(threads: int | None, at_once: int, cores: int | None = None) -> int | None:
    """Intra-op threads per engine when `at_once` engines run together; None (all cores) for one alone.

    `threads` set by the user (`engines.threads`) is kept as it is.
    """
    if threads is not None or at_once <= 1:
        return threads
    return max(1, (cores or os.cpu_count() or 1) // at_once)
