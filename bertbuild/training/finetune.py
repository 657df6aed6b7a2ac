"""Fine-tune a Google-format BERT checkpoint on SQuAD v1.1 (pure logic, no Prefect).

* Model: `bertbuild.model.bert_graph.qa_logits` over a dict of `tf.Variable`s.
* Optimiser: AdamW written out explicitly (decoupled weight decay, none on
  biases and LayerNorm), global-norm clipping at 1.0, linear warm-up then
  linear decay (`learning_rate`).
* Speed: each batch is trimmed to its longest real row rounded up to a
  multiple of 32 (dynamic padding); one `tf.function` with a [None, None]
  signature serves every shape.
* Determinism and resume: the data order is a permutation seeded by
  (seed, epoch) and dropout is stateless, seeded by (seed, step), so a run
  resumed from a checkpoint continues exactly as an uninterrupted one.
* Checkpoints: every `save_every_steps` (and at the end) the Google layout with
  `<name>/adam_m`, `<name>/adam_v` slots and the step, via `save_checkpoint`;
  the final one loads with `bertbuild.model.checkpoint.load_checkpoint`.
"""

from __future__ import annotations

import contextlib
import json
import math
import sys
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from bertbuild.model.checkpoint import (
    HEAD_NAMES, VOCAB_FILE, BertConfig, checkpoint_prefix, config_and_vocab, expected_shapes, load_checkpoint,
    open_reader, vocab_is_uncased,
)
from bertbuild.errors import CheckpointError, UserInputError
from bertbuild.progress import Progress
from bertbuild.training.config import FinetuneConfig

STATE_FILE = "finetune.json"
PAD_MULTIPLE = 32
BETA_1, BETA_2, ADAM_EPS = 0.9, 0.999, 1e-6
CLIP_NORM = 1.0
LOSS_WINDOW = 20  # steps the reported loss is averaged over (one step's loss is noisy)


@dataclass
class FinetuneResult:
    out_dir: Path
    prefix: Path
    step: int
    total_steps: int
    resumed_from: int
    n_features: int
    final_loss: float
    losses: list[float] = field(default_factory=list)
    steps_per_second: float = 0.0


def learning_rate(step: int, total_steps: int, warmup_steps: int, peak: float) -> float:
    """LR of update number `step` (0-based): linear warm-up to `peak`, then linear decay.

    Warm-up reaches exactly `peak` at step `warmup_steps`; the last update
    (`total_steps - 1`) uses `peak / (total_steps - warmup_steps)`.
    """
    if step < warmup_steps:
        return peak * (step + 1) / warmup_steps
    return peak * (total_steps - step) / max(1, total_steps - warmup_steps)


def decays(name: str) -> bool:
    """Decoupled weight decay applies to kernels and embeddings, not biases or LayerNorm."""
    return not (name.endswith("/bias") or name.endswith("/beta") or name.endswith("/gamma"))


# ---------------------------------------------------------------------------- data

def training_articles(source) -> list[dict]:
    """None -> train half of the bundled dev set; a path -> all its articles; a dict/list -> as given."""
    from bertbuild.squad.data import load_dataset, split_by_article

    if source is None:
        return split_by_article(load_dataset())[0]
    if isinstance(source, (str, Path)):
        return list(load_dataset(source)["data"])
    if isinstance(source, dict):
        return list(source["data"])
    return list(source)


def training_features(articles, vocab_path, lower_case, max_seq_length, doc_stride, max_query_length):
    """Windows of every answered question, labelled with the first answer's token span."""
    from bertbuild.squad.data import examples_from
    from bertbuild.squad.sets import featurize

    examples = [e for e in examples_from(articles) if e.answers]
    if not examples:
        raise UserInputError("the training set has no answered questions")
    return featurize(examples, vocab_path, lower_case, max_seq_length=max_seq_length, doc_stride=doc_stride,
                     max_query_length=max_query_length, with_labels=True).features


def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    return np.random.default_rng([seed, epoch]).permutation(n)


def batch_plan(n: int, batch_size: int, epochs: int, seed: int) -> list[np.ndarray]:
    """Row indices of every batch of every epoch, in training order (last partial batch kept)."""
    plan = []
    for epoch in range(epochs):
        order = epoch_order(n, seed, epoch)
        plan.extend(order[i : i + batch_size] for i in range(0, n, batch_size))
    return plan


