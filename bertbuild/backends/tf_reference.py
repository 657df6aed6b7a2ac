"""The FP32 TensorFlow reference: the checkpoint's graph run eagerly-compiled in TF."""

from __future__ import annotations

import numpy as np

from bertbuild.backends.base import Runner
from bertbuild.model.checkpoint import Checkpoint


class TensorFlowRunner(Runner):
    """Runs `modeling.inference_function` over the checkpoint's weights."""

    name = "tensorflow-fp32"

    def __init__(self, checkpoint: Checkpoint):
        super().__init__()
        self.checkpoint = checkpoint
        self._function = None

    def _activate_impl(self) -> None:
        from bertbuild.model.bert_graph import inference_function

        self._function = inference_function(self.checkpoint.weights, self.checkpoint.config)

    def _infer_impl(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        outputs = self._function(**feed)
        return {name: value.numpy() for name, value in outputs.items()}

    def _deactivate_impl(self) -> None:
        self._function = None
