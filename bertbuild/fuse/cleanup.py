"""Identity and no-op Slice removal (run by `run_passes` after the fusion passes).

Before::                                 After::

    a ─ Identity ─ b ─ reader              a ─ reader
    a ─ Slice(0 .. >=1e9, step 1) ─ b    (TF's `x[:, None, None, :]` becomes such a Slice)

When b is a graph output, the node producing a writes b directly instead, so
output names never change. A node reading a graph input and writing a graph
output is kept (there is nothing to rename).
"""

from __future__ import annotations

import logging

import numpy as np
import onnx_graphsurgeon as gs

from bertbuild.fuse import match as m

log = logging.getLogger(__name__)
_TO_THE_END = 10**9  # tf2onnx writes "to the end" as 1e9 (or INT_MAX); no real axis is this long


def _is_noop(node) -> bool:
    if node.op == "Identity":
        return True
    if node.op != "Slice" or len(node.inputs) < 3:
        return False
    starts, ends = m.const(node.inputs[1]), m.const(node.inputs[2])
    steps = m.const(node.inputs[4]) if len(node.inputs) > 4 else np.ones(1)
    if starts is None or ends is None or steps is None:
        return False
    return bool(np.all(starts == 0) and np.all(ends >= _TO_THE_END) and np.all(steps == 1))


def remove_noops(graph: gs.Graph) -> int:
    """Bypass Identity nodes and Slices that keep everything; returns how many were removed."""
    removed = 0
    for node in [n for n in graph.nodes if _is_noop(n)]:
        a, b = node.inputs[0], node.outputs[0]
        if b in graph.outputs:
            if a in graph.inputs or a in graph.outputs or len(a.inputs) != 1:
                log.debug("noop %s: kept (graph input -> graph output)", node.name)
                continue
            source = a.inputs[0]
            source.outputs[source.outputs.index(a)] = b
            for reader in [r for r in a.outputs if r is not node]:
                reader.inputs[reader.inputs.index(a)] = b
        else:
            for reader in list(b.outputs):
                reader.inputs[reader.inputs.index(b)] = a
        node.inputs.clear()
        node.outputs.clear()
        removed += 1
    return removed
