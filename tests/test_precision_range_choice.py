"""Calibration method per tensor ("auto"): each tensor gets the threshold its MatMuls are least hurt by."""

from __future__ import annotations

import pytest

from bertbuild.precision.calibration import calibrate
from bertbuild.precision.calibration_set import calibration_set
from bertbuild.config.precision import Int8Config
from bertbuild.precision.range_choice import CANDIDATES, CHOICE_BATCHES
from bertbuild.precision.ranges import load_calibration
from bertbuild.precision.sensitivity import rank_sensitivity

CFG = Int8Config(samples=32, max_seq_length=128, batch_size=8).plain()


@pytest.fixture(scope="module")
def samples(vocab_path):
    return calibration_set(CFG, vocab_path, lower_case=True)


def _total_error(path, calibration, samples):
    ranked = rank_sensitivity(path, calibration, samples, "u8s8", batches=CHOICE_BATCHES, batch_size=CFG.batch_size)
    return sum(s.noise_to_signal for s in ranked)


def test_auto_records_a_choice_per_tensor_and_beats_every_single_method(tiny_onnx, samples, tmp_path):
    auto = calibrate(tiny_onnx["fused"], samples, CFG.model_copy(update={"method": "auto"}), out_dir=tmp_path)
    chosen = auto.params["chosen"]
    assert set(chosen) == {t["activation"] for t in auto.targets} and set(chosen.values()) <= set(CANDIDATES)
    assert auto.method == "auto" and load_calibration(auto.cache_path).params["chosen"] == chosen
    error = _total_error(tiny_onnx["fused"], auto, samples)
    for method in ("minmax", "entropy", "percentile"):
        fixed = calibrate(tiny_onnx["fused"], samples, CFG.model_copy(update={"method": method}))
        assert error <= _total_error(tiny_onnx["fused"], fixed, samples) * (1 + 1e-9), method
