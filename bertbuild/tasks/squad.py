"""Prefect task: featurize the run's SQuAD questions once; every other task reads the saved set.

Cached by content (dataset, vocab, selection, window sizes): a rerun with the
same config reads the `.npz` back instead of tokenizing again.
"""

from __future__ import annotations

from pathlib import Path

from prefect import task
from prefect.cache_policies import NO_CACHE

from bertbuild.config import EvalConfig
from bertbuild.resources import measured
from bertbuild.runs import RunContext
from bertbuild.tasks.model import ModelInfo


@task(name="featurize-squad", cache_policy=NO_CACHE)
@measured("featurize-squad")
def featurize_squad(model: ModelInfo, eval_cfg: EvalConfig, run: RunContext) -> dict:
    """The scoring subset as a `SquadSet` file: {"path", "questions", "windows"}."""
    from bertbuild.evaluation import score
    from bertbuild.squad import data, features, sets
    from bertbuild.step_cache import step_key

    def produce(out: Path) -> dict:
        chosen = score.scoring_set(eval_cfg, model.vocab_path, model.lower_case)
        return {"path": str(chosen.save(out / "squad-eval.npz")), "questions": len(chosen.examples),
                "windows": len(chosen)}

    inputs = [model.vocab_path] + ([eval_cfg.dataset] if Path(eval_cfg.dataset).is_file() else [])
    fields = {"eval": eval_cfg.model_dump(mode="json"), "lower_case": model.lower_case}
    key = step_key("features", files=inputs, fields=fields, modules=[score, sets, features, data])
    return run.cache.run("features", key, produce)
