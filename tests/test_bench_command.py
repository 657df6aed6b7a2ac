"""`bertbuild bench`: backends x files in one run (rows, compute precisions, skips), and `--lengths heldout`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bertbuild.cli import main


def test_heldout_passes_time_each_bucket_of_each_model(tiny_onnx, tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(["bench", "--onnx", str(tiny_onnx["fp32"]), "--onnx", str(tiny_onnx["fused"]), "--lengths", "heldout",
                 "--limit", "4", "--seq", "256", "--batch", "4", "--length-bucket", "0", "--length-bucket", "64",
                 "--threads", "1", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "held-out windows at seq 256 in batches of 4" in printed
    assert "windows/s" in printed and "real tok/s" in printed and "padded" in printed
    record = json.loads(out.read_text())
    rows = record["rows"]
    assert [(r["name"], r["length_bucket"]) for r in rows] == [
        ("model-fp32.onnx", 0), ("model-fp32.onnx", 64), ("model-fused.onnx", 0), ("model-fused.onnx", 64)]
    assert len({r["windows"] for r in rows}) == 1 and len({r["real_tokens"] for r in rows}) == 1
    padded, bucketed = rows[0], rows[1]
    assert padded["fed_positions"] == padded["windows"] * 256  # every window padded to --seq
    assert bucketed["fed_positions"] < padded["fed_positions"] and bucketed["padding_fed"] < padded["padding_fed"]
    assert all(r["windows_per_s"] > 0 and r["real_tokens_per_s"] > 0 for r in rows)


def test_the_default_buckets_are_padded_and_the_eval_default(tiny_onnx, capsys):
    assert main(["bench", "--onnx", str(tiny_onnx["fused"]), "--lengths", "heldout", "--limit", "2", "--seq", "128",
                 "--threads", "1", "--warmup", "0"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[3] for line in lines[3:]] == ["padded", "32"]  # backend, file, computes, bucket


def test_heldout_flags_are_user_errors_elsewhere(tiny_onnx, capsys):
    assert main(["bench", "--onnx", str(tiny_onnx["fused"]), "--length-bucket", "64"]) == 2
    assert "go with --lengths heldout" in capsys.readouterr().err
    with pytest.raises(SystemExit) as stop:  # argparse refuses it: one line, exit 2
        main(["bench", "--onnx", str(tiny_onnx["fused"]), "--lengths", "heldout", "--length-bucket", "-1"])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and "argument --length-bucket: must be >= 0 (got -1)" in err and err.count("\n") == 1


# --- several backends in one run: which engine to deploy on this host -------------------------------------------

def _graph_file(path, initializers=(), nodes=()) -> str:
    """A small ONNX file: x [1, 4] float -> y, through `nodes`, with `initializers` (name, TensorProto type)."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper, save

    tensors = []
    for name, elem_type in initializers:
        tensor = numpy_helper.from_array(np.ones((4, 4), np.float32), name)
        if elem_type != TensorProto.FLOAT:  # the type is what is judged; the bytes need not be real ones
            tensor = helper.make_tensor(name, elem_type, [4, 4], [1.0] * 16)
        tensors.append(tensor)
    nodes = list(nodes) or [helper.make_node("Identity", ["x"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])], tensors)
    save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)]), str(path))
    return str(path)


def test_a_file_says_what_it_carries(tmp_path):
    from onnx import TensorProto, helper

    from bertbuild.commands.bench import file_precision

    qdq = [helper.make_node("QuantizeLinear", ["x", "s"], ["q"]),
           helper.make_node("DequantizeLinear", ["q", "s"], ["y"])]
    assert file_precision(_graph_file(tmp_path / "fp32.onnx", [("w", TensorProto.FLOAT)])) == "fp32"
    mixed = [("w", TensorProto.FLOAT16), ("b", TensorProto.FLOAT)]  # FP16 weights, FP32 islands
    assert file_precision(_graph_file(tmp_path / "fp16.onnx", mixed)) == "fp16"
    assert file_precision(_graph_file(tmp_path / "bf16.onnx", [("w", TensorProto.BFLOAT16)])) == "bf16"
    assert file_precision(_graph_file(tmp_path / "int8.onnx", [("w", TensorProto.FLOAT16)], qdq)) == "int8"
    (tmp_path / "text.onnx").write_text("not a model\n")
    assert file_precision(tmp_path / "text.onnx") is None


