"""Loading SQuAD v1.1 files and turning them into flat, ordered examples.

Everything here is pure Python: the same examples feed every backend, so any
difference in score comes from the engine, not from the data handling.
"""

from __future__ import annotations

import io
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

from bertbuild.data import SQUAD_DEV, bundled_file
from bertbuild.errors import UserInputError
from bertbuild.hashing import sha256_bytes

BUNDLED_DEV = bundled_file(SQUAD_DEV)
BUNDLED_DEV_ZIP_SHA256 = "6cf38c56fc7341bab8a5132f205dd7198148a6be9073ccd8ef07d55ca73b09b7"
BUNDLED_DEV_JSON_SHA256 = "95aa6a52d5d6a735563366753ca50492a658031da74f301ac5238b03966972c9"


@dataclass(frozen=True)
class Example:
    """One question about one paragraph, with every ground-truth answer."""

    qid: str
    title: str
    question: str
    context: str
    answers: tuple[str, ...]
    answer_starts: tuple[int, ...]


def _check_sha256(data: bytes, expected: str, what: str) -> None:
    actual = sha256_bytes(data)
    if actual != expected:
        raise UserInputError(
            f"checksum mismatch for {what}: sha256 {actual}, expected {expected}; "
            "the file is corrupt or was replaced, restore it from the repository"
        )


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise UserInputError(f"SQuAD file not found: {path}") from None
    except OSError as error:
        raise UserInputError(f"cannot read SQuAD file {path}: {error.strerror}") from None


def _json_member_of_zip(raw_zip: bytes, path: Path) -> tuple[str, bytes]:
    """Return (name, bytes) of the single .json file inside a zip archive."""
    try:
        with zipfile.ZipFile(io.BytesIO(raw_zip)) as archive:
            names = [n for n in archive.namelist() if n.endswith(".json")]
            if len(names) != 1:
                raise UserInputError(
                    f"{path} must hold exactly one .json file, found {len(names)}"
                )
            return names[0], archive.read(names[0])
    except zipfile.BadZipFile:
        raise UserInputError(f"{path} is not a valid zip archive") from None


def _parse_dataset(raw_json: bytes, path: Path) -> dict:
    """Decode SQuAD JSON and check the one key every consumer relies on."""
    try:
        dataset = json.loads(raw_json.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise UserInputError(f"{path} is not valid SQuAD JSON: {error}") from None
    if not isinstance(dataset, dict) or not isinstance(dataset.get("data"), list):
        raise UserInputError(f"{path} is not a SQuAD file: no top-level 'data' list")
    return dataset


def load_dataset(path: str | Path | None = None) -> dict:
    """Read a SQuAD `.json` or `.json.zip` file and return the decoded dict.

    Without `path`, the bundled dev v1.1 set is read and both its zip and its
    inner JSON are checked against known sha256 digests, so scores are always
    computed on exactly the official questions.
    """
    bundled = path is None
    source = BUNDLED_DEV if bundled else Path(path)
    raw = _read_bytes(source)
    if bundled:
        _check_sha256(raw, BUNDLED_DEV_ZIP_SHA256, str(source))
    if source.suffix == ".zip":
        member, raw = _json_member_of_zip(raw, source)
        if bundled:
            _check_sha256(raw, BUNDLED_DEV_JSON_SHA256, f"{source}!{member}")
    return _parse_dataset(raw, source)


def _articles_of(dataset_or_articles: dict | Sequence[dict]) -> Sequence[dict]:
    if isinstance(dataset_or_articles, dict):
        return dataset_or_articles["data"]
    return dataset_or_articles


def _example_from_qa(title: str, context: str, qa: dict[str, Any]) -> Example:
    answers = qa.get("answers", [])
    return Example(
        qid=qa["id"],
        title=title,
        question=qa["question"],
        context=context,
        answers=tuple(answer["text"] for answer in answers),
        answer_starts=tuple(int(answer["answer_start"]) for answer in answers),
    )


def examples_from(dataset_or_articles: dict | Sequence[dict]) -> list[Example]:
    """Flatten a dataset dict (or a list of its articles) into examples, in file order."""
    examples = []
    for article in _articles_of(dataset_or_articles):
        title = article.get("title", "")
        for paragraph in article["paragraphs"]:
            context = paragraph["context"]
            examples.extend(_example_from_qa(title, context, qa) for qa in paragraph["qas"])
    return examples


def split_by_article(dataset: dict | Sequence[dict]) -> tuple[list[dict], list[dict]]:
    """Split articles into (train, held-out) halves: even positions vs odd positions.

    Splitting whole articles (not questions) keeps paragraphs seen in training
    out of the held-out half; alternating positions spreads topics over both.
    """
    articles = list(_articles_of(dataset))
    return articles[0::2], articles[1::2]


def select(examples: Sequence[Example], limit: int | None = None, offset: int = 0) -> list[Example]:
    """A fixed, deterministic subset: `limit` examples starting at `offset`, in file order."""
    if offset < 0:
        raise ValueError(f"offset must be >= 0, got {offset}")
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0 or None, got {limit}")
    end = None if limit is None else offset + limit
    return list(examples[offset:end])


def question_count(articles: Iterable[dict]) -> int:
    return sum(len(paragraph["qas"]) for article in articles for paragraph in article["paragraphs"])
