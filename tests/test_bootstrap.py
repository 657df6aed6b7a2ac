"""Paired bootstrap intervals for ΔEM / ΔF1: hand-computable cases, 1/sqrt(n) scaling, determinism."""

from __future__ import annotations

import numpy as np
import pytest

from bertbuild.evaluation.bootstrap import paired_bootstrap


def _scores(f1_values, em_values=None):
    em_values = f1_values if em_values is None else em_values
    return {f"q{i}": (float(em), float(f1)) for i, (em, f1) in enumerate(zip(em_values, f1_values))}


def test_two_questions_one_flipped_by_hand():
    # Differences 0 and +100 points. Resampling two questions gives a mean of
    # 0, 50 or 100 with probability 1/4, 1/2, 1/4: the 95 % interval is [0, 100],
    # and the bootstrap standard error is sqrt(100^2 / 4 / 2) = 35.36.
    result = paired_bootstrap(_scores([0, 0]), _scores([0, 1]), resamples=4000, seed=3)
    f1 = result["f1"]
    assert f1.delta == pytest.approx(50.0) and (f1.low, f1.high) == (0.0, 100.0)
    assert f1.standard_error == pytest.approx(35.36, rel=0.05)
    assert f1.questions == 2 and f1.resamples == 4000 and f1.seed == 3


def test_identical_differences_give_a_zero_width_interval():
    reference = _scores([1, 0, 1, 0.5])
    candidate = _scores([0.75, -0.25, 0.75, 0.25])  # every question 25 points lower
    interval = paired_bootstrap(reference, candidate)["f1"]
    assert interval.delta == interval.low == interval.high == pytest.approx(-25.0)
    assert interval.value("point") == interval.value("lower") == pytest.approx(-25.0)


def test_width_shrinks_like_one_over_sqrt_n():
    rng = np.random.default_rng(7)

    def pair(n):
        reference = rng.random(n)
        candidate = np.where(rng.random(n) < 0.1, rng.random(n), reference)  # 10 % of answers change
        return _scores(reference), _scores(candidate), 100 * (candidate - reference)

    widths, predicted = [], []
    for n in (500, 2000, 8000):
        reference, candidate, differences = pair(n)
        interval = paired_bootstrap(reference, candidate, resamples=2000)["f1"]
        assert interval.low < interval.delta < interval.high
        widths.append(interval.high - interval.low)
        predicted.append(2 * 1.96 * differences.std() / np.sqrt(n))  # the normal approximation
    assert widths[0] / widths[1] == pytest.approx(2.0, rel=0.15)
    assert widths[1] / widths[2] == pytest.approx(2.0, rel=0.15)
    assert widths == pytest.approx(predicted, rel=0.1)


def test_fixed_seed_is_reproducible_and_em_is_separate():
    reference, candidate = _scores([1, 0.5, 0, 1], [1, 0, 0, 1]), _scores([1, 1, 0, 0.5], [1, 1, 0, 0])
    first, again = paired_bootstrap(reference, candidate), paired_bootstrap(reference, candidate)
    assert first == again
    assert first["exact_match"].delta == pytest.approx(0.0) and first["f1"].delta == pytest.approx(0.0)
    assert first["exact_match"].to_json()["metric"] == "exact_match"
    other = paired_bootstrap(reference, candidate, seed=1)["exact_match"]
    assert other.delta == first["exact_match"].delta


def test_unpaired_questions_are_refused():
    with pytest.raises(ValueError, match="same questions"):
        paired_bootstrap({"a": (1, 1)}, {"b": (1, 1)})
    with pytest.raises(ValueError, match="at least one"):
        paired_bootstrap({}, {})
