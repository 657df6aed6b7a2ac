"""Score any runner on SQuAD v1.1 with one shared implementation.

Features, post-processing and EM/F1 are identical for every backend, so a
difference in F1 between two engines is the engine's doing alone.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bertbuild.arrays import load_npz
from bertbuild.runner import Runner
from bertbuild.config import EvalConfig
from bertbuild.progress import Progress
from bertbuild.squad.batching import plan_batches
from bertbuild.shapes import DEFAULT_LENGTH_BUCKET
from bertbuild.squad.features import Features
from bertbuild.squad.metrics import score
from bertbuild.squad.sets import SquadSet, featurize, first_questions
from bertbuild.squad.postprocess import predictions_from_logits


@dataclass
class EvalResult:
    """Scores and raw outputs of one runner on one SquadSet."""

    name: str
    exact_match: float
    f1: float
    questions: int
    seconds: float
    start_logits: np.ndarray = field(repr=False)
    end_logits: np.ndarray = field(repr=False)
    predictions: dict[str, str] = field(repr=False)
    windows: int = 0
    real_tokens: int = 0  # input_mask ones over every window: the work a padding-free engine cannot skip
    length_bucket: int = 0

    def summary(self) -> dict:
        return {
            "engine": self.name, "exact_match": round(self.exact_match, 2), "f1": round(self.f1, 2),
            "questions": self.questions, "seconds": round(self.seconds, 2), "windows": self.windows,
            "windows_per_s": _rate(self.windows, self.seconds), "real_tokens_per_s": _rate(self.real_tokens, self.seconds),
            "length_bucket": self.length_bucket,
        }


def _rate(count: int, seconds: float) -> float | None:
    """`count` per second of `infer` time, None when nothing was timed."""
    return round(count / seconds, 2) if seconds > 0 else None


def scoring_set(cfg: EvalConfig, vocab_path: Path | str, lower_case: bool) -> SquadSet:
    """The configured scoring subset (`split`, `limit`, `offset`), featurized with the checkpoint's vocab."""
    examples = first_questions(cfg.dataset, cfg.split, cfg.limit, cfg.offset)
    origin = {"split": cfg.split, "limit": cfg.limit, "offset": cfg.offset, "dataset": cfg.dataset}
    return featurize(examples, vocab_path, lower_case, max_seq_length=cfg.max_seq_length,
                     doc_stride=cfg.doc_stride, max_query_length=cfg.max_query_length, origin=origin)


def run_logits(runner: Runner, features: Features, batch_size: int, log: Callable[[str], None] | None = None,
               length_bucket: int = DEFAULT_LENGTH_BUCKET) -> tuple[np.ndarray, np.ndarray, float]:
    """All start/end logits for `features`, and the seconds spent in `infer` (`log`: where progress lines go).

    Batches are cut by `bertbuild.squad.batching` (`length_bucket` 0: padded to
    max_seq_length in file order); the logits come back [windows,
    max_seq_length] in the features' order, PAD_LOGIT past each window's real tokens.
    """
    plan = plan_batches(features.input_mask, batch_size, length_bucket)
    starts, ends, spent = [], [], 0.0
    with runner, Progress(len(features), runner.name, unit="seq", noun="windows", log=log, leave=False) as progress:
        for feed in plan.feeds(features):
            begin = time.perf_counter()
            out = runner.infer(feed)
            spent += time.perf_counter() - begin
            starts.append(out["start_logits"])
            ends.append(out["end_logits"])
            progress.update(len(feed["input_ids"]))
    return plan.restore(starts), plan.restore(ends), spent


def evaluate(runner: Runner, eval_set: SquadSet, cfg: EvalConfig, log: Callable[[str], None] | None = None) -> EvalResult:
    features = eval_set.features
    start, end, seconds = run_logits(runner, features, cfg.batch_size, log, cfg.length_bucket)
    predictions = predictions_from_logits(
        eval_set.examples, features, start, end,
        n_best=cfg.n_best, max_answer_length=cfg.max_answer_length,
    )
    scores = score(eval_set.examples, predictions)
    return EvalResult(
        runner.name, scores["exact_match"], scores["f1"], scores["count"], seconds, start, end, predictions,
        windows=len(features), real_tokens=int(np.count_nonzero(features.input_mask)),
        length_bucket=cfg.length_bucket,
    )


def save_outputs(result: EvalResult, out_dir: Path | str, tag: str) -> dict:
    """Write `logits-<tag>.npz` and `predictions-<tag>.json`; returns the summary with both paths."""
    from bertbuild.squad.metrics import write_predictions

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    logits = out_dir / f"logits-{tag}.npz"
    np.savez_compressed(logits, start=result.start_logits, end=result.end_logits)
    predictions = write_predictions(out_dir / f"predictions-{tag}.json", result.predictions)
    return {**result.summary(), "logits": str(logits), "predictions": str(predictions)}


def max_abs_logit_diff(logits_a: Path | str, logits_b: Path | str) -> float:
    """Largest |Δ| between two saved logit files over every window, start and end."""
    a, b = load_npz(logits_a), load_npz(logits_b)
    return float(max(np.abs(a["start"] - b["start"]).max(), np.abs(a["end"] - b["end"]).max()))
