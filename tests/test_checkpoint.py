"""Loading Google-format checkpoints, and every way loading can fail."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from bertbuild.model.checkpoint import (
    expected_shapes, checkpoint_prefix, inspect_checkpoint, load_checkpoint, read_config,
)
from bertbuild.model.checkpoint_writer import save_checkpoint
from bertbuild.errors import CheckpointError
from bertbuild.model.random_checkpoint import random_weights, tiny_config


def test_loads_weights_and_ignores_optimizer_slots(tiny_checkpoint):
    checkpoint = load_checkpoint(tiny_checkpoint)
    assert checkpoint.step == 1000
    assert set(checkpoint.weights) == set(expected_shapes(checkpoint.config))
    assert all(w.dtype == np.float32 for w in checkpoint.weights.values())
    assert checkpoint.lower_case is True  # uncased vocab
    assert not any("adam" in name for name in checkpoint.weights)


def test_float16_checkpoint_is_upcast(tmp_path, vocab_path):
    config = tiny_config(30522, layers=1)
    weights = random_weights(config, seed=3)
    save_checkpoint(tmp_path, config, vocab_path, weights, step=7, dtype=np.float16)
    loaded = load_checkpoint(tmp_path)
    name = "bert/encoder/layer_0/attention/self/query/kernel"
    assert loaded.weights[name].dtype == np.float32
    np.testing.assert_allclose(loaded.weights[name], weights[name].astype(np.float16), rtol=0, atol=0)


def test_several_checkpoints_follow_the_checkpoint_file(tmp_path, vocab_path):
    config = tiny_config(30522, layers=1)
    older = tmp_path / "older"
    save_checkpoint(older, config, vocab_path, random_weights(config, 1), step=100)
    save_checkpoint(tmp_path, config, vocab_path, random_weights(config, 2), step=300)
    for shard in older.glob("model.ckpt-100.*"):
        shutil.copy(shard, tmp_path)
    (tmp_path / "checkpoint").write_text('model_checkpoint_path: "model.ckpt-100"\n')
    assert load_checkpoint(tmp_path).step == 100
    # Paths written on the training machine may be absolute: only the basename counts.
    (tmp_path / "checkpoint").write_text('model_checkpoint_path: "/train/host/run/model.ckpt-100"\n')
    assert checkpoint_prefix(tmp_path).name == "model.ckpt-100"
    (tmp_path / "checkpoint").unlink()
    assert load_checkpoint(tmp_path).step == 300  # highest step without a checkpoint file


@pytest.fixture
def broken(tmp_path, tiny_checkpoint):
    target = tmp_path / "broken"
    shutil.copytree(tiny_checkpoint, target)
    return target


def _edit_config(directory, **changes):
    path = directory / "bert_config.json"
    config = json.loads(path.read_text())
    config.update(changes)
    path.write_text(json.dumps(config))


BAD_CHECKPOINTS = {
    "missing variable": (
        lambda d, v: _rewrite_without(d, v, "bert/encoder/layer_1/output/dense/bias"),
        ["missing variable", "bert/encoder/layer_1/output/dense/bias"],
    ),
    "shape contradicts config": (
        lambda d, v: _edit_config(d, intermediate_size=64),
        ["bert/encoder/layer_0/intermediate/dense/kernel", "[32, 128]", "[32, 64]"],
    ),
    "vocab size differs": (
        lambda d, v: (d / "vocab.txt").write_text((d / "vocab.txt").read_text() + "extra\n"),
        ["vocab.txt", "30523 tokens", "vocab_size 30522"],
    ),
    "config not json": (
        lambda d, v: (d / "bert_config.json").write_text("{hidden_size: 32"),
        ["bert_config.json", "not valid JSON"],
    ),
    "config key missing": (
        lambda d, v: (d / "bert_config.json").write_text(json.dumps({"vocab_size": 30522})),
        ["bert_config.json", "missing key 'hidden_size'"],
    ),
    "config wrong type": (
        lambda d, v: _edit_config(d, num_hidden_layers="two"),
        ["bert_config.json", "num_hidden_layers", "positive integer"],
    ),
    "heads do not divide hidden": (
        lambda d, v: _edit_config(d, num_attention_heads=5),
        ["bert_config.json", "not divisible"],
    ),
    "no checkpoint files": (
        lambda d, v: [p.unlink() for p in d.glob("model.ckpt*")],
        ["no checkpoint found"],
    ),
    "corrupt index": (
        lambda d, v: next(d.glob("*.index")).write_bytes(b"garbage"),
        ["model.ckpt-1000.index", "cannot be read"],
    ),
}


def _rewrite_without(directory, vocab_path, name):
    checkpoint = load_checkpoint(directory)
    weights = dict(checkpoint.weights)
    del weights[name]
    for shard in directory.glob("model.ckpt*"):
        shard.unlink()
    save_checkpoint(directory, checkpoint.config, vocab_path, weights, step=1000)


@pytest.mark.parametrize("case", sorted(BAD_CHECKPOINTS))
def test_bad_checkpoint_is_one_line_error(case, broken, vocab_path):
    damage, expected = BAD_CHECKPOINTS[case]
    damage(broken, vocab_path)
    with pytest.raises(CheckpointError) as info:
        inspect_checkpoint(broken)
    message = str(info.value)
    assert "\n" not in message
    assert str(broken) in message
    for fragment in expected:
        assert fragment in message, f"{fragment!r} not in {message!r}"


def test_not_a_directory(tmp_path):
    with pytest.raises(CheckpointError, match="not a directory"):
        load_checkpoint(tmp_path / "nope")


def test_read_config_rejects_unknown_activation(tmp_path):
    path = tmp_path / "bert_config.json"
    config = tiny_config(10).to_json() | {"hidden_act": "relu"}
    path.write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="hidden_act 'relu'"):
        read_config(path)
