"""This CPU's INT8 GEMM ceiling at a BERT model's shapes, in ONNX Runtime and OpenVINO.

For each weight GEMM of one encoder layer at batch x sequence tokens (default
batch 8 x sequence 384, M = 3072 tokens) of `--model` (minilm: hidden 384,
FFN 1536, the default; base: 768 / 3072; large: 1024 / 4096) it times one-node
graphs with a constant weight:

ONNX Runtime (CPU execution provider, the engine's session options):
- FP32 `MatMul`                      (what the FP32 engine runs),
- `MatMulInteger` u8 x s8 -> int32   (the bare INT8 GEMM, VNNI on x86),
- com.microsoft `MatMulIntegerToFloat` u8 x s8 -> float, with scales
                                     (the kernel ORT's optimizer turns our
                                     DequantizeLinear -> MatMul pairs into);

OpenVINO (CPU plugin, the engine's compile settings):
- FP32 `MatMul`, INFERENCE_PRECISION_HINT f32,
- the same graph at hint bf16 (where the CPU has BF16),
- s8s8 Q/DQ, the pattern of our s8s8 file: QuantizeLinear(x, scale, int8 0)
  -> DequantizeLinear -> MatMul with DequantizeLinear(int8 weight, per-channel
  scale), at hint f32: OpenVINO folds it into an INT8 FullyConnected (the
  `computes` line says what the compiled model really ran).

It prints GOPS (2*M*K*N per call) per shape, and for the whole layer (the
unpacked layer: QKV x3, attention out, FFN in, FFN out; weighted by PER_LAYER),
and the INT8 / FP32 speed ratios. The whole-layer INT8 / FP32 ratio is the most
an engine can gain from INT8 GEMMs alone; the engine's own ratio shows how much
of it survives the rest of the graph (attention, LayerNorm, GELU, quantize
ops). The last line is the ceiling: the best INT8 whole-layer GOPS of any
runtime here.

    python benchmarks/int8_gemm_ceiling.py [--model minilm|base|large] [--batch 8] [--seq 384]
        [--runtime onnxruntime|openvino ...] [--threads N] [--seconds S] [--json PATH]

From Python (benchmarks/scale.py does): `ceiling("base", batch=8, seq=128)` or
`ceiling((hidden, ffn), ...)` -> a dict of every figure (`ceiling_gops` the last line).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from onnx import TensorProto, helper, numpy_helper

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [p for p in (_HERE, os.path.join(_HERE, "..")) if p not in sys.path]  # _ort_timing; the repository

MODELS = {"minilm": (384, 1536), "base": (768, 3072), "large": (1024, 4096)}  # name: (hidden, FFN)
RUNTIMES = ("onnxruntime", "openvino")
# What each measured kind is: (runtime, column title, INT8 or not).
KINDS = {
    "ort_fp32": ("onnxruntime", "FP32", False),
    "ort_u8s8": ("onnxruntime", "u8s8", True),
    "ort_u8s8_to_float": ("onnxruntime", "->float", True),
    "ov_fp32": ("openvino", "FP32", False),
    "ov_bf16": ("openvino", "BF16", False),
    "ov_s8s8": ("openvino", "s8s8 Q/DQ", True),
}
PER_LAYER = {"QKV (x3)": 3, "attention out": 1, "FFN in": 1, "FFN out": 1}  # the unpacked layer


def gemm_shapes(hidden: int, ffn: int, packed: bool = True) -> dict[str, tuple[int, int]]:
    """{name: (K, N)}: each weight GEMM of one layer (and, if `packed`, the packed QKV one, weight 0 in the layer)."""
    shapes = {"QKV (x3)": (hidden, hidden), "attention out": (hidden, hidden), "FFN in": (hidden, ffn),
              "FFN out": (ffn, hidden)}
    if packed:
        shapes["QKV packed"] = (hidden, 3 * hidden)
    return shapes


# The default (MiniLM, b8 s384), as earlier versions of this module had them.
TOKENS = 8 * 384
SHAPES = gemm_shapes(*MODELS["minilm"])


def _model_bytes(nodes, inputs, outputs, inits, name: str) -> bytes:
    model = helper.make_model(helper.make_graph(nodes, name, inputs, outputs, inits),
                              opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])
    return model.SerializeToString()


def _graph(kind: str, k: int, n: int, m: int = TOKENS) -> bytes:
    """A one-node ONNX graph: "fp32" MatMul, "int8" MatMulInteger u8s8, else MatMulIntegerToFloat u8s8."""
    rng = np.random.default_rng(0)
    if kind == "fp32":
        x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [m, k])
        w = numpy_helper.from_array(rng.standard_normal((k, n)).astype(np.float32), "w")
        nodes, inits = [helper.make_node("MatMul", ["x", "w"], ["y"])], [w]
        y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [m, n])
    else:
        x = helper.make_tensor_value_info("x", TensorProto.UINT8, [m, k])
        inits = [numpy_helper.from_array(rng.integers(-127, 128, (k, n), dtype=np.int8), "w"),
                 numpy_helper.from_array(np.array(128, np.uint8), "xz"),
                 numpy_helper.from_array(np.zeros(n, np.int8), "wz")]
        if kind != "int8":
            inits += [numpy_helper.from_array(np.array(0.02, np.float32), "xs"),
                      numpy_helper.from_array(np.full(n, 0.01, np.float32), "ws")]
        if kind == "int8":
            nodes = [helper.make_node("MatMulInteger", ["x", "w", "xz", "wz"], ["y"])]
            y = helper.make_tensor_value_info("y", TensorProto.INT32, [m, n])
        else:
            nodes = [helper.make_node("MatMulIntegerToFloat", ["x", "w", "xs", "ws", "xz", "wz"], ["y"],
                                      domain="com.microsoft")]
            y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [m, n])
    return _model_bytes(nodes, [x], [y], inits, kind)


def _qdq_graph(k: int, n: int, m: int) -> bytes:
    """The s8s8 file's pattern: Q(x, s, int8 0) -> DQ -> MatMul <- DQ(int8 weight, per-channel scale, axis 1)."""
    rng = np.random.default_rng(0)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [m, k])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [m, n])
    inits = [numpy_helper.from_array(np.array(0.03, np.float32), "xs"),
             numpy_helper.from_array(np.array(0, np.int8), "xz"),
             numpy_helper.from_array(rng.integers(-127, 128, (k, n), dtype=np.int8), "wq"),
             numpy_helper.from_array(np.full(n, 0.01, np.float32), "ws"),
             numpy_helper.from_array(np.zeros(n, np.int8), "wz")]
    nodes = [helper.make_node("QuantizeLinear", ["x", "xs", "xz"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "xs", "xz"], ["xd"]),
             helper.make_node("DequantizeLinear", ["wq", "ws", "wz"], ["wd"], axis=1),
             helper.make_node("MatMul", ["xd", "wd"], ["y"])]
    return _model_bytes(nodes, [x], [y], inits, "s8s8_qdq")


