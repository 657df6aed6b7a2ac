"""Overrides merge into the project defaults; a bad config is one line, exit 2, naming every problem.

Property-based (hypothesis): random sets of `--set` overrides never change a
field they did not name, and random sets of bad values always give one line
that names each bad key.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bertbuild.cli import main
from bertbuild.config import load_config
from bertbuild.errors import ConfigError

DEFAULT = Path(__file__).resolve().parent.parent / "configs" / "default.yaml"


def _decimal(low: float, high: float):
    # Four decimals: str() then stays in plain notation, which YAML reads back as the same float.
    return st.floats(low, high).map(lambda x: round(x, 4))


# Keys a user overrides, each with the values it accepts.
VALID = {
    "gates.int8.max_f1_drop": _decimal(0.01, 5),
    "gates.int8.min_argmax_agreement": _decimal(0, 1),
    "gates.fp16.max_f1_drop": _decimal(0.01, 5),
    "gates.fp32.min_em": _decimal(0, 100),
    "gates.fused-fp32.drop_judged_on": st.sampled_from(["point", "interval"]),
    "validation.tolerances.int8.atol": _decimal(0.001, 2),
    "validation.tolerances.fp16.rtol": _decimal(0.001, 2),
    "validation.tolerances.fp32.error_stat": st.sampled_from(["elemwise", "mean", "median", "max"]),
    "validation.batches": st.integers(1, 8),
    "eval.limit": st.integers(1, 500),
    "benchmark.iterations": st.integers(1, 50),
    "regression.max_f1_drop_vs_latest": _decimal(0, 3),
}

# Keys with values they refuse (each a different kind of mistake).
BAD = {
    "eval.limit": ["0", "-3", "many"],
    "validation.batches": ["0"],
    "gates.int8.min_argmax_agreement": ["1.5", "-0.1"],
    "validation.tolerances.int8.atol": ["0", "tight"],
    "benchmark.seq": ["4", "1024"],
    "eval.no_such_key": ["1"],
    "gates.int9.max_f1_drop": ["1.0"],
}


def _leaves(tree, prefix=""):
    """Every scalar of a dumped config, by dotted path."""
    if isinstance(tree, dict):
        for key, value in tree.items():
            yield from _leaves(value, f"{prefix}{key}.")
    else:
        yield prefix[:-1], tree


BASE = dict(_leaves(load_config(DEFAULT).model_dump(mode="json")))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from(sorted(VALID)), min_size=1, max_size=5, unique=True).flatmap(
    lambda keys: st.fixed_dictionaries({key: VALID[key] for key in keys})))
def test_overrides_change_what_they_name_and_nothing_else(overrides):
    cfg = load_config(DEFAULT, [f"{key}={value}" for key, value in overrides.items()])
    after = dict(_leaves(cfg.model_dump(mode="json")))
    assert set(after) == set(BASE)  # no field dropped, none appeared
    for path, value in after.items():
        assert value == overrides.get(path, BASE[path]), path


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.sampled_from(sorted(BAD)), min_size=1, max_size=3, unique=True).flatmap(
    lambda keys: st.fixed_dictionaries({key: st.sampled_from(BAD[key]) for key in keys})))
def test_bad_values_are_one_line_naming_every_bad_key_with_exit_2(bad):
    overrides = [f"{key}={value}" for key, value in bad.items()]
    with pytest.raises(ConfigError) as raised:
        load_config(DEFAULT, overrides)
    message = str(raised.value)
    assert "\n" not in message
    for key in bad:
        assert key.replace("-", "_") in message.replace("-", "_") or key.split(".")[1] in message, (key, message)

    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
        code = main(["run", "--config", str(DEFAULT), *[arg for o in overrides for arg in ("--set", o)]])
    lines = stderr.getvalue().strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("bertbuild: error: "), lines


def test_the_readme_regression_example_keeps_the_other_int8_gates():
    cfg = load_config(DEFAULT, ["gates.int8.max_f1_drop=2.0"])
    assert cfg.gates["int8"].max_f1_drop == 2.0
    assert cfg.gates["int8"].min_argmax_agreement == load_config(DEFAULT).gates["int8"].min_argmax_agreement == 0.8


def test_null_still_turns_one_gate_off():
    cfg = load_config(DEFAULT, ["gates.int8.min_argmax_agreement=null"])
    assert cfg.gates["int8"].min_argmax_agreement is None
    assert cfg.gates["int8"].max_f1_drop == load_config(DEFAULT).gates["int8"].max_f1_drop
