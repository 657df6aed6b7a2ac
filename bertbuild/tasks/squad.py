"""Prefect task: featurize the run's SQuAD questions once; every other task reads the saved set.

A cached step (dataset, vocab, selection, window sizes): a rerun with the same
config reads the `.npz` back instead of tokenizing again.
"""

from __future__ import annotations

from pathlib import Path

from bertbuild.config import EvalConfig
from bertbuild.runs import RunContext
from bertbuild.step_results import SquadFile
from bertbuild.steps import Work, cached_step
from bertbuild.tasks.model import ModelInfo


@cached_step("features", task_name="featurize-squad", code=("bertbuild.evaluation.score",),
             libraries=("tokenizers", "numpy"))
def featurize_squad(model: ModelInfo, eval_cfg: EvalConfig, run: RunContext) -> Work:
    """The scoring subset as a `SquadSet` file (`SquadFile`)."""
    from bertbuild.evaluation import score

    def produce(out: Path) -> dict:
        chosen = score.scoring_set(eval_cfg, model.vocab_path, model.lower_case)
        return {"path": str(chosen.save(out / "squad-eval.npz")), "questions": len(chosen.examples),
                "windows": len(chosen)}

    inputs = [model.vocab_path] + ([eval_cfg.dataset] if Path(eval_cfg.dataset).is_file() else [])
    fields = {"eval": eval_cfg.model_dump(mode="json"), "lower_case": model.lower_case}
    return Work(produce, files=inputs, fields=fields, finish=SquadFile.from_step)
