"""Property: junk in a `--set`, a config file or a number flag is never a traceback.

Generated values go through the real CLI entry point in-process (`main`, argument parsing, config
loading and validation), with `run --check` and the checks after the config (fetch, memory, store)
stubbed out so each example takes milliseconds. Every example must end in exit 0 (accepted: the config
validates) or exit 2 with exactly one stderr line starting `bertbuild: error:`.
"""

from __future__ import annotations

import argparse
import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bertbuild.cli import main
from bertbuild.commands.arguments import at_least
from bertbuild.config import load_config
from bertbuild.errors import ConfigError

KEYS = ["eval.limit", "eval.offset", "eval.max_seq_length", "eval.split", "model.name", "model.sha256",
        "engines.precisions", "engines.threads", "gates.int8.min_f1", "gates.fp16.max_f1_drop",
        "parity.max_abs_logit", "validation.tolerances.fp32.atol", "benchmark.seq", "output_dir",
        "precision.int8.percentile", "regression.max_latency_ratio_vs_latest", "cache.refresh", "publish.enabled",
        "no.such.key", "eval", "gates"]
SETTINGS = settings(max_examples=150, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

yaml_junk = st.one_of(
    st.text(max_size=30),
    st.sampled_from(["[1,", "*a", "\t", "{a: 1", ".nan", ".inf", "-.inf", "2020-01-01", "!!binary aGk=",
                     "!!set {a}", "!!python/tuple [1]", "[]", "{}", "null", "~", "-1", "0", "1e3", "1.0e999",
                     "'x'", '"\\x00"', "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]",
                     "&a [*a]", "? a", "- a", "|", ">", "%YAML 1.1", "---", "...", "a: b: c"]),
    st.integers().map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
)


@pytest.fixture()
def checks_stubbed(monkeypatch, tmp_path):
    """`run --check` stops after the config: the later checks read checkpoints and datasets (covered elsewhere)."""
    monkeypatch.setattr("bertbuild.preflight.preflight", lambda cfg: None)
    config = tmp_path / "run.yaml"
    config.write_text(f"model:\n  source: generated:tiny\noutput_dir: {tmp_path / 'out'}\n")
    return config


def _outcome(argv, capsys) -> tuple[int, list[str]]:
    capsys.readouterr()
    try:
        code = main([str(a) for a in argv])
    except SystemExit as stop:
        code = stop.code
    return code, capsys.readouterr().err.strip().splitlines()


def _one_line_or_accepted(code, lines, accepted: bool):
    if accepted:
        assert code == 0 and lines == [], (code, lines)
    else:
        assert code == 2 and len(lines) == 1 and lines[0].startswith("bertbuild: error:"), (code, lines)


@SETTINGS
@given(key=st.sampled_from(KEYS), value=yaml_junk)
def test_junk_set_values_are_accepted_or_one_line(key, value, checks_stubbed, capsys):
    code, lines = _outcome(["run", "--config", checks_stubbed, "--check", "--set", f"{key}={value}"], capsys)
    try:
        load_config(checks_stubbed, [f"{key}={value}"])
        accepted = True
    except ConfigError:
        accepted = False
    _one_line_or_accepted(code, lines, accepted)


@SETTINGS
@given(content=st.one_of(st.binary(max_size=200), st.text(max_size=200).map(str.encode),
                         st.builds(lambda k, v: f"model:\n  source: generated:tiny\n{k}: {v}\n".encode(),
                                   st.sampled_from(["eval", "gates", "output_dir", "engines", "publish", "x"]),
                                   yaml_junk)))
def test_junk_config_files_are_accepted_or_one_line(content, checks_stubbed, capsys):
    checks_stubbed.write_bytes(content)
    code, lines = _outcome(["run", "--config", checks_stubbed, "--check"], capsys)
    try:
        load_config(checks_stubbed)
        accepted = True
    except ConfigError:
        accepted = False
    _one_line_or_accepted(code, lines, accepted)


@SETTINGS
@given(text=st.one_of(st.text(max_size=20), st.floats(allow_nan=True, allow_infinity=True).map(str),
                      st.integers().map(str), st.sampled_from(["nan", "inf", "-inf", "NaN", "1e309", "0x10", "1_0"])),
       kind=st.sampled_from([int, float]), minimum=st.sampled_from([0, 1, 32]))
def test_number_flags_are_finite_and_in_range_or_refused(text, kind, minimum):
    parse = at_least(minimum, kind)
    try:
        value = parse(text)
    except argparse.ArgumentTypeError as error:
        assert "\n" not in str(error)
        return
    assert isinstance(value, kind) and math.isfinite(value) and value >= minimum


@SETTINGS
@given(flag=st.sampled_from(["--min-seconds", "--iterations", "--warmup", "--batch", "--seq", "--threads"]),
       text=st.one_of(st.text(min_size=1, max_size=12).filter(lambda t: not t.startswith("-")),
                      st.sampled_from(["nan", "inf", "1e309", "0", "-0", "5"])))
def test_bench_number_flags_never_trace_back(flag, text, tmp_path, capsys):
    # The model does not exist: an accepted flag value ends at "ONNX model not found", still one line, exit 2.
    code, lines = _outcome(["bench", "--onnx", tmp_path / "missing.onnx", flag, text], capsys)
    assert code == 2 and len(lines) == 1 and lines[0].startswith("bertbuild: error:"), (code, lines)
