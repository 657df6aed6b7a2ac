"""A long scoring pass without a terminal says how far it is, in lines its log keeps."""

import numpy as np

from bertbuild import progress
from bertbuild.evaluation import score


class _Windows:
    """Ten windows of sequence 8, every position real (so no batch is trimmed and every logit kept)."""

    input_ids = np.repeat(np.arange(10, dtype=np.int32)[:, None], 8, axis=1)
    segment_ids = np.zeros((10, 8), dtype=np.int32)
    input_mask = np.ones((10, 8), dtype=np.int32)

    def __len__(self):
        return 10


class _Runner:
    name = "fake-engine"

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return None

    def infer(self, feed):
        rows = feed["input_ids"].astype(np.float32)
        return {"start_logits": rows, "end_logits": -rows}


def test_scoring_logs_progress_lines_until_it_is_done(monkeypatch):
    monkeypatch.setattr(progress, "PROGRESS_EVERY_S", 0.0)  # a line at every batch
    lines: list[str] = []
    start, end, _ = score.run_logits(_Runner(), _Windows(), 4, log=lines.append)
    assert start.shape == (10, 8) and np.array_equal(end, -start)
    # Batches end at 4, 8 and 10 windows: a line for each one still short of the total, none at the end.
    assert [line.split(":")[1].split()[0] for line in lines] == ["4/10", "8/10"]
    assert lines[0].startswith("fake-engine: 4/10 windows (40 %), about ")


def test_no_lines_before_the_interval_has_passed(monkeypatch):
    monkeypatch.setattr(progress, "PROGRESS_EVERY_S", 3600.0)
    lines: list[str] = []
    score.run_logits(_Runner(), _Windows(), 4, log=lines.append)
    assert lines == []
