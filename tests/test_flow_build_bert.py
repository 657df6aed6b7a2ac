"""The build-bert flow end to end on a generated checkpoint, under a Prefect test API."""

from __future__ import annotations

import json

import pytest

from bertbuild.errors import GateFailed


def _config(tmp_path, **parity):
    return {
        "model": {"source": "generated:tiny", "name": "tiny"},
        "eval": {"limit": 10, "batch_size": 4},
        "parity": parity or {"max_abs_logit": 1e-4},
        "output_dir": str(tmp_path / "run"),
    }


def test_flow_exports_evaluates_and_reports(tmp_path, prefect_harness):
    from flows.build_bert import build_bert

    result = build_bert(_config(tmp_path))
    engines = [row["engine"] for row in result["rows"]]
    assert engines == ["tensorflow-fp32", "onnxruntime-fp32"]
    onnx_row = result["rows"][1]
    assert onnx_row["max_abs_dlogit"] <= 1e-4
    assert onnx_row["questions"] == 10
    # Identical logits up to 1e-4 give identical answers, so identical scores.
    assert onnx_row["f1"] == result["rows"][0]["f1"]
    saved = json.loads((tmp_path / "run" / "results.json").read_text())
    assert saved["results"] == result["rows"]
    predictions = json.loads((tmp_path / "run" / "predictions-onnxruntime-fp32.json").read_text())
    assert len(predictions) == 10 and all(isinstance(v, str) for v in predictions.values())
    assert "onnxruntime-fp32" in result["table"] and "F1" in result["table"]


def test_parity_gate_fails_the_flow_run(tmp_path, prefect_harness):
    from flows.build_bert import build_bert

    state = build_bert(_config(tmp_path, max_abs_logit=1e-12), return_state=True)
    assert state.is_failed()
    with pytest.raises(GateFailed, match="parity"):
        state.result()
