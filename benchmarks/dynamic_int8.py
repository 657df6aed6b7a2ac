"""The dynamic-quantization anchor: `onnxruntime.quantization.quantize_dynamic`, per channel.

Roughly what Optimum's `avx512_vnni` preset (dynamic, per-channel, no reduced
range) does: weights INT8 per output channel, activations quantized to u8 at
run time from each batch's own min/max, every MatMul of the plain export
(including the attention score and context MatMuls, and the QA head). No
calibration, no graph surgery: the comparison point for our static INT8.
Score it with `bertbuild eval --onnx OUT`, time it with `bertbuild bench`.

    python benchmarks/dynamic_int8.py runs/base/model-fp32.onnx runs/final/model.dynamic-int8.onnx
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path


def main(argv=None) -> int:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("fp32", type=Path, help="the FP32 export (model-fp32.onnx)")
    parser.add_argument("out", type=Path, help="where to write the dynamically quantized file")
    args = parser.parse_args(argv)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    logging.getLogger().setLevel(logging.ERROR)  # the quantizer's "consider pre-processing" advice
    quantize_dynamic(str(args.fp32), str(args.out), op_types_to_quantize=["MatMul"], per_channel=True,
                     reduce_range=False, weight_type=QuantType.QInt8)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
