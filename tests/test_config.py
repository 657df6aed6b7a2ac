"""Config validation: every mistake is one line naming the file and the key."""

from __future__ import annotations

import pytest

from bertbuild.config import load_config
from bertbuild.errors import ConfigError


def _write(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


def test_valid_config_gets_defaults(tmp_path):
    cfg = load_config(_write(tmp_path, "model:\n  source: generated:tiny\n"))
    assert cfg.eval.max_seq_length == 384 and cfg.eval.doc_stride == 128 and cfg.eval.split == "heldout"
    assert cfg.eval.length_bucket == 32  # length-aware batching is on unless a config turns it off
    assert cfg.model_name == "tiny"


@pytest.mark.parametrize("text, fragments", [
    ("model:\n  source: generated:tiny\nevall: {}\n", ["evall", "unknown key"]),
    ("model:\n  source: generated:tiny\neval:\n  limit: many\n", ["eval.limit", "integer", "'many'"]),
    ("model:\n  source: generated:tiny\neval:\n  split: dev\n", ["eval.split", "'dev'"]),
    ("eval: {}\n", ["model", "required key is missing"]),
    ("model:\n  source: /no/such/checkpoint\n", ["model.source", "/no/such/checkpoint", "does not exist"]),
    ("model:\n  source: generated:tiny\n  sha256: abc\n", ["model.sha256", "64 hex"]),
    ("model: [unclosed\n", ["not valid YAML"]),
    ("model:\n  source: generated:tiny\neval:\n  max_seq_length: 64\n", ["eval", "no room for context"]),
    ("- a\n- b\n", ["mapping"]),
    ("model:\n  source: generated:tiny\neval:\n  length_bucket: -8\n", ["eval.length_bucket", "-8"]),
])
def test_bad_config(tmp_path, text, fragments):
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert "\n" not in message and message.startswith(str(path))
    for fragment in fragments:
        assert fragment in message


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "absent.yaml")


def test_overrides(tmp_path):
    path = _write(tmp_path, "model:\n  source: generated:tiny\n")
    cfg = load_config(path, ["eval.limit=7", "parity.max_abs_logit=1e-3"])
    assert cfg.eval.limit == 7 and cfg.parity.max_abs_logit == 1e-3
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        load_config(path, ["eval.limit"])