def seconds_per_call(kind: str, k: int, n: int, threads: int, budget: float, m: int = TOKENS) -> float:
    """Median seconds per ONNX Runtime call of `_graph(kind, k, n, m)`."""
    from _ort_timing import cpu_session, median_seconds

    rng = np.random.default_rng(1)
    x = rng.standard_normal((m, k)).astype(np.float32) if kind == "fp32" \
        else rng.integers(0, 256, (m, k), dtype=np.uint8)
    return median_seconds(cpu_session(_graph(kind, k, n, m), threads), {"x": x}, budget)


def openvino_seconds_per_call(kind: str, k: int, n: int, threads: int, budget: float, m: int = TOKENS,
                              scratch: Path | None = None) -> tuple[float, str]:
    """(median seconds per call, what the compiled model computes) of one OpenVINO graph.

    kind: "fp32" (hint f32), "bf16" (the FP32 graph at hint bf16) or "s8s8" (Q/DQ, hint f32). Compiled with the
    settings an engine gets (`backends.openvino._config`: latency, one stream, `threads`); the input is set once
    and each call is a bare `infer()`, so no host copies are timed.
    """
    from bertbuild.backends.openvino import DEVICE, _config, compute_label, import_openvino, layer_precisions

    ov = import_openvino()
    graph = _qdq_graph(k, n, m) if kind == "s8s8" else _graph("fp32", k, n, m)
    with tempfile.TemporaryDirectory(dir=scratch) as tmp:  # ONNX is read from a file, as the engines read theirs
        path = Path(tmp) / f"{kind}-{k}x{n}.onnx"
        path.write_bytes(graph)
        core = ov.Core()
        compiled = core.compile_model(core.read_model(str(path)), DEVICE,
                                      _config("bf16" if kind == "bf16" else "f32", threads))
    computes = compute_label(layer_precisions(compiled))
    request = compiled.create_infer_request()
    x = np.random.default_rng(1).standard_normal((m, k)).astype(np.float32)
    request.set_input_tensor(ov.Tensor(x))
    for _ in range(3):
        request.infer()
    samples, begin = [], time.perf_counter()
    while len(samples) < 5 or time.perf_counter() - begin < budget:
        start = time.perf_counter()
        request.infer()
        samples.append(time.perf_counter() - start)
    del request, compiled
    return float(np.median(samples)), computes


