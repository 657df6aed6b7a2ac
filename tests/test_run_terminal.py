"""What `bertbuild run` shows on its terminal: steps and verdicts, not Polygraphy's internals; the table once.

Polygraphy's logger and its verbosity are process-wide, and validations of one
engine group run side by side in threads: setting the verbosity around each
comparison (as before) let one thread's restore unmute another's per-batch
statistics. `polygraphy_log.captured` routes each thread's messages to its own
report file instead (`validation-<engine>.log` in the bundle).
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import yaml

PROJECT_ROOT = Path(__file__).resolve().parent.parent
HEADER = "engine  "  # the results table's header row starts so
POLYGRAPHY_DETAIL = ("Stats: mean=", "Accuracy Summary", "Difference is within tolerance", "Activating and starting")


def _comparison_chatter(name: str, rounds: int, barrier: threading.Barrier) -> None:
    from polygraphy.logger import G_LOGGER

    barrier.wait()
    for i in range(rounds):
        G_LOGGER.info(f"{name}: Stats: mean={i}")
        G_LOGGER.verbose(lambda: f"{name}: verbose {i}")


def test_side_by_side_captures_keep_polygraphy_off_the_terminal(tmp_path, capfd, caplog):
    from polygraphy.logger import G_LOGGER

    from bertbuild.evaluation.polygraphy_log import LOGGER_NAME, captured

    barrier = threading.Barrier(3)

    def validation(name: str) -> None:
        with captured(tmp_path / f"{name}.log"):
            _comparison_chatter(name, 200, barrier)

    threads = [threading.Thread(target=validation, args=(n,)) for n in ("a", "b", "c")]
    with caplog.at_level(logging.WARNING, logger=LOGGER_NAME):
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    out, err = capfd.readouterr()
    assert "Stats" not in out + err
    for name in "abc":
        lines = (tmp_path / f"{name}.log").read_text().splitlines()
        assert len(lines) == 200 and all(line.startswith("[I] ") and f"{name}: Stats" in line for line in lines)
    assert not caplog.records  # nothing at WARNING or above was logged

    with captured(tmp_path / "w.log"):  # warnings still reach the run's log
        with caplog.at_level(logging.WARNING, logger=LOGGER_NAME):
            G_LOGGER.warning("tolerance looks odd")
    assert [r.getMessage() for r in caplog.records] == ["[W] tolerance looks odd"]
    assert (tmp_path / "w.log").read_text() == "[W] tolerance looks odd\n"

    G_LOGGER.info("outside any capture")  # Polygraphy's own behaviour where nothing captures
    assert "outside any capture" in capfd.readouterr().out


def test_show_detail_sends_the_detail_to_the_log_too(tmp_path, caplog):
    from polygraphy.logger import G_LOGGER

    from bertbuild.evaluation.polygraphy_log import LOGGER_NAME, captured, show_detail

    show_detail(True)
    try:
        with caplog.at_level(logging.DEBUG, logger=LOGGER_NAME), captured(tmp_path / "v.log"):
            G_LOGGER.info("Stats: mean=1")
    finally:
        show_detail(False)
    assert "[I] Stats: mean=1" in [r.getMessage() for r in caplog.records]


def _run(tmp_path: Path, *flags: str) -> subprocess.CompletedProcess:
    config = {
        "model": {"source": "generated:tiny", "name": "tiny"},
        "eval": {"limit": 10, "batch_size": 4},
        "validation": {"batches": 2},
        "benchmark": {"batch": 2, "seq": 128, "warmup": 1, "iterations": 2},
        # two engines: scored, then validated side by side in threads (where the detail used to leak)
        "engines": {"precisions": ["fp32", "fused-fp32"], "backend": "onnxruntime"},
        "publish": {"store": str(tmp_path / "store")},
        "cache": {"dir": str(tmp_path / "cache")},
        "output_dir": str(tmp_path / "runs"),
        "regression": {"max_latency_ratio_vs_latest": None},
    }
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(config))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_HOME=str(tmp_path / "prefect"), DO_NOT_TRACK="1", PREFECT_SERVER_ANALYTICS_ENABLED="false",
               TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run([sys.executable, "-m", "bertbuild.cli", "run", "--config", str(path), *flags],
                          cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=900)


@pytest.mark.slow
def test_bertbuild_run_shows_steps_verdicts_and_the_table_once(tmp_path):
    result = _run(tmp_path)
    terminal = result.stdout + result.stderr
    assert result.returncode == 0, terminal[-4000:]
    leaked = [line for line in terminal.splitlines() if any(d in line for d in POLYGRAPHY_DETAIL)
              or line.startswith(("[I]", "[W]", "[V]"))]
    assert not leaked, leaked[:10]
    assert sum(line.startswith(HEADER) for line in terminal.splitlines()) == 1, terminal[-4000:]
    assert result.stdout.count("onnxruntime-fused-fp32") == 1  # the table on stdout, its row once
    for step in ("export-onnx", "build-engine", "score-engine", "validate-engine", "benchmark-engine"):
        assert f"Task run '{step}-" in result.stderr and "- Started" in result.stderr, step
    assert result.stderr.count("PASSED: onnxruntime-") == 2  # the one-line verdict per engine stays
    (run_dir,) = (tmp_path / "runs" / "tiny").glob("2*")
    for engine in ("onnxruntime-fp32", "onnxruntime-fused-fp32"):  # the detail is in the bundle instead
        detail = (run_dir / f"validation-{engine}.log").read_text()
        assert "Stats: mean=" in detail and "Accuracy Summary" in detail and "PASSED" in detail
    from bertbuild.artifacts.store import ArtifactStore

    files = ArtifactStore(tmp_path / "store").read_manifest("tiny", run_dir.name).files
    assert "validation-onnxruntime-fp32.log" in files and "validation-onnxruntime-fused-fp32.log" in files


def test_verbose_flag_is_parsed():
    from bertbuild.cli import build_parser

    assert build_parser().parse_args(["run", "--config", "c.yaml", "-v"]).verbose
    assert build_parser().parse_args(["run", "--config", "c.yaml", "--verbose"]).verbose
    assert not build_parser().parse_args(["run", "--config", "c.yaml"]).verbose
