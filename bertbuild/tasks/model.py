"""Prefect tasks for the checkpoint: fetch it, export it to ONNX, run the TensorFlow reference.

Thin wrappers: the work is in `bertbuild.fetch`, `bertbuild.model` and
`bertbuild.evaluation`; the export and the reference are cached by content
(`bertbuild.step_cache`), so an unchanged checkpoint is never exported or run
in TensorFlow twice.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from bertbuild.config import EvalConfig, ExportConfig, ModelSource, ValidationConfig
from bertbuild.runs import RunContext

NGC_SECRET_BLOCK = "ngc-api-key"


@dataclass(frozen=True)
class ModelInfo:
    """A fetched checkpoint, as every later task needs it (worked out once per run)."""

    name: str
    checkpoint_dir: str
    vocab_path: str
    lower_case: bool
    num_layers: int


def ngc_api_key() -> str | None:
    """NGC_API_KEY if set, else the `ngc-api-key` Secret block if one exists, else None.

    Read inside the task, never passed as a parameter, so Prefect never records it.
    """
    if os.environ.get("NGC_API_KEY"):
        return os.environ["NGC_API_KEY"]
    from prefect.blocks.system import Secret

    try:
        return Secret.load(NGC_SECRET_BLOCK).get()
    except ValueError:  # no such block: public models need no key
        return None


@task(name="fetch-checkpoint", cache_policy=NO_CACHE)
def fetch_model(source: ModelSource, name: str) -> ModelInfo:
    """The checkpoint directory (downloads are cached by `bertbuild.fetch`), its vocab and casing."""
    from bertbuild.fetch import fetch_checkpoint
    from bertbuild.model.checkpoint import CONFIG_FILE, VOCAB_FILE, read_config, vocab_is_uncased

    key = ngc_api_key() if source.source.startswith("ngc://") else None
    directory = fetch_checkpoint(source.source, sha256=source.sha256, api_key=key)
    vocab = directory / VOCAB_FILE
    lower = vocab_is_uncased(vocab) if source.lower_case is None else source.lower_case
    return ModelInfo(name, str(directory), str(vocab), lower, read_config(directory / CONFIG_FILE).num_hidden_layers)


@task(name="export-onnx", cache_policy=NO_CACHE)
def export_onnx(model: ModelInfo, export_cfg: ExportConfig, run: RunContext) -> dict:
    """tf2onnx export with dynamic batch/seq axes: {"path", "nodes", "seconds", "opset"}."""
    from bertbuild.model import checkpoint, export
    from bertbuild.step_cache import step_key

    def produce(out: Path) -> dict:
        result = export.export_onnx(checkpoint.load_checkpoint(model.checkpoint_dir, model.lower_case),
                                    out / "model-fp32.onnx", opset=export_cfg.opset)
        return {"path": str(result.path), "seconds": round(result.seconds, 2), "nodes": result.nodes,
                "opset": export_cfg.opset}

    key = step_key("export", files=[model.checkpoint_dir], fields=export_cfg.model_dump(mode="json"),
                   modules=[export, checkpoint])
    return run.cache.run("export", key, produce)


@task(name="tensorflow-reference", cache_policy=NO_CACHE)
def tensorflow_reference(model: ModelInfo, squad: dict, eval_cfg: EvalConfig, validation: ValidationConfig,
                         run: RunContext) -> dict:
    """The FP32 TensorFlow scores, logits and predictions, and its Polygraphy RunResults on the validation batches."""
    from bertbuild.backends import tf_reference
    from bertbuild.evaluation import score, validate
    from bertbuild.model import bert_graph, checkpoint
    from bertbuild.squad.sets import SquadSet
    from bertbuild.step_cache import step_key

    def produce(out: Path) -> dict:
        runner = tf_reference.TensorFlowRunner(checkpoint.load_checkpoint(model.checkpoint_dir, model.lower_case))
        eval_set = SquadSet.load(squad["path"])
        result = score.evaluate(runner, eval_set, eval_cfg, get_run_logger().info)
        feeds = list(eval_set.batches(eval_cfg.batch_size, limit=validation.batches))
        results = validate.reference_results(runner, feeds, out / "reference-tensorflow.polygraphy.json")
        return {**score.save_outputs(result, out, "tensorflow-fp32"), "run_results": str(results)}

    fields = {"eval": eval_cfg.model_dump(mode="json"), "validation_batches": validation.batches}
    key = step_key("reference", files=[model.checkpoint_dir, squad["path"]], fields=fields,
                   modules=[tf_reference, score, validate, bert_graph, checkpoint])
    return run.cache.run("reference", key, produce)
