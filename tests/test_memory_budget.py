"""The memory check before a build: estimated from bert_config.json, refused in one line when it cannot fit."""

from __future__ import annotations

import pytest

from bertbuild.errors import NotEnoughMemory
from bertbuild.memory_budget import GiB, check_memory, estimate
from bertbuild.model.random_checkpoint import ngc_config


def test_parameter_counts_of_the_seed_shapes():
    base, large = estimate(ngc_config("base")), estimate(ngc_config("large"))
    # BERT-base and BERT-large with the SQuAD head and no pooler: 108.9M and 334.1M parameters.
    assert round(base.parameters / 1e6, 1) == 108.9 and round(large.parameters / 1e6, 1) == 334.1
    assert base.weight_bytes == 4 * base.parameters
    assert base.peak_bytes < large.peak_bytes < 12 * GiB


def test_refuses_in_one_line_naming_need_availability_and_override():
    config = ngc_config("large")
    with pytest.raises(NotEnoughMemory) as caught:
        check_memory(config, "ngc://nvidia/bert-large", available=4 * GiB)
    message = str(caught.value)
    assert message.startswith("ngc://nvidia/bert-large: this build needs about ")
    assert "334M parameters" in message and "4.0 GiB available" in message
    assert "--set resources.check_memory=false" in message and "\n" not in message
    assert check_memory(config, "x", available=64 * GiB).peak_bytes == estimate(config).peak_bytes


def test_cli_exits_2_before_any_work_and_the_override_skips_the_check(monkeypatch, tmp_path, capsys):
    from bertbuild import memory_budget
    from bertbuild.cli import main

    monkeypatch.setattr(memory_budget, "available_bytes", lambda: 2**20)  # a host with 1 MiB free
    args = ["run", "--config", "configs/generated-tiny.yaml", "--set", f"output_dir={tmp_path}"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("bertbuild: error: generated:tiny: this build needs about") and "\n" not in err
    assert not any(tmp_path.iterdir())  # refused before the flow made a run directory


def test_small_models_score_every_engine_at_once_big_ones_one_at_a_time_unless_told():
    from bertbuild.memory_budget import engine_groups

    four = ("fp32", "fused-fp32", "fp16", "int8")
    minilm, base = 87 * 2**20, estimate(ngc_config("base")).weight_bytes
    assert engine_groups(four, None, minilm) == [four]
    assert engine_groups(four, None, base) == [("fp32",), ("fused-fp32",), ("fp16",), ("int8",)]
    assert engine_groups(four, 3, base) == [("fp32", "fused-fp32", "fp16"), ("int8",)]
