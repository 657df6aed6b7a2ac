"""What every backend builds and every judge runs: the `Runner` interface, `Engine`, `Profile`.

A leaf under the backends: scoring, validation, timing and the Triton
configs read runners and engine records without importing any backend.
Public methods of `Runner` are fixed template methods; subclasses implement
the `_impl` hooks. Nothing heavy (TensorFlow, a GPU context) is touched
before `activate`, so runners can be built cheaply and used one at a time.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bertbuild.model.signature import INPUT_NAMES, OUTPUT_NAMES


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


@dataclass(frozen=True)
class Profile:
    """One optimization profile: (batch, seq) at min / opt / max."""

    min: tuple[int, int]
    opt: tuple[int, int]
    max: tuple[int, int]

    def to_json(self) -> dict:
        return {"min": list(self.min), "opt": list(self.opt), "max": list(self.max)}


@dataclass(frozen=True)
class Engine:
    """A built engine: its file, and what it was built from and with."""

    path: Path
    backend: str
    precision: str
    metadata: dict = field(default_factory=dict)

    @property
    def metadata_path(self) -> Path:
        return metadata_path(self.path)

    def save_metadata(self) -> None:
        record = {"backend": self.backend, "precision": self.precision, **self.metadata}
        self.metadata_path.write_text(json.dumps(record, indent=2, default=str) + "\n")


def metadata_path(engine_path: Path | str) -> Path:
    """`<engine file>.json`: where an engine's build record lives."""
    path = Path(engine_path)
    return path.with_name(path.name + ".json")


def read_metadata(engine_path: Path | str) -> dict:
    """The record `Engine.save_metadata` wrote beside an engine file ({} if there is none)."""
    record = metadata_path(engine_path)
    return json.loads(record.read_text()) if record.is_file() else {}


def profiles_from_metadata(metadata: dict) -> list[Profile]:
    return [Profile(tuple(p["min"]), tuple(p["opt"]), tuple(p["max"])) for p in metadata.get("profiles", [])]
