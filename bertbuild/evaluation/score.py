"""Score any runner on SQuAD v1.1 with one shared implementation.

Features, post-processing and EM/F1 are identical for every backend, so a
difference in F1 between two engines is the engine's doing alone.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bertbuild.backends.base import Runner
from bertbuild.config import EvalConfig
from bertbuild.squad import data as squad_data
from bertbuild.squad.features import Features, build_features, make_tokenizer
from bertbuild.squad.metrics import score
from bertbuild.squad.postprocess import predictions_from_logits


@dataclass
class EvalSet:
    examples: list
    features: Features


@dataclass
class EvalResult:
    """Scores and raw outputs of one runner on one EvalSet."""

    name: str
    exact_match: float
    f1: float
    questions: int
    seconds: float
    start_logits: np.ndarray = field(repr=False)
    end_logits: np.ndarray = field(repr=False)
    predictions: dict[str, str] = field(repr=False)

    def summary(self) -> dict:
        return {
            "engine": self.name, "exact_match": round(self.exact_match, 2), "f1": round(self.f1, 2),
            "questions": self.questions, "seconds": round(self.seconds, 2),
        }


def split_examples(dataset: dict, split: str) -> list:
    train, heldout = squad_data.split_by_article(dataset)
    articles = {"train": train, "heldout": heldout, "all": train + heldout}[split]
    return squad_data.examples_from(articles)


def prepare_eval_set(cfg: EvalConfig, vocab_path: Path, lower_case: bool) -> EvalSet:
    """The configured question subset, tokenized into windows."""
    from bertbuild.fetch.acquire import resolve_dataset

    dataset = squad_data.load_dataset(resolve_dataset(cfg.dataset))
    examples = squad_data.select(split_examples(dataset, cfg.split), limit=cfg.limit, offset=cfg.offset)
    tokenizer = make_tokenizer(vocab_path, lower_case=lower_case)
    features = build_features(
        examples, tokenizer, max_seq_length=cfg.max_seq_length, doc_stride=cfg.doc_stride,
        max_query_length=cfg.max_query_length,
    )
    return EvalSet(examples, features)


def _progress(total: int, label: str):
    """A tqdm bar on a terminal; silent in CI and logs, where bars become noise."""
    from tqdm import tqdm

    quiet = not sys.stderr.isatty()
    return tqdm(total=total, desc=label, unit="seq", disable=quiet, leave=False)


def run_logits(runner: Runner, features: Features, batch_size: int) -> tuple[np.ndarray, np.ndarray, float]:
    """All start/end logits for `features`, and the seconds spent in `infer`."""
    starts, ends, spent = [], [], 0.0
    with runner, _progress(len(features), runner.name) as bar:
        for feed in features.batches(batch_size):
            begin = time.perf_counter()
            out = runner.infer(feed)
            spent += time.perf_counter() - begin
            starts.append(out["start_logits"])
            ends.append(out["end_logits"])
            bar.update(len(feed["input_ids"]))
    return np.concatenate(starts), np.concatenate(ends), spent


def evaluate(runner: Runner, eval_set: EvalSet, cfg: EvalConfig) -> EvalResult:
    start, end, seconds = run_logits(runner, eval_set.features, cfg.batch_size)
    predictions = predictions_from_logits(
        eval_set.examples, eval_set.features, start, end,
        n_best=cfg.n_best, max_answer_length=cfg.max_answer_length,
    )
    scores = score(eval_set.examples, predictions)
    return EvalResult(
        runner.name, scores["exact_match"], scores["f1"], scores["count"], seconds, start, end, predictions
    )

