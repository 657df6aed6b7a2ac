"""The FP32 TensorFlow reference: the checkpoint's graph run eagerly-compiled in TF.

`reference_main` is the flow's entry point, run in a child process (see
`bertbuild.isolation`) so TensorFlow's memory goes back to the OS when it ends.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bertbuild.backends.base import Runner
from bertbuild.model.checkpoint import CheckpointInfo


class _StreamedWeights:
    """The checkpoint's weights read one tensor at a time, so building the TF constants holds one extra copy at most."""

    def __init__(self, info: CheckpointInfo):
        from bertbuild.model.checkpoint import expected_shapes, open_reader

        self._names = list(expected_shapes(info.config))
        self._reader = open_reader(info.prefix)

    def items(self):
        for name in self._names:
            yield name, np.asarray(self._reader.get_tensor(name), dtype=np.float32)


class TensorFlowRunner(Runner):
    """Runs `bert_graph.inference_function` over the checkpoint's weights (loaded, or read from its files)."""

    name = "tensorflow-fp32"

    def __init__(self, checkpoint: CheckpointInfo):
        super().__init__()
        self.checkpoint = checkpoint
        self._function = None

    def _activate_impl(self) -> None:
        from bertbuild.model.bert_graph import inference_function

        weights = getattr(self.checkpoint, "weights", None) or _StreamedWeights(self.checkpoint)
        self._function = inference_function(weights, self.checkpoint.config)

    def _infer_impl(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        outputs = self._function(**feed)
        return {name: value.numpy() for name, value in outputs.items()}

    def _deactivate_impl(self) -> None:
        self._function = None


def reference_main(checkpoint_dir: str, lower_case: bool | None, squad_path: str, eval_cfg: dict,
                   validation_batches: int, out_dir: str) -> dict:
    """Score TensorFlow FP32 on the run's SQuAD set and save its RunResults on the validation batches."""
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
