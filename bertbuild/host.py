"""This machine: its hardware, its GPUs (the one nvidia-smi probe), its library versions, and the *kind* of a host.

The one home of host facts: the manifest records `hardware()` and
`package_versions()`, the step cache keys each step on the versions of the
libraries it names (`library_version`), `bertbuild doctor` compares installed
versions with the lock through the same reader, and every timing carries
`machine_note()`.

The host kind (CPU model, core count, GPU names) is what decides whether a
timing or an engine made on one machine says anything about another: the
step cache keys host-bound steps by it (`bertbuild.step_cache`), and the
regression check compares latency only between runs of the same kind
(`bertbuild.artifacts.regression`).

No CUDA library is loaded to find the GPUs: `nvidia-smi` answers in
milliseconds, works without a CUDA toolkit, and its absence simply means
no usable NVIDIA GPU.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import re
import shutil
import subprocess
from functools import lru_cache
from pathlib import Path

# compute_cap needs a driver from 2022 (510) or later; TensorRT 10 needs a newer one still.
_QUERY = "--query-gpu=name,compute_cap,memory.total,driver_version"


def gpus() -> list[dict]:
    """Every NVIDIA GPU as nvidia-smi reports it: {"name", "compute_capability", "memory_bytes", "driver"}.

    [] without nvidia-smi, without a GPU, or on any error (a host without a GPU is not a failure).
    """
    exe = shutil.which("nvidia-smi")
    if not exe:
        return []
    try:
        out = subprocess.run([exe, _QUERY, "--format=csv,noheader,nounits"], capture_output=True, text=True,
                             timeout=20, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    found = []
    for line in out.strip().splitlines():
        parts = [part.strip() for part in line.split(",")]
        if len(parts) != 4:
            continue
        name, capability, memory, driver = parts
        try:
            memory_bytes = int(float(memory)) * 1024 * 1024  # MiB, with nounits
        except ValueError:
            memory_bytes = None
        found.append({"name": name, "compute_capability": capability, "memory_bytes": memory_bytes,
                      "driver": driver})
    return found


def gpu_info() -> dict:
    """The first GPU as the backends report it: {"gpu", "compute_capability", "driver"}; {} without one."""
    found = gpus()
    if not found:
        return {}
    first = found[0]
    return {"gpu": first["name"], "compute_capability": first["compute_capability"], "driver": first["driver"]}


def host_kind(hardware: object) -> dict:
    """What decides whether two timings or engines are comparable: CPU model, core count, GPU names.

    `hardware`: a `hardware()` record, this host's or one read from a store (untrusted:
    anything malformed reads as unknown rather than failing).
    """
    hw = hardware if isinstance(hardware, dict) else {}
    found = hw.get("gpus") if isinstance(hw.get("gpus"), list) else []
    return {"cpu": str(hw.get("cpu") or "unknown"), "cores": hw.get("cores"),
            "gpus": sorted(str(g.get("name")) for g in found if isinstance(g, dict))}


def describe_host(kind: dict) -> str:
    """A host kind in words: 'Xeon, 16 cores, NVIDIA H100'."""
    names = ", ".join(kind["gpus"]) or "no GPU"
    return f"{kind['cpu']}, {kind['cores']} cores, {names}"


def slug(text: str) -> str:
    """'NVIDIA H100 80GB HBM3' -> 'nvidia-h100-80gb-hbm3': safe in a file name."""
    return re.sub(r"[^a-z0-9.]+", "-", text.lower()).strip("-") or "unknown"


# Import name -> distributions that provide it, first installed one wins.
PACKAGES: dict[str, tuple[str, ...]] = {
    "tensorflow": ("tensorflow", "tensorflow-cpu", "tensorflow-gpu", "tensorflow-intel",
                   "tensorflow-macos", "tf-nightly"),
    "tf2onnx": ("tf2onnx",),
    "onnx": ("onnx",),
    "onnxruntime": ("onnxruntime", "onnxruntime-gpu", "onnxruntime-openvino"),
    "openvino": ("openvino",),
    "polygraphy": ("polygraphy",),
    "tensorrt": ("tensorrt", "tensorrt-cu13", "tensorrt-cu12", "tensorrt-cu11"),
    "numpy": ("numpy",),
    "onnx-graphsurgeon": ("onnx-graphsurgeon", "onnx_graphsurgeon"),
    "tokenizers": ("tokenizers",),
    "ml-dtypes": ("ml-dtypes", "ml_dtypes"),
    "prefect": ("prefect",),
    "bertbuild": ("bertbuild",),
}

def distribution_version(dist: str) -> str | None:
    """The installed version of one distribution (`pip`'s name), None where it is absent."""
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


@lru_cache(maxsize=None)
def library_version(name: str) -> str | None:
    """The installed version of library `name` (a key of PACKAGES: the first of its distributions installed)."""
    return next((v for dist in PACKAGES.get(name, (name,)) if (v := distribution_version(dist)) is not None), None)


def package_versions() -> dict[str, str | None]:
    """Installed versions of the toolchain, None where a package is absent."""
    return {**{name: library_version(name) for name in PACKAGES}, "python": platform.python_version()}


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            if line.lower().startswith(("model name", "hardware", "cpu model")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _ram_bytes() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def _gpus() -> list[dict]:
    """GPUs as nvidia-smi reports them; [] without nvidia-smi or on any error."""
    return [{"name": g["name"], "memory_bytes": g["memory_bytes"], "driver": g["driver"]} for g in gpus()]


@lru_cache(maxsize=1)
def hardware() -> dict:
    """CPU model, cores, RAM, platform, and GPUs (via nvidia-smi when present)."""
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "ram_bytes": _ram_bytes(),
        "platform": platform.platform(),
        "gpus": _gpus(),
    }


def machine_note() -> str:
    """CPU count and load, so a reader can tell a disturbed measurement from a clean one."""
    cpus = os.cpu_count() or 1
    try:
        load = os.getloadavg()[0]
    except OSError:  # not available on every platform
        return f"{cpus} CPUs"
    busy = " (busy: other work is competing, timings are disturbed)" if load > 0.5 * cpus else ""
    return f"{cpus} CPUs, 1-min load {load:.2f}{busy}"
