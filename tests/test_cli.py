"""The console script: one-line errors with exit code 2 for user mistakes."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys

import pytest

from bertbuild.cli import main


def _config(tmp_path, source):
    path = tmp_path / "run.yaml"
    path.write_text(f"model:\n  source: {source}\noutput_dir: {tmp_path / 'out'}\n")
    return str(path)


def test_help_is_fast_and_lists_commands():
    # No TensorFlow import for --help: it must stay instant.
    from bertbuild.cli import COMMANDS

    code = ("import sys, bertbuild.cli as c; p = c.build_parser(); p.print_help(); "
            "print('tensorflow imported:', 'tensorflow' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.splitlines()[-1] == "tensorflow imported: False"
    listed = re.findall(r"^    (\S+)\s{2,}\S", out, re.MULTILINE)  # argparse's "    name  help" lines
    assert listed == [name.replace("_", "-") for name in COMMANDS] and len(COMMANDS) >= 10


@pytest.mark.parametrize("damage, fragment", [
    (lambda d: (d / "vocab.txt").write_text("[PAD]\n"), "vocab_size 30522"),
    (lambda d: (d / "bert_config.json").write_text("nope"), "not valid JSON"),
    (lambda d: [p.unlink() for p in d.glob("model.ckpt*")], "no checkpoint found"),
])
def test_bad_checkpoint_exits_2_with_one_line(tmp_path, tiny_checkpoint, capsys, damage, fragment):
    broken = tmp_path / "ckpt"
    shutil.copytree(tiny_checkpoint, broken)
    damage(broken)
    assert main(["run", "--config", _config(tmp_path, broken)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("bertbuild: error: ") and fragment in err
    assert "Traceback" not in err


def test_missing_variable_exits_2_naming_it(tmp_path, tiny_checkpoint, capsys, vocab_path):
    from bertbuild.model.checkpoint import load_checkpoint
    from bertbuild.model.checkpoint_writer import save_checkpoint

    checkpoint = load_checkpoint(tiny_checkpoint)
    weights = {k: v for k, v in checkpoint.weights.items() if k != "cls/squad/output_bias"}
    save_checkpoint(tmp_path / "ckpt", checkpoint.config, vocab_path, weights, step=5)
    assert main(["run", "--config", _config(tmp_path, tmp_path / "ckpt")]) == 2
    err = capsys.readouterr().err
    assert "missing variable 'cls/squad/output_bias'" in err and "model.ckpt-5" in err


def test_bad_config_exits_2(tmp_path, capsys):
    path = tmp_path / "c.yaml"
    path.write_text(json.dumps({"model": {"source": "generated:tiny"}, "eval": {"limt": 3}}))
    assert main(["run", "--config", str(path)]) == 2
    assert "eval.limt: unknown key" in capsys.readouterr().err


def test_bertbuild_log_lines_get_prefects_handlers_so_they_reach_the_run_log():
    # In a fresh process: Prefect reads PREFECT_LOGGING_EXTRA_LOGGERS when it first sets up logging.
    code = ("import os, logging; os.environ.pop('PREFECT_LOGGING_EXTRA_LOGGERS', None)\n"
            "from bertbuild.cli import prefect_environment; prefect_environment()\n"
            "from prefect import flow  # noqa: F401 - sets up Prefect's logging\n"
            "from prefect.logging.handlers import APILogHandler\n"
            "print(any(isinstance(h, APILogHandler) for h in logging.getLogger('bertbuild').handlers))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "True"