def test_openvino_times_an_int8_file_with_both_float_parts_where_the_cpu_has_bf16(tmp_path, monkeypatch):
    from onnx import TensorProto, helper

    from bertbuild.backends import openvino
    from bertbuild.commands.bench import _pairs

    qdq = [helper.make_node("QuantizeLinear", ["x", "s"], ["q"]),
           helper.make_node("DequantizeLinear", ["q", "s"], ["y"])]
    int8 = Path(_graph_file(tmp_path / "int8.onnx", [], qdq))
    bf16 = Path(_graph_file(tmp_path / "bf16.onnx", [("w", TensorProto.BFLOAT16)]))
    monkeypatch.setattr(openvino, "capabilities", lambda: ["FP32", "BF16", "INT8"])
    pairs, skipped = _pairs(["onnxruntime", "openvino"], [int8, bf16], ["int8.onnx", "bf16.onnx"])
    assert [(p.backend, p.name, p.hint) for p in pairs] == [
        ("onnxruntime", "int8.onnx", None), ("openvino", "int8.onnx", "f32"), ("openvino", "int8.onnx", "bf16"),
        ("openvino", "bf16.onnx", "bf16")]
    assert skipped == ["skipped: onnxruntime on bf16.onnx (bf16): ONNX Runtime's CPU provider has no BF16 arithmetic"]
    monkeypatch.setattr(openvino, "capabilities", lambda: ["FP32", "INT8"])
    pairs, skipped = _pairs(["openvino"], [int8, bf16], ["int8.onnx", "bf16.onnx"])
    assert [(p.name, p.hint) for p in pairs] == [("int8.onnx", "f32")]
    assert [line.split(":")[1].strip() for line in skipped] == ["openvino on int8.onnx (int8+bf16)",
                                                                "openvino on bf16.onnx (bf16)"]
    assert all("this CPU has no BF16 arithmetic" in line for line in skipped)


