"""This machine's GPUs (the one nvidia-smi probe), and the *kind* of a host.

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

import re
import shutil
import subprocess

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

    `hardware`: a `manifest.hardware()` record, this host's or one read from a store (untrusted:
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
