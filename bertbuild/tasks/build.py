"""Prefect tasks of the build-bert flow: thin wrappers over pure functions.

Tasks pass paths and small dicts, never models or sessions, so results can be
persisted and the flow can be retried from the failed step.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
from prefect import task
from prefect.artifacts import create_table_artifact

from bertbuild.config import EvalConfig


@task(name="export-onnx")
def export(checkpoint_dir: str, out_path: str, opset: int, lower_case: bool | None) -> dict:
    from bertbuild.model.checkpoint import load_checkpoint
    from bertbuild.model.export import export_onnx

    checkpoint = load_checkpoint(checkpoint_dir, lower_case)
    result = export_onnx(checkpoint, out_path, opset=opset)
    # The vocab travels with the model: every engine of this run is read with it.
    shutil.copyfile(checkpoint.vocab_path, Path(out_path).with_name("vocab.txt"))
    return {"path": str(result.path), "seconds": round(result.seconds, 2), "nodes": result.nodes, "opset": opset,
            "num_layers": checkpoint.config.num_hidden_layers}


def _save_outputs(result, out_dir: Path, tag: str) -> dict:
    from bertbuild.squad.metrics import write_predictions

    out_dir.mkdir(parents=True, exist_ok=True)
    logits = out_dir / f"logits-{tag}.npz"
    np.savez_compressed(logits, start=result.start_logits, end=result.end_logits)
    predictions = write_predictions(out_dir / f"predictions-{tag}.json", result.predictions)
    return {**result.summary(), "logits": str(logits), "predictions": str(predictions)}


@task(name="evaluate-tensorflow")
def evaluate_tensorflow(checkpoint_dir: str, eval_cfg: EvalConfig, lower_case: bool | None, out_dir: str) -> dict:
    from bertbuild.backends.tf_reference import TensorFlowRunner
    from bertbuild.model.checkpoint import load_checkpoint
    from bertbuild.evaluation.score import evaluate, prepare_eval_set

    checkpoint = load_checkpoint(checkpoint_dir, lower_case)
    eval_set = prepare_eval_set(eval_cfg, checkpoint.vocab_path, checkpoint.lower_case)
    result = evaluate(TensorFlowRunner(checkpoint), eval_set, eval_cfg)
    return _save_outputs(result, Path(out_dir), "tensorflow-fp32")


@task(name="evaluate-onnx")
def evaluate_onnx(onnx_path: str, tag: str, checkpoint_dir: str, eval_cfg: EvalConfig,
                  lower_case: bool | None, out_dir: str) -> dict:
    from bertbuild.backends.onnxrt import OnnxRuntimeRunner
    from bertbuild.model.checkpoint import vocab_is_uncased, VOCAB_FILE
    from bertbuild.evaluation.score import evaluate, prepare_eval_set

    vocab = Path(checkpoint_dir) / VOCAB_FILE
    lower = vocab_is_uncased(vocab) if lower_case is None else lower_case
    eval_set = prepare_eval_set(eval_cfg, vocab, lower)
    result = evaluate(OnnxRuntimeRunner(onnx_path, name=tag), eval_set, eval_cfg)
    return _save_outputs(result, Path(out_dir), tag)


@task(name="compare-logits")
def max_abs_logit_diff(reference: dict, candidate: dict) -> float:
    ref, cand = np.load(reference["logits"]), np.load(candidate["logits"])
    return float(max(np.abs(ref["start"] - cand["start"]).max(), np.abs(ref["end"] - cand["end"]).max()))


@task(name="write-results")
def write_results(rows: list[dict], meta: dict, out_dir: str) -> str:
    from bertbuild.evaluation.table import format_table

    path = Path(out_dir) / "results.json"
    path.write_text(json.dumps({"results": rows, **meta}, indent=2) + "\n")
    table = format_table(rows)
    create_table_artifact(table=rows, key="build-bert-results", description="EM/F1 and parity per engine")
    return table