def test_both_backends_time_every_file_in_one_run(tiny_onnx, tmp_path, capsys):
    pytest.importorskip("openvino")
    out = tmp_path / "bench.json"
    assert main(["bench", "--backend", "onnxruntime", "--backend", "openvino", "--onnx", str(tiny_onnx["fp32"]),
                 "--onnx", str(tiny_onnx["fused"]), "--iterations", "2", "--warmup", "0", "--batch", "2",
                 "--seq", "64", "--threads", "1", "--json", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "ONNX Runtime " in lines[0] and "CPUExecutionProvider, 1 intra-op thread(s)" in lines[0]
    assert "OpenVINO " in lines[0] and "1 inference thread(s)" in lines[0] and "batch 2 x seq 64" in lines[0]
    assert lines[1].split() == ["backend", "file", "computes", "p50", "ms", "p95", "ms", "mean", "ms", "seq/s",
                                "iters", "vs", "first"]
    table = [line.split() for line in lines[3:]]
    assert [row[:3] for row in table] == [["onnxruntime", "model-fp32.onnx", "fp32"],
                                          ["onnxruntime", "model-fused.onnx", "fp32"],
                                          ["openvino", "model-fp32.onnx", "fp32"],  # f32 hint: never the CPU's BF16
                                          ["openvino", "model-fused.onnx", "fp32"]]
    assert table[0][-1] == "1.00x" and all(row[-1].endswith("x") for row in table)
    record = json.loads(out.read_text())
    assert set(record["backends"]) == {"onnxruntime", "openvino"} and record["threads"] == 1
    assert record["backends"]["openvino"]["threads"] == 1 and record["backends"]["openvino"]["version"]
    assert [(r["backend"], r["name"], r["compute_precision"], r["iterations"]) for r in record["rows"]] == [
        (b, f, "fp32", 2) for b in ("onnxruntime", "openvino") for f in ("model-fp32.onnx", "model-fused.onnx")]
    assert all(r["p50_ms"] > 0 and r["sequences_per_s"] > 0 for r in record["rows"]) and record["skipped"] == []


def test_a_bf16_file_is_skipped_on_onnx_runtime_with_one_line(tiny_onnx, tmp_path, capsys):
    from onnx import TensorProto

    bf16 = _graph_file(tmp_path / "model-bf16.onnx", [("w", TensorProto.BFLOAT16)])
    out = tmp_path / "bench.json"
    assert main(["bench", "--onnx", str(tiny_onnx["fused"]), "--onnx", bf16, "--iterations", "1", "--warmup", "0",
                 "--batch", "1", "--seq", "32", "--threads", "1", "--json", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "OpenVINO" not in lines[0]  # only what ran is named
    assert [line.split()[:2] for line in lines[3:-1]] == [["onnxruntime", "model-fused.onnx"]]
    assert lines[-1] == ("skipped: onnxruntime on model-bf16.onnx (bf16): ONNX Runtime's CPU provider has no BF16 "
                         "arithmetic")
    record = json.loads(out.read_text())
    assert len(record["rows"]) == 1 and record["skipped"] == [lines[-1]] and set(record["backends"]) == {"onnxruntime"}
    # Nothing left to time is one line and exit 2.
    assert main(["bench", "--onnx", bf16, "--iterations", "1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "nothing to time: onnxruntime on model-bf16.onnx (bf16)" in err


def test_an_unknown_or_unavailable_backend_is_one_line_and_exit_2(tiny_onnx, monkeypatch, capsys):
    from bertbuild.backends.openvino import OpenVinoBackend

    assert main(["bench", "--backend", "tflite", "--onnx", str(tiny_onnx["fused"])]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("bertbuild: error: ") and "unknown backend 'tflite'" in err
    monkeypatch.setattr(OpenVinoBackend, "available", lambda self: (False, "openvino is not installed"))
    assert main(["bench", "--backend", "onnxruntime", "--backend", "openvino", "--onnx", str(tiny_onnx["fused"])]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "backend 'openvino' is not available on this host: openvino is not installed" in err


def test_heldout_passes_compare_backends_bucket_by_bucket(tiny_onnx, tmp_path, capsys):
    pytest.importorskip("openvino")
    out = tmp_path / "bench.json"
    assert main(["bench", "--backend", "openvino", "--backend", "onnxruntime", "--onnx", str(tiny_onnx["fused"]),
                 "--lengths", "heldout", "--limit", "2", "--seq", "64", "--batch", "2", "--length-bucket", "0",
                 "--length-bucket", "32", "--threads", "1", "--json", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "vs first: over the first row's windows/s at the same bucket" in lines[0]
    table = [line.split() for line in lines[3:]]
    assert [row[:4] for row in table] == [["openvino", "model-fused.onnx", "fp32", "padded"],
                                          ["openvino", "model-fused.onnx", "fp32", "32"],
                                          ["onnxruntime", "model-fused.onnx", "fp32", "padded"],
                                          ["onnxruntime", "model-fused.onnx", "fp32", "32"]]
    assert [row[-1] for row in table[:2]] == ["1.00x", "1.00x"] and table[0][-2] == "1.00x"
    rows = json.loads(out.read_text())["rows"]
    assert [(r["backend"], r["length_bucket"]) for r in rows] == [
        ("openvino", 0), ("openvino", 32), ("onnxruntime", 0), ("onnxruntime", 32)]
    assert len({r["windows"] for r in rows}) == 1 and all(r["windows_per_s"] > 0 for r in rows)
