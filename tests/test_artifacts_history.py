"""`bertbuild artifacts history`: one row per released run, from manifests, plus a trend PNG."""

from __future__ import annotations

import json

import pytest

from bertbuild.artifacts.history import precisions_in, read_history
from bertbuild.host import package_versions
from bertbuild.artifacts.publish import publish_bundle
from bertbuild.evaluation.gates import GateResult
from bertbuild.artifacts.store import ArtifactStore
from bertbuild.cli import main
from bertbuild.reporting.history_plot import write_trend_plot
from bertbuild.reporting.history_table import history_table

PNG = b"\x89PNG\r\n\x1a\n"


def rows(f1: float, p50: float | None) -> list[dict]:
    return [
        {"engine": "tensorflow-fp32", "precision": "fp32 (reference)", "exact_match": 80.0, "f1": 88.0,
         "p50_ms": None, "questions": 100},
        {"engine": "onnxruntime-int8", "precision": "int8", "exact_match": f1 - 8, "f1": f1, "p50_ms": p50,
         "argmax_agreement": 0.97, "questions": 100},
        {"engine": "onnxruntime-fp32", "precision": "fp32", "exact_match": 80.0, "f1": 88.0, "p50_ms": 12.5,
         "questions": 100},
    ]


@pytest.fixture
def history_store(tmp_path) -> ArtifactStore:
    store = ArtifactStore(tmp_path / "store")
    report = tmp_path / "results.json"
    report.write_text("{}")
    publish_bundle(store, "tiny", "20260101T020000Z-old", {"results.json": report}, {}, [GateResult("e", "g", None, None, True, "max")], True)
    for run_id, f1, p50 in (("20260102T020000Z-aaaa", 87.1, 6.25), ("20260103T020000Z-bbbb", 86.2, None)):
        publish_bundle(store, "tiny", run_id, {"results.json": report}, {"results": rows(f1, p50)},
                       [GateResult("e", "g", None, None, True, "max")], True)
    publish_bundle(store, "tiny", "20260104T020000Z-fail", {"results.json": report}, {"results": rows(1, 1)},
                   [GateResult("e", "g", None, None, False, "max")], False)
    return store


def test_history_reads_released_runs_oldest_first(history_store):
    entries = read_history(history_store, "tiny")
    assert [e.run_id for e in entries] == ["20260101T020000Z-old", "20260102T020000Z-aaaa", "20260103T020000Z-bbbb"]
    assert entries[0].results == {}  # published before results were recorded
    assert entries[1].results["int8"] == {"exact_match": 79.1, "f1": 87.1, "p50_ms": 6.25}
    assert entries[2].results["int8"]["p50_ms"] is None
    assert precisions_in(entries) == ["fp32 (reference)", "fp32", "int8"]
    assert entries[1].versions["onnxruntime"] == package_versions()["onnxruntime"]


def test_history_table_has_one_row_per_run(history_store):
    table = history_table(read_history(history_store, "tiny"))
    header, *body = table
    assert header[:3] == ["date", "run", "commit"] and "onnxruntime" in header
    assert header[-3:] == ["fp32 (reference) EM/F1 p50", "fp32 EM/F1 p50", "int8 EM/F1 p50"]
    assert len(body) == 3
    assert body[0][-3:] == ["-", "-", "-"]
    assert body[1][-1] == "79.10/87.10 6.2ms" and body[2][-1] == "78.20/86.20 -"
    assert body[1][-3] == "80.00/88.00 -"


def test_trend_plot_is_a_png(history_store, tmp_path):
    path = write_trend_plot(read_history(history_store, "tiny"), tmp_path / "plots" / "trend.png")
    assert path.read_bytes()[:8] == PNG and path.stat().st_size > 10_000


def test_cli_history_prints_rows_and_writes_the_plot(history_store, tmp_path, capsys):
    plot = tmp_path / "trend.png"
    assert main(["artifacts", "history", "--store", str(tmp_path / "store"), "--model", "tiny",
                 "--plot", str(plot)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:3] == ["date", "run", "commit"]
    assert [line.split()[1] for line in out[1:4]] == ["20260101T020000Z-old", "20260102T020000Z-aaaa",
                                                      "20260103T020000Z-bbbb"]
    assert "fail" not in "\n".join(out) and plot.read_bytes()[:8] == PNG
    assert f"trend plot: {plot}" in out[-1]


def test_cli_history_of_an_unknown_model_and_a_damaged_manifest(history_store, tmp_path, capsys):
    assert main(["artifacts", "history", "--store", str(tmp_path / "store"), "--model", "nope"]) == 0
    assert "no released runs of nope" in capsys.readouterr().out
    path = f"{history_store.run_path('tiny', '20260102T020000Z-aaaa')}/manifest.json"
    manifest = json.loads(history_store.read_bytes(path))
    manifest["files"] = {"../x": manifest["files"]["results.json"]}
    history_store.write_atomic(path, json.dumps(manifest).encode())
    assert main(["artifacts", "history", "--store", str(tmp_path / "store"), "--model", "tiny",
                 "--plot", str(tmp_path / "p.png")]) == 0
    assert "(unreadable manifest: manifest.json lists an unsafe file name '../x'" in capsys.readouterr().out
