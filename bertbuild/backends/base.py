"""The runner interface every backend implements.

Public methods are fixed template methods; subclasses implement the `_impl`
hooks. Nothing heavy (TensorFlow, a GPU context) is touched before
`activate`, so runners can be built cheaply and used one at a time.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

from bertbuild.modeling_io import INPUT_NAMES, OUTPUT_NAMES


class Runner(ABC):
    """Runs the QA model: feed {input_ids, segment_ids, input_mask} -> logits."""

    name: str = "runner"

    def __init__(self) -> None:
        self.is_active = False

    def activate(self) -> "Runner":
        if not self.is_active:
            self._activate_impl()
            self.is_active = True
        return self

    def infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if not self.is_active:
            raise RuntimeError(f"{self.name}: infer() called before activate()")
        missing = [n for n in INPUT_NAMES if n not in feed]
        if missing:
            raise ValueError(f"{self.name}: feed is missing {missing}")
        outputs = self._infer_impl({n: np.asarray(feed[n], dtype=np.int32) for n in INPUT_NAMES})
        return {n: np.asarray(outputs[n], dtype=np.float32) for n in OUTPUT_NAMES}

    def deactivate(self) -> None:
        if self.is_active:
            self._deactivate_impl()
            self.is_active = False

    def __enter__(self) -> "Runner":
        return self.activate()

    def __exit__(self, *exc) -> None:
        self.deactivate()

    @abstractmethod
    def _activate_impl(self) -> None: ...

    @abstractmethod
    def _infer_impl(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...

    def _deactivate_impl(self) -> None:
        pass