def _openvino_kinds(skipped: list[str]) -> list[str]:
    """The OpenVINO kinds this host runs; a line in `skipped` for each that it does not."""
    from bertbuild._lazy import is_installed

    if not is_installed("openvino"):
        skipped.append("openvino: not installed (pip install openvino)")
        return []
    from bertbuild.backends.openvino import can_compute, capabilities

    kinds = ["ov_fp32"]
    ok, why = can_compute("bf16", capabilities())
    if ok:
        kinds.append("ov_bf16")
    else:
        skipped.append(f"openvino BF16: {why}")
    return kinds + ["ov_s8s8"]


def _resolve(model) -> tuple[str, int, int]:
    if isinstance(model, str):
        if model not in MODELS:
            raise ValueError(f"unknown model {model!r}: one of {', '.join(MODELS)}")
        return (model, *MODELS[model])
    hidden, ffn = (int(v) for v in model)
    name = next((k for k, v in MODELS.items() if v == (hidden, ffn)), f"hidden {hidden}, FFN {ffn}")
    return name, hidden, ffn


def ceiling(model="minilm", batch: int = 8, seq: int = 384, threads: int | None = None, seconds: float = 1.5,
            runtimes=RUNTIMES, packed: bool = True, progress=None) -> dict:
    """Every GEMM figure at `model`'s shapes (a name in MODELS or (hidden, FFN)), batch x seq tokens.

    Returns {"model", "hidden", "ffn", "batch", "seq", "tokens", "threads", "machine", "kinds" (the kinds
    timed), "computes" ({kind: what OpenVINO compiled it to, per shape}), "shapes" ([{"name", "k", "n",
    "per_layer", "seconds": {kind: s}, "gops": {kind: GOPS}}]), "layer" ({kind: {"seconds", "gops"}}: the
    whole unpacked layer), "ceiling_gops" and "ceiling_kind" (the best INT8 whole-layer GOPS and whose),
    "skipped" (lines)}. `packed`: also time the packed QKV shape (not in the layer's sum). `progress`: called
    with each shape's record as it is done.
    """
    from bertbuild.host import machine_note

    name, hidden, ffn = _resolve(model)
    threads = threads or os.cpu_count() or 1
    m = batch * seq
    skipped: list[str] = []
    kinds: list[str] = []
    if "onnxruntime" in runtimes:
        kinds += ["ort_fp32", "ort_u8s8", "ort_u8s8_to_float"]
    if "openvino" in runtimes:
        kinds += _openvino_kinds(skipped)
    ort_kind = {"ort_fp32": "fp32", "ort_u8s8": "int8", "ort_u8s8_to_float": "int8_to_float"}
    record = {"model": name, "hidden": hidden, "ffn": ffn, "batch": batch, "seq": seq, "tokens": m,
              "threads": threads, "machine": machine_note(), "kinds": kinds, "computes": {}, "shapes": []}
    for shape, (k, n) in gemm_shapes(hidden, ffn, packed).items():
        times = {}
        for kind in kinds:
            if kind in ort_kind:
                times[kind] = seconds_per_call(ort_kind[kind], k, n, threads, seconds, m)
            else:
                times[kind], computes = openvino_seconds_per_call(kind.removeprefix("ov_"), k, n, threads, seconds, m)
                record["computes"].setdefault(kind, {})[shape] = computes
        row = {"name": shape, "k": k, "n": n, "per_layer": PER_LAYER.get(shape, 0), "seconds": times,
               "gops": {kind: 2 * m * k * n / t / 1e9 for kind, t in times.items()}}
        record["shapes"].append(row)
        if progress:
            progress(row)
    layer_ops = sum(2 * m * r["k"] * r["n"] * r["per_layer"] for r in record["shapes"])
    record["layer"] = {}
    for kind in kinds:
        layer_seconds = sum(r["seconds"][kind] * r["per_layer"] for r in record["shapes"])
        record["layer"][kind] = {"seconds": layer_seconds, "gops": layer_ops / layer_seconds / 1e9}
    int8 = [kind for kind in kinds if KINDS[kind][2]]
    best = max(int8, key=lambda kind: record["layer"][kind]["gops"], default=None)
    record["ceiling_kind"] = best
    record["ceiling_gops"] = record["layer"][best]["gops"] if best else None
    record["skipped"] = skipped
    return record


