"""One GPU probe and one host kind: the backends, the manifest and the step cache all read them from bertbuild.host."""

from __future__ import annotations

import stat

import pytest

from bertbuild import host
from bertbuild.step_cache import step_key

SMI_LINES = "NVIDIA H100 80GB HBM3, 9.0, 81559, 550.54.15\nNVIDIA A10, 8.6, 23028, 550.54.15\n"


def _fake_smi(tmp_path, monkeypatch, body: str):
    """An `nvidia-smi` on an otherwise empty PATH; it records its arguments in calls.txt."""
    folder = tmp_path / "bin"
    folder.mkdir()
    script = folder / "nvidia-smi"
    script.write_text(f'#!/bin/sh\necho "$@" >> {tmp_path / "calls.txt"}\n{body}\n')
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", str(folder))
    return tmp_path / "calls.txt"


def test_every_gpu_from_one_query_and_each_caller_reads_that_probe(tmp_path, monkeypatch):
    calls = _fake_smi(tmp_path, monkeypatch, f"printf '{SMI_LINES}'")
    assert host.gpus() == [
        {"name": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0", "memory_bytes": 81559 << 20,
         "driver": "550.54.15"},
        {"name": "NVIDIA A10", "compute_capability": "8.6", "memory_bytes": 23028 << 20, "driver": "550.54.15"},
    ]
    assert host.gpu_info() == {"gpu": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0", "driver": "550.54.15"}
    # The hardware record (the manifest's) keeps its own shape (name, memory, driver) but asks the same probe.
    assert host._gpus() == [{"name": "NVIDIA H100 80GB HBM3", "memory_bytes": 81559 << 20, "driver": "550.54.15"},
                                {"name": "NVIDIA A10", "memory_bytes": 23028 << 20, "driver": "550.54.15"}]
    queries = calls.read_text().splitlines()
    assert len(queries) == 3 and len(set(queries)) == 1
    assert "--query-gpu=name,compute_cap,memory.total,driver_version" in queries[0]


@pytest.mark.parametrize("body", [None, "exit 9", "echo 'garbled'"])
def test_no_gpu_without_nvidia_smi_when_it_fails_or_says_nonsense(tmp_path, monkeypatch, body):
    if body is None:
        monkeypatch.setenv("PATH", str(tmp_path))  # nothing there
    else:
        _fake_smi(tmp_path, monkeypatch, body)
    assert host.gpus() == [] and host.gpu_info() == {} and host._gpus() == []


def test_host_kind_in_words():
    kind = host.host_kind({"cpu": "Xeon", "cores": 16, "gpus": [{"name": "B"}, {"name": "A"}]})
    assert host.describe_host(kind) == "Xeon, 16 cores, A, B"
    assert host.describe_host(host.host_kind({"cpu": "Xeon", "cores": 4, "gpus": []})) == "Xeon, 4 cores, no GPU"


def test_host_bound_step_keys_follow_the_same_host_kind(monkeypatch):
    h100 = {"cpu": "Xeon", "cores": 16, "ram_bytes": 1, "gpus": [{"name": "NVIDIA H100", "driver": "1"}]}

    def key(hardware: dict) -> str:
        monkeypatch.setattr(host, "hardware", lambda: hardware)
        return step_key("benchmark", fields={"batch": 1}, host=True)

    assert key(h100) == key({**h100, "ram_bytes": 2, "gpus": [{"name": "NVIDIA H100", "driver": "2"}]})
    assert key(h100) != key({**h100, "gpus": [{"name": "NVIDIA H200", "driver": "1"}]})
    assert key(h100) != key({**h100, "cores": 8})

