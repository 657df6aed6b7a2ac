"""The FP32 TensorFlow reference as a runner: the checkpoint's graph run eagerly-compiled in TF.

Scoring it is `bertbuild.evaluation.reference`, run in a child process.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bertbuild.runner import Runner
from bertbuild.model.checkpoint import CheckpointInfo


class _StreamedWeights:
    """The checkpoint's weights read one tensor at a time, so building the TF constants holds one extra copy at most."""

    def __init__(self, info: CheckpointInfo):
        from bertbuild.model.checkpoint import expected_shapes, open_reader

        self._names = list(expected_shapes(info.config))
        self._reader = open_reader(info.prefix)

    def items(self):
        for name in self._names:
            yield name, np.asarray(self._reader.get_tensor(name), dtype=np.float32)


class TensorFlowRunner(Runner):
    """Runs `bert_graph.inference_function` over the checkpoint's weights (loaded, or read from its files)."""

    name = "tensorflow-fp32"

    def __init__(self, checkpoint: CheckpointInfo):
        super().__init__()
        self.checkpoint = checkpoint
        self._function = None

    def _activate_impl(self) -> None:
        from bertbuild.model.bert_graph import inference_function

        weights = getattr(self.checkpoint, "weights", None) or _StreamedWeights(self.checkpoint)
        self._function = inference_function(weights, self.checkpoint.config)

    def _infer_impl(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        outputs = self._function(**feed)
        return {name: value.numpy() for name, value in outputs.items()}

    def _deactivate_impl(self) -> None:
        self._function = None