def _columns(kinds: list[str], runtime: str) -> list[str]:
    return [kind for kind in kinds if KINDS[kind][0] == runtime]


def _ratio_columns(columns: list[str]) -> list[tuple[str, str]]:
    """(INT8 kind, float kind) pairs to print as speed ratios: each INT8 kind over each float kind."""
    return [(i, f) for i in columns if KINDS[i][2] for f in columns if not KINDS[f][2]]


def _header(columns: list[str]) -> tuple[str, list[int]]:
    titles = [f"{KINDS[c][1]} GOPS" for c in columns] + [f"{KINDS[i][1]}/{KINDS[f][1]}" for i, f in
                                                          _ratio_columns(columns)]
    widths = [max(10, len(t)) for t in titles]
    return f"{'GEMM':15s} {'K x N':>11s} " + " ".join(f"{t:>{w}s}" for t, w in zip(titles, widths)), widths


def _line(label: str, shape: str, columns: list[str], gops: dict, widths: list[int]) -> str:
    cells = [f"{gops[c]:.0f}" for c in columns] + [f"{gops[i] / gops[f]:.2f}x" for i, f in _ratio_columns(columns)]
    return f"{label:15s} {shape:>11s} " + " ".join(f"{c:>{w}s}" for c, w in zip(cells, widths))


def print_report(record: dict, printed_rows: bool = False) -> None:
    """Per-runtime tables of `ceiling`'s record (shape rows unless `printed_rows`), the whole layer, the ceiling."""
    for runtime, title in (("onnxruntime", "ONNX Runtime (CPU EP)"), ("openvino", "OpenVINO CPU")):
        columns = _columns(record["kinds"], runtime)
        if not columns:
            continue
        header, widths = _header(columns)
        print(f"\n{title}, GOPS = 2*M*K*N per call:")
        print(header)
        print("-" * len(header))
        for row in record["shapes"]:
            print(_line(row["name"], f"{row['k']} x {row['n']}", columns, row["gops"], widths))
        layer = {c: record["layer"][c]["gops"] for c in columns}
        print(_line("one layer", "(QKV,O,FFN)", columns, layer, widths))
        print("one layer's weight GEMMs, ms per call: " +
              ", ".join(f"{KINDS[c][1]} {record['layer'][c]['seconds'] * 1e3:.1f}" for c in columns))
        for kind, shapes in record["computes"].items():
            if KINDS[kind][0] == runtime:
                print(f"  {KINDS[kind][1]:10s} computes: " + ", ".join(sorted(set(shapes.values()))))
    for line in record["skipped"]:
        print(f"skipped: {line}")
    if record["ceiling_kind"]:
        runtime, title, _ = KINDS[record["ceiling_kind"]]
        where = f"{record['model']} shapes" if record["model"] in MODELS else "the model's shapes"
        print(f"\nceiling: {record['ceiling_gops']:.0f} GOPS INT8 whole layer ({runtime} {title}) at {where} "
              f"(M {record['tokens']}, hidden {record['hidden']}, FFN {record['ffn']}), "
              f"{record['threads']} thread(s); {record['machine']}")
    else:
        print("\nceiling: no INT8 kernel timed")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=tuple(MODELS), default="minilm",
                        help="the GEMM shapes: " + ", ".join(f"{k} {h}/{f}" for k, (h, f) in MODELS.items()))
    parser.add_argument("--batch", type=int, default=8, help="sequences (default 8)")
    parser.add_argument("--seq", type=int, default=384,
                        help="tokens per sequence (default 384; BERT-base's config: 128)")
    parser.add_argument("--runtime", action="append", choices=RUNTIMES,
                        help="a runtime to time (repeatable; default both)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--seconds", type=float, default=1.5, help="timing budget per graph")
    parser.add_argument("--json", type=Path, help="also write every figure to this JSON file")
    args = parser.parse_args(argv)

    name, hidden, ffn = _resolve(args.model)
    from bertbuild.host import machine_note

    print(f"{name}: hidden {hidden}, FFN {ffn}; M = {args.batch * args.seq} tokens (b{args.batch} s{args.seq}), "
          f"{args.threads} thread(s); {machine_note()}", flush=True)

    def progress(row):
        print(f"  timed {row['name']:15s} {row['k']} x {row['n']}", flush=True)

    record = ceiling(args.model, args.batch, args.seq, args.threads, args.seconds,
                     runtimes=tuple(args.runtime or RUNTIMES), progress=progress)
    print_report(record)
    if args.json:
        args.json.write_text(json.dumps(record, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
