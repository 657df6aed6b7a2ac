"""`bertbuild bench --lengths heldout`: whole held-out passes, padded and bucketed, in windows/s and real tokens/s."""

from __future__ import annotations

import json

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
    assert [line.split()[1] for line in lines[3:]] == ["padded", "32"]


def test_heldout_flags_are_user_errors_elsewhere(tiny_onnx, capsys):
    assert main(["bench", "--onnx", str(tiny_onnx["fused"]), "--length-bucket", "64"]) == 2
    assert "go with --lengths heldout" in capsys.readouterr().err
    with pytest.raises(SystemExit) as stop:  # argparse refuses it: one line, exit 2
        main(["bench", "--onnx", str(tiny_onnx["fused"]), "--lengths", "heldout", "--length-bucket", "-1"])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and "argument --length-bucket: must be >= 0 (got -1)" in err and err.count("\n") == 1