def trimmed_batch(features, rows: np.ndarray) -> tuple[np.ndarray, ...]:
    """The batch cut to its longest real row, rounded up to a multiple of 32."""
    mask = features.input_mask[rows]
    longest = int(mask.sum(axis=1).max())
    width = min(features.max_seq_length, -(-longest // PAD_MULTIPLE) * PAD_MULTIPLE)
    return (
        features.input_ids[rows, :width], features.segment_ids[rows, :width], mask[:, :width],
        features.start_positions[rows], features.end_positions[rows],
    )


# ---------------------------------------------------------------------------- checkpoints

def load_initial_weights(directory: Path | str, seed: int) -> tuple[BertConfig, Path, dict[str, np.ndarray]]:
    """Weights of a pretrained (head-less) or QA checkpoint; a missing QA head is initialised.

    The head gets N(0, initializer_range) weights and zero bias, as Google's
    run_squad does.
    """
    directory, config, vocab_path = config_and_vocab(directory)
    if not vocab_path.is_file():
        raise CheckpointError(f"{vocab_path}: missing (a BERT checkpoint needs {VOCAB_FILE})")
    prefix = checkpoint_prefix(directory)
    reader = open_reader(prefix)
    stored = {k: tuple(v) for k, v in reader.get_variable_to_shape_map().items()}
    weights = {}
    for name, shape in expected_shapes(config).items():
        if name in HEAD_NAMES and name not in stored:
            continue
        if name not in stored:
            raise CheckpointError(f"{prefix}: missing variable '{name}'")
        if stored[name] != shape:
            raise CheckpointError(f"{prefix}: variable '{name}' has shape {list(stored[name])}, expected {list(shape)}")
        weights[name] = np.asarray(reader.get_tensor(name), dtype=np.float32)
    if HEAD_NAMES[0] not in weights:
        rng = np.random.default_rng(seed)
        weights[HEAD_NAMES[0]] = (config.initializer_range * rng.standard_normal((2, config.hidden_size))).astype(np.float32)
        weights[HEAD_NAMES[1]] = np.zeros((2,), np.float32)
    return config, vocab_path, weights


def check_resume(out_dir: Path, now: dict, keys: Sequence[str]) -> None:
    """Refuse to resume the run in `out_dir` when a setting of `keys` differs (resuming would mix two runs)."""
    state = out_dir / STATE_FILE
    if not state.is_file():
        return
    try:
        before = json.loads(state.read_text()).get("hyper", {})
    except (OSError, ValueError, AttributeError):
        raise UserInputError(f"{state}: not a fine-tuning state file; use another --out directory") from None
    changed = [key for key in keys if key in before and before[key] != now[key]]
    if changed:
        raise UserInputError(f"{out_dir}: holds a run with different {', '.join(changed)}; "
                             "use another --out directory or the same settings to resume")


def _read_resume_state(out_dir: Path, names: Sequence[str]):
    """(weights, m, v, step) from the checkpoint in out_dir, or None when there is none."""
    if not any(out_dir.glob("model.ckpt-*.index")):
        return None
    reader = open_reader(checkpoint_prefix(out_dir))
    stored = reader.get_variable_to_shape_map()
    for name in names:
        for key in (name, f"{name}/adam_m", f"{name}/adam_v"):
            if key not in stored:
                raise CheckpointError(f"{out_dir}: cannot resume, checkpoint lacks '{key}'")
    get = lambda key: np.asarray(reader.get_tensor(key), dtype=np.float32)  # noqa: E731
    weights = {n: get(n) for n in names}
    m = {n: get(f"{n}/adam_m") for n in names}
    v = {n: get(f"{n}/adam_v") for n in names}
    return weights, m, v, int(reader.get_tensor("global_step"))


def _save(out_dir: Path, config, vocab_path, variables, m, v, step: int) -> Path:
    from bertbuild.model.checkpoint_writer import save_checkpoint

    weights = {n: var.numpy() for n, var in variables.items()}
    slots = {f"{n}/adam_m": s.numpy() for n, s in m.items()}
    slots.update({f"{n}/adam_v": s.numpy() for n, s in v.items()})
    prefix = save_checkpoint(out_dir, config, vocab_path, weights, step=step, optimizer_slots=slots)
    for old in out_dir.glob("model.ckpt-*"):  # each save is a fresh Saver: drop earlier steps ourselves
        if not old.name.startswith(prefix.name + "."):
            old.unlink()
    return prefix


def export_compact(out_dir: Path | str, dest_dir: Path | str) -> Path:
    """Write the final QA weights of `out_dir` as float16, without optimiser slots."""
    from bertbuild.model.checkpoint_writer import save_checkpoint

    ckpt = load_checkpoint(out_dir)
    save_checkpoint(dest_dir, ckpt.config, ckpt.vocab_path, ckpt.weights, step=ckpt.step or 0, dtype=np.float16)
    return Path(dest_dir)


# ---------------------------------------------------------------------------- training

@contextlib.contextmanager
def _stateless_dropout(tf, step_seed):
    """Make `modeling`'s dropout stateless, seeded by (step_seed, call index), while tracing."""
    from bertbuild.model import bert_graph as modeling

    original = modeling._dropout
    counter = iter(range(1 << 30))

    def dropout(x, rate, training, seed=None):
        if not training or rate <= 0:
            return x
        op_seed = tf.stack([step_seed, tf.constant(next(counter), tf.int64)])
        return tf.nn.experimental.stateless_dropout(x, rate=rate, seed=op_seed)

    modeling._dropout = dropout
    try:
        yield
    finally:
        modeling._dropout = original


def _make_train_step(tf, config, variables, m, v, weight_decay):
    from bertbuild.model import bert_graph as modeling

    names = list(variables)
    spec = [tf.TensorSpec([None, None], tf.int32)] * 3 + [tf.TensorSpec([None], tf.int32)] * 2
    spec += [tf.TensorSpec([], tf.float32), tf.TensorSpec([], tf.float32), tf.TensorSpec([], tf.int64)]

    @tf.function(input_signature=spec)
    def train_step(input_ids, segment_ids, input_mask, start, end, lr, t, step_seed):
        with tf.GradientTape() as tape:
            with _stateless_dropout(tf, step_seed):
                s_logits, e_logits = modeling.qa_logits(
                    variables, config, input_ids, segment_ids, input_mask, training=True)
            pad = (1.0 - tf.cast(input_mask, tf.float32)) * -10000.0
            loss_s = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=start, logits=s_logits + pad)
            loss_e = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=end, logits=e_logits + pad)
            loss = 0.5 * (tf.reduce_mean(loss_s) + tf.reduce_mean(loss_e))
        grads = tape.gradient(loss, [variables[n] for n in names])
        grads = [tf.convert_to_tensor(g) for g in grads]
        grads, _ = tf.clip_by_global_norm(grads, CLIP_NORM)
        correction = tf.sqrt(1.0 - BETA_2 ** t) / (1.0 - BETA_1 ** t)
        for name, g in zip(names, grads):
            var, mv, vv = variables[name], m[name], v[name]
            mv.assign(BETA_1 * mv + (1.0 - BETA_1) * g)
            vv.assign(BETA_2 * vv + (1.0 - BETA_2) * tf.square(g))
            update = correction * mv / (tf.sqrt(vv) + ADAM_EPS)
            if weight_decay and decays(name):
                update += weight_decay * var
            var.assign_sub(lr * update)
        return loss

    return train_step


