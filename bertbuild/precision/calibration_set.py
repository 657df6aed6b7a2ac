"""The model inputs INT8 decisions are measured on: SQuAD train-half windows, and where they came from.

Calibration, smoothing, the outlier split, range choice, bias correction and
the sensitivity ranking all read the same `CalibrationSet`; held-out
questions are never in it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from bertbuild.config.precision import Int8Config
from bertbuild.squad.batching import plan_batches
from bertbuild.shapes import DEFAULT_LENGTH_BUCKET


@dataclass(frozen=True)
class CalibrationSet:
    """Model inputs for calibration, and where they came from."""

    input_ids: np.ndarray
    segment_ids: np.ndarray
    input_mask: np.ndarray
    question_ids: tuple[str, ...]
    split: str = "train"
    length_bucket: int = DEFAULT_LENGTH_BUCKET  # how `batches` trims (bertbuild.squad.batching); 0: padded

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])

    @property
    def max_seq_length(self) -> int:
        return int(self.input_ids.shape[1])

    def batches(self, batch_size: int, limit: int | None = None) -> Iterator[dict[str, np.ndarray]]:
        """Input batches of `batch_size` rows cut as scoring cuts them (`limit`: that many, spread over all)."""
        return plan_batches(self.input_mask, batch_size, self.length_bucket).sample(limit).feeds(self)

    @property
    def fingerprint(self) -> str:
        """sha256 over the question ids and the exact input rows."""
        digest = hashlib.sha256()
        digest.update("\n".join(self.question_ids).encode())
        for array in (self.input_ids, self.segment_ids, self.input_mask):
            digest.update(str(array.shape).encode())
            digest.update(np.ascontiguousarray(array, dtype=np.int32).tobytes())
        return digest.hexdigest()


def calibration_set(cfg: Int8Config, vocab_path: Path | str, lower_case: bool, dataset: str = "bundled",
                    doc_stride: int = 128, max_query_length: int = 64,
                    length_bucket: int = DEFAULT_LENGTH_BUCKET) -> CalibrationSet:
    """`cfg.samples` feature rows from questions of the TRAIN half of the article split.

    Questions are drawn in a seeded random order; all windows of each drawn
    question are taken until `cfg.samples` rows are filled (the last question
    may contribute only its first windows). Held-out questions are never read.
    """
    from bertbuild.squad.sets import featurize, load_split, sample

    examples = load_split(dataset, "train")
    if not examples:
        from bertbuild.errors import UserInputError

        raise UserInputError("the train half of the dataset has no questions to calibrate on")
    chosen = sample(examples, cfg.samples, cfg.seed)  # each question gives >= 1 window
    windows = featurize(chosen, vocab_path, lower_case, max_seq_length=cfg.max_seq_length, doc_stride=doc_stride,
                        max_query_length=max_query_length).first_windows(cfg.samples)
    f = windows.features
    return CalibrationSet(input_ids=f.input_ids, segment_ids=f.segment_ids, input_mask=f.input_mask,
                          question_ids=tuple(windows.question_ids), length_bucket=length_bucket)
