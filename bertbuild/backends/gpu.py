"""What NVIDIA GPU this host has, as nvidia-smi reports it; no CUDA library is loaded to find out."""

from __future__ import annotations

import re
import subprocess


def gpu_info() -> dict:
    """GPU name, compute capability and driver as nvidia-smi reports them ({} without one)."""
    query = "--query-gpu=name,compute_cap,driver_version"
    try:
        out = subprocess.run(["nvidia-smi", query, "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=20, check=True).stdout.strip().splitlines()
    except (OSError, subprocess.SubprocessError):
        return {}
    if not out:
        return {}
    name, capability, driver = (part.strip() for part in out[0].split(","))
    return {"gpu": name, "compute_capability": capability, "driver": driver}


def slug(text: str) -> str:
    """'NVIDIA H100 80GB HBM3' -> 'nvidia-h100-80gb-hbm3': safe in a file name."""
    return re.sub(r"[^a-z0-9.]+", "-", text.lower()).strip("-") or "unknown"