def _stderr_line(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _configure_tf(tf, seed: int, threads: int | None) -> bool:
    """Seed everything and turn on op determinism; returns whether it was already on."""
    if threads:
        with contextlib.suppress(RuntimeError):  # already initialised: keep what is set
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(threads)
    tf.keras.utils.set_random_seed(seed)
    was_on = _determinism_enabled()
    tf.config.experimental.enable_op_determinism()
    return was_on


def _determinism_enabled() -> bool:
    try:
        from tensorflow.python.framework import config as tf_config

        return bool(tf_config.is_op_determinism_enabled())
    except (ImportError, AttributeError):
        return True  # unknown: never turn it off


def _restore_determinism(was_on: bool) -> None:
    """Leave the process as we found it (determinism is global and makes some ops raise)."""
    if not was_on:
        from tensorflow.python.framework import config as tf_config

        tf_config.disable_op_determinism()


def finetune(cfg: FinetuneConfig, *, articles=None, progress: bool = True, stop_after: int | None = None,
             ) -> FinetuneResult:
    """Fine-tune `cfg.pretrained_dir` for SQuAD into `cfg.out_dir`; resumes from a checkpoint already there.

    `articles` (a SQuAD dict or list of articles) replaces `cfg.train_json`, for
    callers that hold the data in memory. `stop_after` stops early at that step
    without changing the schedule, as an interruption would. `progress`: a bar
    on a terminal; otherwise (or False) a progress line on stderr every
    `bertbuild.progress.PROGRESS_EVERY_S` seconds.
    """
    import os

    from bertbuild._lazy import import_tensorflow

    if cfg.pretrained_dir is None:
        raise UserInputError("finetune: no pretrained checkpoint given (pretrained_dir)")
    wanted = "1" if cfg.onednn else "0"
    if "tensorflow" not in sys.modules:  # TF reads this once, at import
        os.environ["TF_ENABLE_ONEDNN_OPTS"] = wanted
    tf = import_tensorflow()
    was_deterministic = _configure_tf(tf, cfg.seed, cfg.threads)
    try:
        return _finetune(tf, cfg, articles if articles is not None else cfg.train_json, progress, stop_after)
    finally:
        _restore_determinism(was_deterministic)


def _finetune(tf, cfg: FinetuneConfig, train, progress: bool, stop_after: int | None) -> FinetuneResult:
    out_dir = Path(cfg.out_dir)
    config, vocab_path, init = load_initial_weights(cfg.pretrained_dir, cfg.seed)
    lower_case = vocab_is_uncased(vocab_path)
    features = training_features(training_articles(train), vocab_path, lower_case, cfg.max_seq_length,
                                 cfg.doc_stride, cfg.max_query_length)
    plan = batch_plan(len(features), cfg.batch_size, cfg.epochs, cfg.seed)
    total = len(plan) if cfg.max_steps is None else min(len(plan), cfg.max_steps)
    warmup = max(1, int(round(cfg.warmup_fraction * total))) if cfg.warmup_fraction > 0 else 0
    hyper = {**cfg.model_dump(mode="json"), "total_steps": total, "warmup_steps": warmup,
             "n_features": len(features), "lower_case": lower_case}

    names = list(init)
    resumed = _read_resume_state(out_dir, names) if out_dir.is_dir() else None
    start = 0
    if resumed is not None:
        check_resume(out_dir, hyper, (*cfg.RESUME_KEYS, "total_steps", "n_features"))
        init, m_init, v_init, start = resumed
    else:
        m_init = {n: np.zeros_like(w) for n, w in init.items()}
        v_init = {n: np.zeros_like(w) for n, w in init.items()}
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / STATE_FILE).write_text(json.dumps({"hyper": hyper}, indent=2) + "\n")

    variables = {n: tf.Variable(w, name=n.replace("/", "_")) for n, w in init.items()}
    m = {n: tf.Variable(w, trainable=False) for n, w in m_init.items()}
    v = {n: tf.Variable(w, trainable=False) for n, w in v_init.items()}
    train_step = _make_train_step(tf, config, variables, m, v, cfg.weight_decay)

    end_step = total if stop_after is None else min(total, stop_after)
    if start:
        _stderr_line(f"resuming {out_dir} at step {start}/{total}")
    _stderr_line(f"fine-tuning: {len(features)} windows, {total} steps (warm-up {warmup}), batch {cfg.batch_size}, "
                 f"lr {cfg.lr:g}, max_seq_length {cfg.max_seq_length}")
    reporter = Progress(total, "fine-tuning", unit="step", noun="steps", log=_stderr_line,
                        bar=None if progress else False, initial=start)
    recent = deque(maxlen=LOSS_WINDOW)
    losses: list[float] = []
    prefix = None
    began = time.monotonic()
    try:
        for step in range(start, end_step):
            ids, seg, mask, s_pos, e_pos = trimmed_batch(features, plan[step])
            rate = learning_rate(step, total, warmup, cfg.lr)
            loss = float(train_step(
                ids, seg, mask, s_pos, e_pos, np.float32(rate), np.float32(step + 1),
                np.int64(cfg.seed * 1_000_003 + step),
            ))
            if not math.isfinite(loss):
                raise UserInputError(f"fine-tuning diverged: the loss became {loss} at step {step + 1}; "
                                     "lower the learning rate (--lr)")
            losses.append(loss)
            recent.append(loss)
            reporter.update(1, loss=f"{sum(recent) / len(recent):.4f}", lr=f"{rate:.3e}")
            done = step + 1
            if done < end_step and cfg.save_every_steps and done % cfg.save_every_steps == 0:
                prefix = _save(out_dir, config, vocab_path, variables, m, v, done)
    finally:
        reporter.close()
    elapsed = time.monotonic() - began
    if end_step > start:
        prefix = _save(out_dir, config, vocab_path, variables, m, v, end_step)
    else:  # nothing left to do: the checkpoint already there is the result
        prefix = checkpoint_prefix(out_dir)
    return FinetuneResult(
        out_dir=out_dir, prefix=prefix, step=end_step, total_steps=total, resumed_from=start,
        n_features=len(features), final_loss=losses[-1] if losses else float("nan"), losses=losses,
        steps_per_second=(end_step - start) / elapsed if elapsed > 0 and end_step > start else 0.0,
    )


def result_summary(result: FinetuneResult) -> dict:
    out = asdict(result)
    out["out_dir"], out["prefix"] = str(result.out_dir), str(result.prefix)
    out.pop("losses")
    return out
