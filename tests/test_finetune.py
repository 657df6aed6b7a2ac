"""Fine-tuning on a tiny random model and a tiny SQuAD file: learning, determinism, resume, output."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from bertbuild.errors import UserInputError

CONTEXTS = [
    ("Paris is the capital of France. It lies on the river Seine and has about two million people.",
     [("What is the capital of France?", "Paris"), ("Which river runs through Paris?", "Seine"),
      ("How many people live in Paris?", "about two million")]),
    ("The cat sat on the red mat while the dog slept in the garden under a large oak tree.",
     [("Where did the cat sit?", "on the red mat"), ("Where did the dog sleep?", "in the garden"),
      ("What kind of tree was in the garden?", "oak")]),
    ("Water boils at one hundred degrees Celsius at sea level and freezes at zero degrees.",
     [("At what temperature does water boil?", "one hundred degrees Celsius"),
      ("At what temperature does water freeze?", "zero degrees")]),
]

HYPER = dict(lr=2e-3, epochs=3, batch_size=4, max_seq_length=64, doc_stride=32, max_query_length=16,
             warmup_fraction=0.2, weight_decay=0.01, seed=7, save_every_steps=2, onednn=False)


def finetune_run(pretrained, train_json, out, stop_after=None, **changes):
    """`finetune` on the test data with HYPER (and `changes`) through the one FinetuneConfig."""
    from bertbuild.training.config import FinetuneConfig
    from bertbuild.training.finetune import finetune

    cfg = FinetuneConfig(pretrained_dir=str(pretrained), train_json=str(train_json), out_dir=str(out),
                         **{**HYPER, **changes})
    return finetune(cfg, progress=False, stop_after=stop_after)


def squad_json() -> dict:
    articles = []
    for a, (context, qas) in enumerate(CONTEXTS):
        items = []
        for q, (question, answer) in enumerate(qas):
            start = context.index(answer)
            items.append({"id": f"{a}-{q}", "question": question,
                          "answers": [{"text": answer, "answer_start": start}]})
        articles.append({"title": f"t{a}", "paragraphs": [{"context": context, "qas": items}]})
    return {"version": "1.1", "data": articles}


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory, vocab_path):
    """A head-less tiny random checkpoint, as `hf_import` writes one."""
    from bertbuild.model.checkpoint_writer import save_checkpoint
    from bertbuild.model.hf_import import HEAD_NAMES
    from bertbuild.model.random_checkpoint import random_weights, tiny_config

    with open(vocab_path, encoding="utf-8") as handle:
        n_vocab = sum(1 for _ in handle)
    config = tiny_config(n_vocab, layers=2, hidden=32, heads=4)
    weights = {k: v for k, v in random_weights(config, seed=3).items() if k not in HEAD_NAMES}
    directory = tmp_path_factory.mktemp("pretrained")
    save_checkpoint(directory, config, vocab_path, weights, step=0)
    return directory


@pytest.fixture(scope="module")
def train_json(tmp_path_factory):
    path = tmp_path_factory.mktemp("squad") / "train.json"
    path.write_text(json.dumps(squad_json()))
    return path


def _weights(directory):
    from bertbuild.model.checkpoint import load_checkpoint

    return load_checkpoint(directory).weights


@pytest.fixture(scope="module")
def full_run(pretrained, train_json, tmp_path_factory):
    out = tmp_path_factory.mktemp("full") / "run"
    return finetune_run(pretrained, train_json, out)


def test_learning_rate_schedule():
    from bertbuild.training.finetune import learning_rate

    total, warmup, peak = 100, 10, 1e-4
    assert learning_rate(0, total, warmup, peak) == pytest.approx(1e-5)
    assert learning_rate(warmup - 1, total, warmup, peak) == pytest.approx(peak)  # warm-up end
    assert learning_rate(warmup, total, warmup, peak) == pytest.approx(peak)
    assert learning_rate(total - 1, total, warmup, peak) == pytest.approx(peak / 90)  # last step
    values = [learning_rate(s, total, warmup, peak) for s in range(total)]
    assert max(values) == pytest.approx(peak) and min(values) > 0


def test_weight_decay_skips_bias_and_layernorm():
    from bertbuild.training.finetune import decays

    assert decays("bert/encoder/layer_0/attention/self/query/kernel")
    assert decays("bert/embeddings/word_embeddings")
    assert not decays("bert/encoder/layer_0/output/dense/bias")
    assert not decays("bert/embeddings/LayerNorm/gamma")
    assert not decays("bert/embeddings/LayerNorm/beta")


def test_batches_are_trimmed_to_multiples_of_32(pretrained, train_json):
    from bertbuild.training.finetune import batch_plan, training_articles, training_features, trimmed_batch

    features = training_features(training_articles(train_json), pretrained / "vocab.txt", True, 64, 32, 16)
    for rows in batch_plan(len(features), 4, 1, seed=0):
        ids, seg, mask, start, end = trimmed_batch(features, rows)
        assert ids.shape[1] % 32 == 0 and ids.shape[1] >= mask.sum(axis=1).max()
        assert (end < ids.shape[1]).all() and ids.dtype == np.int32


def test_loss_decreases(pretrained, train_json, tmp_path):
    result = finetune_run(pretrained, train_json, tmp_path / "run", epochs=12, lr=5e-3, save_every_steps=0)
    first, last = np.mean(result.losses[:3]), np.mean(result.losses[-3:])
    assert result.step == result.total_steps >= 20
    assert last < 0.6 * first, (first, last)


def test_output_loads_like_an_ngc_checkpoint(full_run):
    from bertbuild.model.checkpoint import load_checkpoint

    ckpt = load_checkpoint(full_run.out_dir)
    assert ckpt.step == full_run.total_steps == full_run.step
    assert ckpt.weights["cls/squad/output_weights"].shape == (2, 32)
    assert ckpt.weights["cls/squad/output_bias"].shape == (2,)
    assert ckpt.lower_case
    assert len(list(full_run.out_dir.glob("model.ckpt-*.index"))) == 1  # older saves removed


def test_same_seed_same_weights(full_run, pretrained, train_json, tmp_path):
    from bertbuild.training.finetune import finetune

    again = finetune_run(pretrained, train_json, tmp_path / "again")
    assert again.losses == full_run.losses
    a, b = _weights(full_run.out_dir), _weights(again.out_dir)
    assert all(np.array_equal(a[k], b[k]) for k in a)


def test_resume_matches_uninterrupted(full_run, pretrained, train_json, tmp_path):
    from bertbuild.training.finetune import finetune

    out = tmp_path / "resumed"
    first = finetune_run(pretrained, train_json, out, stop_after=3)
    assert first.step == 3
    second = finetune_run(pretrained, train_json, out)
    assert second.resumed_from == 3 and second.losses == full_run.losses[3:]
    a, b = _weights(full_run.out_dir), _weights(out)
    assert all(np.array_equal(a[k], b[k]) for k in a)


def test_resume_refuses_other_settings(full_run, pretrained, train_json):
    from bertbuild.training.finetune import finetune

    with pytest.raises(UserInputError, match="different lr"):
        finetune_run(pretrained, train_json, full_run.out_dir, lr=1e-3)


def test_export_compact_is_float16(full_run, tmp_path):
    import tensorflow as tf

    from bertbuild.model.checkpoint import checkpoint_prefix
    from bertbuild.training.finetune import export_compact

    dest = export_compact(full_run.out_dir, tmp_path / "fp16")
    reader = tf.train.load_checkpoint(str(checkpoint_prefix(dest)))
    dtypes = reader.get_variable_to_dtype_map()
    assert dtypes["cls/squad/output_weights"] == tf.float16
    assert not any(name.endswith("adam_m") for name in dtypes)
    a, b = _weights(full_run.out_dir), _weights(dest)
    assert max(float(np.max(np.abs(a[k] - b[k]))) for k in a) < 1e-2


def test_default_training_set_is_the_train_half():
    from bertbuild.training.finetune import training_articles
    from bertbuild.squad.data import load_dataset, question_count, split_by_article

    train, heldout = split_by_article(load_dataset())
    chosen = training_articles(None)
    assert [a["title"] for a in chosen] == [a["title"] for a in train]
    assert not {a["title"] for a in chosen} & {a["title"] for a in heldout}
    assert question_count(chosen) == 5397


def test_headless_checkpoint_gets_an_initialised_head(pretrained):
    from bertbuild.training.finetune import load_initial_weights

    config, _, weights = load_initial_weights(pretrained, seed=0)
    head = weights["cls/squad/output_weights"]
    assert head.shape == (2, config.hidden_size) and 0 < head.std() < 0.05
    assert not weights["cls/squad/output_bias"].any()


def test_missing_pretrained_dir_is_one_line(tmp_path):
    from bertbuild.errors import CheckpointError
    from bertbuild.training.finetune import load_initial_weights

    with pytest.raises(CheckpointError):
        load_initial_weights(tmp_path / "nope", seed=0)
    shutil.rmtree(tmp_path, ignore_errors=True)


@pytest.mark.slow  # runs the finetune-bert flow
def test_cli_finetune_runs_the_flow_and_exports(pretrained, train_json, tmp_path, capsys, prefect_harness):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName

    from bertbuild.cli import main
    from bertbuild.model.checkpoint import load_checkpoint

    out, dest = tmp_path / "cli", tmp_path / "fp16"
    code = main(["finetune", "--pretrained", str(pretrained), "--train-json", str(train_json), "--out", str(out),
                 "--max-seq-length", "64", "--doc-stride", "32", "--max-query-length", "16", "--batch-size", "4",
                 "--epochs", "1", "--max-steps", "2", "--save-every", "1", "--no-onednn", "--export-fp16", str(dest)])
    assert code == 0
    assert "(step 2/2, final loss" in capsys.readouterr().out
    assert load_checkpoint(dest).step == 2
    saved = json.loads((out / "finetune.json").read_text())["hyper"]
    assert saved["onednn"] is False and saved["batch_size"] == 4 and saved["lr"] == 1e-4  # flag default = config default
    with get_client(sync_client=True) as client:  # the command ran the finetune-bert flow, not a side path
        runs = client.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=["finetune-bert"])))
    assert any(r.parameters["config"]["out_dir"] == str(out) and r.state.is_completed() for r in runs)


def test_cli_flags_and_the_config_share_their_defaults():
    import argparse

    from bertbuild.commands import finetune as command
    from bertbuild.training.config import FinetuneConfig

    parser = argparse.ArgumentParser()
    command.add_parser(parser.add_subparsers())
    args = parser.parse_args(["finetune", "--from-minilm", "--out", "o"])
    assert command.config_from(args) == FinetuneConfig(out_dir="o")


def test_cli_missing_pretrained_is_one_line(tmp_path, capsys):
    from bertbuild.cli import main

    code = main(["finetune", "--pretrained", str(tmp_path / "nope"), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "not a directory" in err


@pytest.mark.slow  # runs the finetune-bert flow
def test_flow(prefect_harness, pretrained, train_json, tmp_path):
    from bertbuild.flows.finetune_bert import finetune_bert

    from bertbuild.training.config import FinetuneConfig

    summary = finetune_bert(FinetuneConfig(out_dir=str(tmp_path / "flow"), pretrained_dir=str(pretrained),
                                           train_json=str(train_json), max_seq_length=64, doc_stride=32,
                                           max_query_length=16, batch_size=4, epochs=1, max_steps=2,
                                           onednn=False, export_fp16=str(tmp_path / "fp16")))
    assert summary["step"] == 2 and summary["export_fp16"] == str(tmp_path / "fp16")


def test_a_diverging_loss_stops_with_one_line_naming_the_learning_rate(pretrained, train_json, tmp_path):
    with pytest.raises(UserInputError, match=r"diverged: the loss became .* lower the learning rate \(--lr\)"):
        finetune_run(pretrained, train_json, tmp_path / "run", lr=1e30, epochs=3, save_every_steps=0)
