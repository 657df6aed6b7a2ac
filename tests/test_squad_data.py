"""Loading, flattening, splitting and subsetting the SQuAD v1.1 dev set."""

import dataclasses
import json
import shutil
import zipfile
from pathlib import Path

import pytest

from bertbuild.errors import UserInputError
from bertbuild.hashing import sha256_bytes
from bertbuild.squad import data
from bertbuild.squad.data import (
    BUNDLED_DEV,
    Example,
    examples_from,
    load_dataset,
    question_count,
    select,
    split_by_article,
)

TINY_DATASET = {
    "version": "1.1",
    "data": [
        {
            "title": "Tiny",
            "paragraphs": [
                {
                    "context": "Paris is the capital of France.",
                    "qas": [
                        {"id": "t1", "question": "What is the capital of France?",
                         "answers": [{"text": "Paris", "answer_start": 0}]},
                        {"id": "t2", "question": "Paris is the capital of what?",
                         "answers": [{"text": "France", "answer_start": 24},
                                     {"text": "France.", "answer_start": 24}]},
                    ],
                }
            ],
        }
    ],
}


@pytest.fixture(scope="module")
def dev():
    return load_dataset()


@pytest.fixture(scope="module")
def dev_examples(dev):
    return examples_from(dev)


def test_bundled_dev_ships_inside_the_package():
    import bertbuild

    assert BUNDLED_DEV.is_file()
    assert BUNDLED_DEV.is_relative_to(Path(bertbuild.__file__).parent / "data")


def test_bundled_dev_loads_with_all_articles(dev):
    assert dev["version"] == "1.1"
    assert len(dev["data"]) == 48
    assert question_count(dev["data"]) == 10_570


def test_split_by_article_halves_and_counts(dev):
    train, heldout = split_by_article(dev)
    assert len(train) == len(heldout) == 24
    assert train == dev["data"][0::2] and heldout == dev["data"][1::2]
    assert question_count(train) == 5_397
    assert question_count(heldout) == 5_173


def test_split_halves_have_disjoint_questions_covering_everything(dev, dev_examples):
    train, heldout = split_by_article(dev)
    train_ids = {example.qid for example in examples_from(train)}
    heldout_ids = {example.qid for example in examples_from(heldout)}
    assert not train_ids & heldout_ids
    assert len(train_ids) + len(heldout_ids) == 10_570
    assert train_ids | heldout_ids == {example.qid for example in dev_examples}


def test_examples_are_in_file_order(dev_examples):
    first = dev_examples[0]
    assert first.qid == "56be4db0acb8001400a502ec"
    assert first.title == "Super_Bowl_50"
    assert first.question == "Which NFL team represented the AFC at Super Bowl 50?"
    assert first.answers == ("Denver Broncos",) * 3
    assert first.answer_starts == (177,) * 3
    assert len(dev_examples) == 10_570


def test_every_dev_answer_sits_at_its_answer_start(dev_examples):
    for example in dev_examples:
        assert example.answers, example.qid
        for text, start in zip(example.answers, example.answer_starts):
            assert example.context[start : start + len(text)] == text, example.qid


def test_examples_from_accepts_articles_or_dataset():
    from_dataset = examples_from(TINY_DATASET)
    from_articles = examples_from(TINY_DATASET["data"])
    assert from_dataset == from_articles
    assert [example.qid for example in from_dataset] == ["t1", "t2"]
    assert from_dataset[1].answers == ("France", "France.")
    assert from_dataset[1].answer_starts == (24, 24)


def test_example_is_frozen():
    example = examples_from(TINY_DATASET)[0]
    assert isinstance(example, Example)
    with pytest.raises(dataclasses.FrozenInstanceError):
        example.question = "changed"


def test_load_plain_json_and_zip(tmp_path):
    plain = tmp_path / "tiny.json"
    plain.write_text(json.dumps(TINY_DATASET), encoding="utf-8")
    archive = tmp_path / "tiny.json.zip"
    with zipfile.ZipFile(archive, "w") as out:
        out.write(plain, "tiny.json")
    assert load_dataset(plain) == TINY_DATASET
    assert load_dataset(str(archive)) == TINY_DATASET


def test_tampered_bundled_dev_is_refused(tmp_path, monkeypatch):
    tampered = tmp_path / "dev-v1.1.json.zip"
    shutil.copy(BUNDLED_DEV, tampered)
    with open(tampered, "ab") as out:
        out.write(b"\0")
    monkeypatch.setattr(data, "BUNDLED_DEV", tampered)
    with pytest.raises(UserInputError, match="checksum mismatch") as caught:
        load_dataset()
    assert "\n" not in str(caught.value)


def test_bundled_zip_with_wrong_inner_json_is_refused(tmp_path, monkeypatch):
    fake = tmp_path / "dev-v1.1.json.zip"
    with zipfile.ZipFile(fake, "w") as out:
        out.writestr("dev-v1.1.json", json.dumps(TINY_DATASET))
    monkeypatch.setattr(data, "BUNDLED_DEV", fake)
    monkeypatch.setattr(data, "BUNDLED_DEV_ZIP_SHA256", sha256_bytes(fake.read_bytes()))
    with pytest.raises(UserInputError, match="dev-v1.1.json"):
        load_dataset()


@pytest.mark.parametrize(
    "name, content",
    [
        ("missing.json", None),
        ("broken.json", b"{not json"),
        ("wrong.json", b'{"version": "1.1"}'),
        ("broken.json.zip", b"PK not a zip"),
    ],
)
def test_bad_files_raise_user_input_error(tmp_path, name, content):
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(UserInputError):
        load_dataset(path)


def test_select_is_a_deterministic_prefix(dev_examples):
    assert select(dev_examples, limit=5) == dev_examples[:5]
    assert select(dev_examples, limit=5, offset=10) == dev_examples[10:15]
    assert select(dev_examples) == dev_examples
    assert select(dev_examples, offset=10_565) == dev_examples[10_565:]
    assert select(dev_examples, limit=0) == []
    assert select(dev_examples, limit=3) == select(dev_examples, limit=3)


@pytest.mark.parametrize("limit, offset", [(-1, 0), (None, -1)])
def test_select_rejects_negative_bounds(limit, offset):
    with pytest.raises(ValueError):
        select([], limit=limit, offset=offset)
