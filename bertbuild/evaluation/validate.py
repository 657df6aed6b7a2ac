"""Engine parity against the FP32 reference with Polygraphy's Comparator.

Real SQuAD feature batches feed both runners (random token ids would say
little about a QA model). Polygraphy's default 1e-5 tolerances always fail an
FP16 BERT, so tolerances come per precision from the config. Logits that
differ slightly can still select the same answer, so the start/end argmax
agreement is reported beside them.
"""

from __future__ import annotations

import json
import time
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from bertbuild.runner import Runner
from bertbuild.model.signature import INPUT_NAMES, OUTPUT_NAMES


def _as_polygraphy(runner: Runner):
    """Wrap one of our runners in Polygraphy's BaseRunner protocol."""
    from polygraphy.backend.base import BaseRunner
    from polygraphy.common import TensorMetadata

    class Adapter(BaseRunner):
        def __init__(self):
            super().__init__(name=runner.name)

        def activate_impl(self):
            runner.activate()

        def get_input_metadata_impl(self):
            meta = TensorMetadata()
            for name in INPUT_NAMES:
                meta.add(name, dtype=np.int32, shape=("batch", "seq"))
            return meta

        def infer_impl(self, feed_dict):
            begin = time.perf_counter()
            outputs = OrderedDict(runner.infer(feed_dict))
            self.inference_time = time.perf_counter() - begin  # the Comparator sums these
            return outputs

        def deactivate_impl(self):
            runner.deactivate()

    return Adapter()


@dataclass
class ValidationReport:
    reference: str
    candidate: str
    passed: bool
    atol: float
    rtol: float
    max_abs_diff: dict[str, float]
    mean_abs_diff: dict[str, float]
    argmax_agreement: float  # fraction of (window, start|end) whose argmax over real tokens agree
    batches: int
    details: list[str] = field(default_factory=list)
    error_stat: str = "elemwise"  # what atol/rtol were held to: each element, or the mean/median/max error

    def to_json(self) -> dict:
        return asdict(self)

    def to_text(self) -> str:
        verdict = "PASSED" if self.passed else "FAILED"
        diffs = ", ".join(f"{k} max {self.max_abs_diff[k]:.3g} mean {self.mean_abs_diff[k]:.3g}" for k in OUTPUT_NAMES)
        return (f"{verdict}: {self.candidate} vs {self.reference} on {self.batches} SQuAD batches "
                f"({self.error_stat} atol {self.atol:g}, rtol {self.rtol:g}): {diffs}; argmax agreement {self.argmax_agreement:.2%}")

    def save(self, stem: Path) -> None:
        Path(f"{stem}.json").write_text(json.dumps(self.to_json(), indent=2) + "\n")
        Path(f"{stem}.txt").write_text(self.to_text() + "\n")


def argmax_agreement(ref: dict, cand: dict, mask: np.ndarray) -> tuple[int, int]:
    """(agreeing, total) argmax positions over real tokens only."""
    agree = total = 0
    penalty = np.where(mask > 0, 0.0, -np.inf)
    for name in OUTPUT_NAMES:
        a = np.argmax(ref[name] + penalty, axis=-1)
        b = np.argmax(cand[name] + penalty, axis=-1)
        agree += int((a == b).sum())
        total += a.size
    return agree, total


def validation_feeds(features, batch_size: int, length_bucket: int, batches: int) -> list[dict]:
    """The SQuAD batches engines are validated on: `batches` of the scoring pass's own, spread over it.

    The one place they are made: TensorFlow's RunResults are saved on them in
    the reference step and every engine is compared on them later, so both
    must cut the very same batches (`bertbuild.squad.batching`).
    """
    from bertbuild.squad.batching import plan_batches

    return list(plan_batches(features.input_mask, batch_size, length_bucket).sample(batches).feeds(features))


def log_path(stem: Path | str) -> Path:
    """Where Polygraphy's own messages of a comparison are written: `<stem>.log` (a bundle file for engines)."""
    return Path(f"{stem}.log")


def reference_results(reference: Runner, feeds: list[dict], path: Path | str) -> Path:
    """Run the reference (TensorFlow FP32) on `feeds` and save its outputs as Polygraphy RunResults.

    Polygraphy's messages go to `<path without .json>.log` (`polygraphy_log.captured`).
    """
    from polygraphy.comparator import Comparator

    from bertbuild.evaluation.polygraphy_log import captured

    with captured(log_path(str(path).removesuffix(".json"))):
        results = Comparator.run([_as_polygraphy(reference)], data_loader=feeds)
        results.save(str(path))
    return Path(path)


def validate(reference: Runner | Path | str, candidate: Runner, feeds: list[dict], atol: float, rtol: float,
             error_stat: str = "elemwise", details: Path | str | None = None) -> ValidationReport:
    """Compare `candidate` with `reference` on `feeds`; the tolerances apply to `error_stat` of each output.

    `reference` is a runner, or saved RunResults (`reference_results`) made on the
    same feeds: the flow saves TensorFlow's once and holds every engine to them.
    `details`: the file that gets Polygraphy's per-batch statistics, tolerances and
    error metrics (`polygraphy_log.captured`: never the terminal, whatever other
    threads do; None: dropped).
    """
    import os

    from polygraphy.comparator import CompareFunc, Comparator, RunResults

    from bertbuild.arrays import HEADER_PARSE_LOCK
    from bertbuild.evaluation.polygraphy_log import captured

    with captured(details if details is not None else os.devnull):
        if isinstance(reference, Runner):
            results = Comparator.run([_as_polygraphy(reference), _as_polygraphy(candidate)], data_loader=feeds)
        else:
            with HEADER_PARSE_LOCK:  # arrays are .npy inside: see bertbuild.arrays
                results = RunResults.load(str(reference))
            ((_, saved),) = results.items()
            if len(saved) != len(feeds):
                raise ValueError(f"{reference}: saved for {len(saved)} batches, not {len(feeds)}")
            results.extend(Comparator.run([_as_polygraphy(candidate)], data_loader=feeds))
        accuracy = Comparator.compare_accuracy(
            results, compare_func=CompareFunc.simple(atol={"": atol}, rtol={"": rtol}, check_error_stat=error_stat),
        )
    (ref_name, ref_iters), (cand_name, cand_iters) = list(results.items())
    max_abs = {name: 0.0 for name in OUTPUT_NAMES}
    sums = {name: 0.0 for name in OUTPUT_NAMES}
    agree = total = 0
    for feed, ref, cand in zip(feeds, ref_iters, cand_iters):
        for name in OUTPUT_NAMES:
            diff = np.abs(ref[name] - cand[name])
            max_abs[name] = max(max_abs[name], float(diff.max()))
            sums[name] += float(diff.mean())
        a, t = argmax_agreement(ref, cand, feed["input_mask"])
        agree, total = agree + a, total + t
    return ValidationReport(
        reference=ref_name, candidate=cand_name, passed=bool(accuracy), atol=atol, rtol=rtol,
        max_abs_diff=max_abs, mean_abs_diff={k: v / max(len(feeds), 1) for k, v in sums.items()},
        argmax_agreement=agree / max(total, 1), batches=len(feeds), error_stat=error_stat,
    )
