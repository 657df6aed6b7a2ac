"""The tune split (train half, seeded, calibration questions left out) and its FP32-agreement signals."""

from __future__ import annotations

import numpy as np
import pytest

from bertbuild.precision.config import TuneConfig
from bertbuild.precision.tuning import TuneOutputs, TuneSet, tune_set, tune_signal


def test_tune_set_is_train_half_seeded_and_leaves_out_calibration_questions(vocab_path):
    from bertbuild.squad import data

    train, heldout = data.split_by_article(data.load_dataset())
    train_ids, heldout_ids = {e.qid for e in data.examples_from(train)}, {e.qid for e in data.examples_from(heldout)}
    cfg = TuneConfig(questions=12)
    first = tune_set(cfg, vocab_path, lower_case=True, max_seq_length=128)
    assert len(first.examples) == 12 and set(first.question_ids) <= train_ids
    assert not set(first.question_ids) & heldout_ids
    # Every window of every chosen question is there (so answers can be post-processed).
    assert sorted(set(first.features.example_index.tolist())) == list(range(12))
    again = tune_set(cfg, vocab_path, lower_case=True, max_seq_length=128)
    assert again.fingerprint == first.fingerprint and again.to_json()["question_ids"] == first.question_ids
    excluded = tune_set(cfg, vocab_path, lower_case=True, max_seq_length=128, exclude=first.question_ids[:5])
    assert not set(excluded.question_ids) & set(first.question_ids[:5])
    assert excluded.question_ids[:7] == first.question_ids[5:]
    other = tune_set(cfg.model_copy(update={"seed": 2}), vocab_path, lower_case=True, max_seq_length=128)
    assert other.question_ids != first.question_ids


class _Features:
    def __init__(self, mask):
        self.input_mask = np.asarray(mask)
        self.input_ids = np.zeros_like(self.input_mask)

    def __len__(self):
        return len(self.input_mask)


def _example(qid):
    from bertbuild.squad.data import Example

    return Example(qid, "t", "q", "c", ("a",), (0,))


def test_signal_by_hand_and_padding_is_ignored():
    tune = TuneSet([_example("a"), _example("b")], _Features([[1, 1, 0], [1, 1, 0]]), seed=0)
    reference = TuneOutputs(np.array([[0.0, np.log(3.0), 50.0], [2.0, 0.0, 0.0]]),
                            np.array([[1.0, 0.0, 0.0]] * 2), {"a": "x", "b": "y"})
    # Window 0: start p = (1/4, 3/4), q = (3/4, 1/4): KL = ln(1/3) / 4 + 3 ln(3) / 4 = ln(3) / 2,
    # and its argmax moves. Window 1 is unchanged where it counts: its padding
    # position (mask 0) differs wildly and must not count.
    candidate = TuneOutputs(np.array([[np.log(3.0), 0.0, -80.0], [2.0, 0.0, 9.0]]), reference.end_logits.copy(),
                            {"a": "x", "b": "z"})
    signal = tune_signal(reference, candidate, tune)
    start_kl = np.log(3.0) / 2 / 2  # mean over the 2 windows
    assert signal.kl == pytest.approx(start_kl / 2)  # mean of start and end (end KL = 0)
    assert signal.max_abs_logit_error == pytest.approx(np.log(3.0))
    assert signal.start_agreement == 0.5 and signal.end_agreement == 1.0
    assert signal.changed_answers == 1 and signal.answer_agreement == 0.5
    same = tune_signal(reference, reference, tune)
    assert same.kl == 0 and same.answer_agreement == 1 and same.start_agreement == 1


def test_best_candidate_is_lowest_kl_then_most_answers_kept():
    from bertbuild.precision.tuning import TuneSignal, best_candidate

    def signal(kl, agreement):
        return TuneSignal(kl, 0.0, 0.0, 1.0, 1.0, agreement, 0)

    assert best_candidate({"a": signal(0.2, 0.99), "b": signal(0.1, 0.90), "c": signal(0.1, 0.95)}) == "c"
    with pytest.raises(ValueError):
        best_candidate({})
