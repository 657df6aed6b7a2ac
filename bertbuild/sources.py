"""Turn `model.source` into a local checkpoint directory.

Local directories are used in place (the checkpoint may sit in a nested
folder); `generated:tiny` writes a random-weight
checkpoint (smoke tests only: its EM/F1 are noise); everything else (archives,
URLs, ngc://, gdrive://) goes through `bertbuild.fetch`.
"""

from __future__ import annotations

from pathlib import Path

from bertbuild.errors import UserInputError

PROJECT_ROOT = Path(__file__).resolve().parent.parent
# The uncased BERT WordPiece vocab (30,522 tokens, Apache-2.0), for generated models.
GENERATED_VOCAB = PROJECT_ROOT / "data" / "vocab-uncased.txt"
GENERATED = {"generated:tiny": dict(layers=2, hidden=32, heads=4)}


def resolve_checkpoint_dir(source: str, sha256: str | None, work_dir: Path, api_key: str | None = None) -> Path:
    if source in GENERATED:
        from bertbuild.synthetic import write_random_checkpoint

        target = Path(work_dir) / source.replace(":", "-")
        if not (target / "checkpoint").is_file():
            write_random_checkpoint(target, GENERATED_VOCAB, **GENERATED[source])
        return target
    if source.startswith("generated:"):
        raise UserInputError(f"model.source: unknown generated model '{source}' (known: {', '.join(GENERATED)})")
    if "://" not in source and (Path(source) / "bert_config.json").is_file():
        return Path(source)  # checked by the checkpoint loader, whose errors name the file
    from bertbuild.fetch import fetch_checkpoint  # nested local dirs are located in place, not copied

    return fetch_checkpoint(source, sha256=sha256, api_key=api_key)


def resolve_dataset(dataset: str) -> Path | None:
    """`bundled` -> None (the checked-in dev set); a URL is fetched and cached; else a path."""
    if dataset == "bundled":
        return None
    if "://" in dataset:
        from bertbuild.fetch import fetch_file

        return fetch_file(dataset)
    return Path(dataset)
