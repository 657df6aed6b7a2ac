"""Prefect tasks for the checkpoint: fetch it, export it to ONNX, run the TensorFlow reference.

Thin wrappers: the work is in `bertbuild.fetch`, `bertbuild.model` and
`bertbuild.evaluation.reference`; the export and the reference are cached
steps (`bertbuild.steps`), so an unchanged checkpoint is never exported or run
in TensorFlow twice.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from bertbuild.config import EvalConfig, ExportConfig, ModelSource, ValidationConfig
from bertbuild.resources import current_meter
from bertbuild.runs import RunContext
from bertbuild.kinds import Precision
from bertbuild.step_results import OnnxFile, Reference, SquadFile
from bertbuild.steps import Work, cached_step

NGC_SECRET_BLOCK = "ngc-api-key"
# What the TensorFlow steps run in their child processes (`bertbuild.isolation`).
EXPORT_MODULE, REFERENCE_MODULE = "bertbuild.model.export", "bertbuild.evaluation.reference"
EXPORT_TARGET, REFERENCE_TARGET = f"{EXPORT_MODULE}:export_main", f"{REFERENCE_MODULE}:reference_main"


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
    from bertbuild.fetch.acquire import fetch_checkpoint
    from bertbuild.model.checkpoint import CONFIG_FILE, VOCAB_FILE, checkpoint_casing, read_config

    key = ngc_api_key() if source.source.startswith("ngc://") else None
    directory = fetch_checkpoint(source.source, sha256=source.sha256, api_key=key)
    vocab = directory / VOCAB_FILE
    lower = checkpoint_casing(directory, source.lower_case)
    return ModelInfo(name, str(directory), str(vocab), lower, read_config(directory / CONFIG_FILE).num_hidden_layers)


@cached_step("export", task_name="export-onnx", code=(EXPORT_MODULE, "bertbuild.memory_budget"),
             libraries=("tensorflow", "tf2onnx", "onnx", "numpy"))
def export_onnx(model: ModelInfo, export_cfg: ExportConfig, run: RunContext) -> Work:
    """tf2onnx export with dynamic batch/seq axes, in a child process: the FP32 `OnnxFile` (nodes, seconds, opset)."""
    def produce(out: Path) -> dict:
        kwargs = {"checkpoint_dir": model.checkpoint_dir, "lower_case": model.lower_case,
                  "out_path": str(out / "model-fp32.onnx"), "opset": export_cfg.opset,
                  "external_data": export_cfg.external_data}
        return _in_child("export-onnx", EXPORT_TARGET, kwargs, model)

    return Work(produce, files=[model.checkpoint_dir], fields=export_cfg.model_dump(mode="json"),
                finish=lambda result: OnnxFile.from_step(Precision.FP32, result))


@cached_step("reference", task_name="tensorflow-reference", code=(REFERENCE_MODULE, "bertbuild.memory_budget"),
             libraries=("tensorflow", "numpy", "polygraphy", "tokenizers"))
def tensorflow_reference(model: ModelInfo, squad: SquadFile, eval_cfg: EvalConfig, validation: ValidationConfig,
                         run: RunContext) -> Work:
    """The FP32 TensorFlow `Reference`: scores, logits, predictions and Polygraphy RunResults of the validation batches.

    Run in a child process, like the export: TensorFlow's memory goes back to the OS when it ends.
    """
    def produce(out: Path) -> dict:
        kwargs = {"checkpoint_dir": model.checkpoint_dir, "lower_case": model.lower_case,
                  "squad_path": squad.path, "eval_cfg": eval_cfg.model_dump(mode="json"),
                  "validation_batches": validation.batches, "out_dir": str(out)}
        return _in_child("tensorflow-reference", REFERENCE_TARGET, kwargs, model)

    fields = {"eval": eval_cfg.model_dump(mode="json"), "validation_batches": validation.batches}
    return Work(produce, files=[model.checkpoint_dir, squad.path], fields=fields, finish=Reference.from_step)


def _in_child(step: str, target: str, kwargs: dict, model: ModelInfo) -> dict:
    """Run a TensorFlow step in a child process; its peak memory goes to this step's meter."""
    from bertbuild.isolation import run_in_child
    from bertbuild.memory_budget import estimate
    from bertbuild.model.checkpoint import CONFIG_FILE, read_config

    needed = estimate(read_config(Path(model.checkpoint_dir) / CONFIG_FILE))
    hint = (f"{model.name} is estimated to need {needed.describe()} for a whole build: "
            "free memory or use a bigger host")
    child = run_in_child(step, target, kwargs, log=get_run_logger().info, hint=hint)
    if (meter := current_meter()) is not None:
        meter.child(child.peak_rss_bytes, child.seconds)
    return child.value
