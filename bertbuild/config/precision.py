"""The `precision:` section of a build config: FP16 islands, INT8 calibration, fallback.

Frozen pydantic models that reject unknown keys, like every section of
`bertbuild.config`, so a typo in a YAML file is an error, not a silent default.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)  # numbers must be finite


class Fp16Config(_Section):
    """Which parts of the graph stay in FP32 when the rest goes to FP16.

    LayerNormalization (or, in an unfused graph, the mean/variance chain that
    computes it) is always kept in FP32: its variance sum overflows or loses
    all precision in FP16. `keep_fp32_ops` adds whole op types on top of that.
    """

    keep_fp32_ops: tuple[str, ...] = ("Softmax",)
    keep_logits_fp32: bool = True  # the QA head MatMul and everything after it


class Int8Config(_Section):
    """Static INT8 quantization with explicit QuantizeLinear/DequantizeLinear nodes.

    One calibration (on SQuAD train-half features) serves all three written
    files: S8S8 (symmetric signed activations, zero point 0, the file for
    TensorRT), U8S8 (unsigned activations, standard ONNX) and the
    ONNX-Runtime-only file (`ort_kernels`). `variant` names the one ONNX
    Runtime evaluates and the accuracy fallback is driven by; all are written.
    """

    # minmax: measured on the tune split, any clipping of these activations (percentile,
    # entropy) costs more than the resolution it buys (benchmarks/README.md).
    method: Literal["entropy", "percentile", "minmax", "auto"] = "minmax"
    percentile: float = Field(default=99.99, gt=50, le=100)
    samples: int = Field(default=256, ge=1)  # feature rows (windows) fed to the calibrator
    seed: int = 0
    batch_size: int = Field(default=8, ge=1)  # rows per calibration batch: bounds memory
    max_seq_length: int = Field(default=384, ge=32, le=512)
    activation_type: Literal["u8", "s8"] = "u8"
    per_channel: bool = True  # per-output-channel symmetric INT8 weights
    num_bins: int = Field(default=2048, ge=128)  # histogram bins (entropy / percentile)
    op_types: tuple[Literal["MatMul", "Gather"], ...] = ("MatMul",)
    quantize_head: bool = False  # the QA head MatMul (hidden -> 2 logits) stays FP32 by default
    # SmoothQuant-style smoothing of the inputs of the MatMuls after these ops (smoothing.py);
    # None: off. 0.7: the tune split's choice among 0.3-0.85.
    smoothing_alpha: float | None = Field(default=0.7, ge=0, le=1)
    smoothing_after: tuple[Literal["LayerNormalization", "Gelu"], ...] = ("LayerNormalization",)
    # Outlier-channel decomposition (outliers.py): the top-k input channels of each MatMul after
    # these ops go through a side MatMul with a scale of their own; 0: off. 8: the tune split's
    # choice among 1, 2, 4, 8 (benchmarks/README.md).
    outlier_channels: int = Field(default=8, ge=0)
    outlier_after: tuple[Literal["LayerNormalization", "Gelu"], ...] = ("Gelu",)
    # Subtract each quantized MatMul's mean INT8 output error from its bias (bias_correction.py).
    bias_correction: bool = False
    bias_correction_batches: int = Field(default=8, ge=1)  # calibration batches the mean error is taken over
    # ONNX Runtime evaluates the ONNX-Runtime-only file (ort_int8.py: the same INT8 GEMMs, with ORT's
    # fused attention kernel); False: the standard u8s8/s8s8 file. TensorRT always gets s8s8.
    ort_kernels: bool = True

    def plain(self) -> "Int8Config":
        """This config with the graph rewrites off (no smoothing, no outlier split): the fused graph as it is."""
        return self.model_copy(update={"smoothing_alpha": None, "outlier_channels": 0})

    @property
    def qdq_variant(self) -> str:
        """The standard Q/DQ file of this activation type: `u8s8` or `s8s8` (INT8 weights are always signed)."""
        return f"{self.activation_type}s8"

    @property
    def variant(self) -> str:
        """The written file ONNX Runtime evaluates: `ort`, or `u8s8` / `s8s8` by activation type."""
        return "ort" if self.ort_kernels and self.activation_type == "u8" else self.qdq_variant


class FallbackConfig(_Section):
    """Accuracy-driven mixed precision: return the most sensitive nodes to FP32."""

    enabled: bool = True
    max_nodes: int = Field(default=16, ge=0)  # most nodes kept out of INT8 in total
    max_tries: int = Field(default=6, ge=0)  # quantize + evaluate rounds after the first
    step: int = Field(default=2, ge=1)  # nodes returned to FP32 per round
    sensitivity_batches: int = Field(default=2, ge=1)  # calibration batches used to rank nodes


class TuneConfig(_Section):
    """The tune split that INT8 decisions are made on: train-half questions calibration did not read."""

    questions: int = Field(default=512, ge=1)
    seed: int = 1  # recorded in results.json with the question ids
    # The share of tune questions whose INT8 answer must equal the FP32 answer. Below it,
    # the fallback runs; if no fallback try reaches it, the run fails on this gate.
    min_answer_agreement: float = Field(default=0.9, ge=0, le=1)


class PrecisionConfig(_Section):
    fp16: Fp16Config = Fp16Config()
    int8: Int8Config = Int8Config()
    tune: TuneConfig = TuneConfig()
    fallback: FallbackConfig = FallbackConfig()
