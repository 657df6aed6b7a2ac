"""The tune split (train half, seeded, calibration questions left out) and its FP32-agreement signals."""

from __future__ import annotations

import numpy as np
import pytest

from bertbuild.evaluation.tune_split import TuneSignal, closest_to_fp32, compare, tune_set, window_kl


@pytest.fixture(scope="module")
def tune(vocab_path):
    return tune_set("bundled", vocab_path, True, questions=12, seed=1, max_seq_length=128)


def test_tune_set_is_train_half_seeded_and_leaves_out_calibration_questions(tune, vocab_path):
    from bertbuild.squad import data

    train, heldout = data.split_by_article(data.load_dataset())
    train_ids, heldout_ids = {e.qid for e in data.examples_from(train)}, {e.qid for e in data.examples_from(heldout)}
    assert len(tune.examples) == 12 and set(tune.question_ids) <= train_ids
    assert not set(tune.question_ids) & heldout_ids
    # Every window of every chosen question is there (so answers can be post-processed).
    assert sorted(set(tune.features.example_index.tolist())) == list(range(12))
    again = tune_set("bundled", vocab_path, True, questions=12, seed=1, max_seq_length=128)
    assert again.question_ids == tune.question_ids
    excluded = tune_set("bundled", vocab_path, True, questions=12, seed=1, max_seq_length=128,
                        exclude=set(tune.question_ids[:5]))
    assert not set(excluded.question_ids) & set(tune.question_ids[:5])
    assert tune_set("bundled", vocab_path, True, questions=12, seed=2, max_seq_length=128).question_ids != \
        tune.question_ids


def test_window_kl_by_hand_ignores_padding():
    # p = (1/4, 3/4), q = (3/4, 1/4): KL = ln(1/3) / 4 + 3 ln(3) / 4 = ln(3) / 2. The third
    # position is padding (mask 0): its wildly different logits must not count.
    mask = np.array([[True, True, False]])
    kl = window_kl(np.array([[0.0, np.log(3.0), 50.0]]), np.array([[np.log(3.0), 0.0, -80.0]]), mask)
    assert kl == pytest.approx([np.log(3.0) / 2])
    assert window_kl(np.array([[1.0, 2.0, 3.0]]), np.array([[1.0, 2.0, -9.0]]), mask) == pytest.approx([0.0])


def test_compare_on_real_windows(tune):
    rng = np.random.default_rng(0)
    shape = tune.features.input_ids.shape
    reference = (rng.normal(size=shape), rng.normal(size=shape))
    same = compare(tune, reference, reference)
    assert same.kl == 0 and same.answer_agreement == 1 and same.start_agreement == 1 and same.max_abs_dlogit == 0
    assert same.questions == 12 and same.windows == len(tune)
    padding = ~tune.features.input_mask.astype(bool)
    noisy_padding = tuple(np.where(padding, -1e3, logits) for logits in reference)
    assert compare(tune, reference, noisy_padding).max_abs_dlogit == 0  # padding is not a difference
    shifted = (reference[0] + rng.normal(scale=2.0, size=shape), reference[1])
    signal = compare(tune, reference, shifted)
    assert signal.kl > 0.1 and signal.start_agreement < 1 and signal.end_agreement == 1
    assert signal.answer_agreement < 1


def test_closest_to_fp32_prefers_the_simplest_candidate_within_the_noise():
    rng = np.random.default_rng(0)
    shared = rng.gamma(2.0, 0.05, 400)  # how hard each window is, for every candidate alike

    def signal(shift):
        window = shared + shift + rng.normal(0.0, 0.02, 400)  # plus each candidate's own noise
        return TuneSignal(0.9, 0.0, 0.0, 400, 400, kl=float(window.mean()), window_kl=window)

    # "simple" is listed first and is worse than "fancy" by far less than the noise: it wins.
    close = {"simple": signal(0.0005), "fancy": signal(0.0)}
    assert closest_to_fp32(close) == "simple"
    # Worse by far more than the noise: the best wins.
    assert closest_to_fp32({"simple": signal(0.05), "fancy": signal(0.0)}) == "fancy"
    # Read back from JSON (no per-window values): the lowest KL.
    plain = {k: TuneSignal(0.9, 0.0, 0.0, 10, 10, kl=kl) for k, kl in (("simple", 0.1005), ("fancy", 0.1))}
    assert closest_to_fp32(plain) == "fancy"
    with pytest.raises(ValueError):
        closest_to_fp32({})
