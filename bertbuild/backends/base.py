"""The interface every backend implements: build engines from ONNX files, load them as runners."""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path

from bertbuild.runner import Engine, Profile, Runner


class Backend(ABC):
    """Builds engines from ONNX files and loads them as runners.

    `available()` must not import the backend's heavy package on a host that
    cannot run it (check that it exists and that a GPU is visible first), so
    the CLI can list backends on any host in an instant.
    """

    name: str = "backend"

    def __init__(self, threads: int | None = None):
        self.threads = threads  # CPU threads where the backend uses them

    @abstractmethod
    def available(self) -> tuple[bool, str]:
        """(True, what will be used, possibly "") or (False, why not, with the fix)."""

    def supports(self, precision: str) -> tuple[bool, str]:
        """Whether this backend computes `precision` on this host: (True, "") or (False, why, in one line)."""
        return True, ""

    @abstractmethod
    def build(self, onnx_path: Path, precision: str, profiles: list[Profile], out_dir: Path,
              float_parts: str | None = None) -> Engine:
        """`float_parts`: an INT8 engine's float precision where the runtime chooses it (OpenVINO); else unused."""

    @abstractmethod
    def load(self, engine_path: Path) -> Runner: ...

    @abstractmethod
    def onnx_runner(self, onnx_path: Path | str, precision: str, float_parts: str | None = None) -> Runner:
        """A runner straight from an ONNX file, computing as this backend's engine of it would.

        The INT8 tune split judges candidate files with it. Backends that must
        compile an engine first (TensorRT) judge on ONNX Runtime's CPU provider.
        """
