"""The `build-bert` flow: checkpoint -> ONNX -> engines -> SQuAD EM/F1 and parity.

Only wiring lives here; every step is a task in `tasks/` over pure functions
in `bertbuild/`. Run it with `bertbuild run --config configs/X.yaml`, or as a
Prefect deployment (`prefect deployment run build-bert/on-demand`).
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow, get_run_logger

from bertbuild.config import BuildConfig, load_config, parse_config
from bertbuild.errors import GateFailed
from tasks.build import evaluate_onnx, evaluate_tensorflow, export, max_abs_logit_diff, write_results
from tasks.fetch import fetch_checkpoint_task


def _config(config: str | dict | BuildConfig, overrides: list[str] | None) -> BuildConfig:
    if isinstance(config, BuildConfig):
        return config
    if isinstance(config, dict):
        return parse_config(config, origin="flow parameter 'config'")
    return load_config(config, overrides or [])


@flow(name="build-bert")
def build_bert(config: str | dict = "configs/default.yaml", overrides: list[str] | None = None) -> dict:
    """Build and evaluate engines for one checkpoint; returns the results dict."""
    cfg = _config(config, overrides)
    logger = get_run_logger()
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    lower = cfg.model.lower_case

    checkpoint_dir = fetch_checkpoint_task(cfg.model.source, cfg.model.sha256, str(out / "checkpoints"))
    exported = export(checkpoint_dir, str(out / "model-fp32.onnx"), cfg.export.opset, lower)
    logger.info("exported %s (%s nodes) in %.1f s", exported["path"], exported["nodes"], exported["seconds"])

    reference = evaluate_tensorflow(checkpoint_dir, cfg.eval, lower, str(out))
    onnx_fp32 = evaluate_onnx(exported["path"], "onnxruntime-fp32", checkpoint_dir, cfg.eval, lower, str(out))
    onnx_fp32["max_abs_dlogit"] = max_abs_logit_diff(reference, onnx_fp32)

    rows = [{k: v for k, v in r.items() if k not in ("logits", "predictions")} for r in (reference, onnx_fp32)]
    meta = {"model": cfg.model_name, "export": exported, "config": cfg.model_dump(mode="json")}
    table = write_results(rows, meta, str(out))
    title = f"{cfg.model_name}: {rows[0]['questions']} SQuAD v1.1 {cfg.eval.split} questions"
    logger.info("%s\n%s", title, table)

    if onnx_fp32["max_abs_dlogit"] > cfg.parity.max_abs_logit:
        raise GateFailed(
            f"parity: ONNX FP32 differs from TensorFlow by {onnx_fp32['max_abs_dlogit']:.2e} "
            f"> {cfg.parity.max_abs_logit:.0e} (parity.max_abs_logit)"
        )
    return {"title": title, "table": table, "rows": rows, **meta}
