"""The FP32 TensorFlow reference's scores, logits, predictions and Polygraphy RunResults.

`reference_main` is the flow's entry point, run in a child process (see
`bertbuild.isolation`) so TensorFlow's memory goes back to the OS when it ends.
"""

from __future__ import annotations

from pathlib import Path


def reference_main(checkpoint_dir: str, lower_case: bool | None, squad_path: str, eval_cfg: dict,
                   validation_batches: int, out_dir: str) -> dict:
    """Score TensorFlow FP32 on the run's SQuAD set and save its RunResults on the validation batches."""
    from bertbuild.backends.tf_reference import TensorFlowRunner
    from bertbuild.config import EvalConfig
    from bertbuild.evaluation import score, validate
    from bertbuild.isolation import child_log
    from bertbuild.model.checkpoint import inspect_checkpoint
    from bertbuild.squad.sets import SquadSet

    cfg = EvalConfig.model_validate(eval_cfg)
    out = Path(out_dir)
    runner = TensorFlowRunner(inspect_checkpoint(checkpoint_dir, lower_case))
    eval_set = SquadSet.load(squad_path)
    result = score.evaluate(runner, eval_set, cfg, child_log)
    feeds = validate.validation_feeds(eval_set.features, cfg.batch_size, cfg.length_bucket, validation_batches)
    results = validate.reference_results(runner, feeds, out / "reference-tensorflow.polygraphy.json")
    return {**score.save_outputs(result, out, "tensorflow-fp32"), "run_results": str(results)}
