"""Which SQuAD questions a run reads, featurized: the one path from a SQuAD file to model inputs.

Every consumer goes through here: scoring (the first `limit` questions of a
split), calibration and tuning (a seeded sample of TRAIN-half questions) and
fine-tuning (answered train questions, with labels). A `SquadSet` is saved to
one `.npz` file, so a run featurizes each set once and every task reads it back.

    eval_set = featurize(select(load_split("bundled", "heldout"), limit=200), vocab, True)
    eval_set.save(path); SquadSet.load(path)
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from bertbuild.arrays import load_npz
from bertbuild.hashing import sha256_bytes
from bertbuild.squad.data import Example, examples_from, load_dataset, select, split_by_article
from bertbuild.squad.features import Features, build_features, make_tokenizer

SPLITS = ("train", "heldout", "all")


def load_split(dataset: str, split: str) -> list[Example]:
    """Questions of one half of the article split (`train`, `heldout`) or `all`, in file order.

    `dataset` is `bundled` (the dev set inside the package), a path, or a URL
    (fetched and cached).
    """
    from bertbuild.fetch.acquire import resolve_dataset

    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    train, heldout = split_by_article(load_dataset(resolve_dataset(dataset)))
    return examples_from({"train": train, "heldout": heldout, "all": train + heldout}[split])


def check_offset(dataset: str, split: str, offset: int, where: str = "eval.offset") -> int:
    """The split's question count; a UserInputError line when `offset` leaves no question of it to score."""
    from bertbuild.errors import UserInputError

    count = len(load_split(dataset, split))
    if offset >= count:
        valid = f"use 0..{count - 1}" if count else "it has none"
        raise UserInputError(f"{where} {offset} selects no question: split {split!r} of {dataset} has {count} "
                             f"questions ({valid})")
    return count


def sample(examples: Sequence[Example], count: int, seed: int) -> list[Example]:
    """`count` questions in a seeded random order (the same seed always draws the same questions)."""
    order = np.random.default_rng(seed).permutation(len(examples))
    return [examples[i] for i in order[:count]]


@dataclass
class SquadSet:
    """Examples and their windows, plus how they were chosen (recorded in reports)."""

    examples: list[Example]
    features: Features
    origin: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.features)

    @property
    def question_ids(self) -> list[str]:
        return [example.qid for example in self.examples]

    def first_windows(self, rows: int) -> "SquadSet":
        """The first `rows` windows and only the questions they come from."""
        rows = min(rows, len(self))
        used = sorted({int(i) for i in self.features.example_index[:rows]})
        renumber = {old: new for new, old in enumerate(used)}
        f = self.features
        features = Features(
            input_ids=f.input_ids[:rows], segment_ids=f.segment_ids[:rows], input_mask=f.input_mask[:rows],
            example_index=np.asarray([renumber[int(i)] for i in f.example_index[:rows]], dtype=np.int64),
            window_start=f.window_start[:rows], token_offsets=f.token_offsets[:rows],
            token_is_max_context=f.token_is_max_context[:rows], contexts=[f.contexts[i] for i in used],
            start_positions=None if f.start_positions is None else f.start_positions[:rows],
            end_positions=None if f.end_positions is None else f.end_positions[:rows],
        )
        return SquadSet([self.examples[i] for i in used], features, {**self.origin, "windows": rows})

    @property
    def fingerprint(self) -> str:
        """sha256 over the question ids and the exact input rows."""
        parts = ["\n".join(self.question_ids).encode()]
        for array in (self.features.input_ids, self.features.segment_ids, self.features.input_mask):
            parts += [str(array.shape).encode(), np.ascontiguousarray(array, dtype=np.int32).tobytes()]
        return sha256_bytes(b"\0".join(parts))

    # -- one file per set ----------------------------------------------------------
    def save(self, path: Path | str) -> Path:
        """Write everything to one `.npz` (offsets as int32 pairs, -1 where a position has none)."""
        f = self.features
        offsets = np.full(f.input_ids.shape + (2,), -1, dtype=np.int32)
        for row, spans in enumerate(f.token_offsets):
            for position, span in enumerate(spans):
                if span is not None:
                    offsets[row, position] = span
        text = json.dumps({"examples": [asdict(e) for e in self.examples], "contexts": f.contexts,
                           "origin": self.origin})
        arrays = dict(input_ids=f.input_ids, segment_ids=f.segment_ids, input_mask=f.input_mask,
                      example_index=f.example_index, window_start=f.window_start, offsets=offsets,
                      is_max_context=np.asarray(f.token_is_max_context, dtype=bool).reshape(f.input_ids.shape),
                      text=np.frombuffer(text.encode(), dtype=np.uint8))
        if f.start_positions is not None:
            arrays.update(start_positions=f.start_positions, end_positions=f.end_positions)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as handle:  # a file object: numpy would otherwise append ".npz"
            np.savez(handle, **arrays)
        return path

    @classmethod
    def load(cls, path: Path | str) -> "SquadSet":
        data = load_npz(path)
        text = json.loads(data["text"].tobytes().decode())
        offsets = data["offsets"]
        token_offsets = [[None if s < 0 else (int(s), int(e)) for s, e in row] for row in offsets]
        labels = "start_positions" in data
        features = Features(
            input_ids=data["input_ids"], segment_ids=data["segment_ids"], input_mask=data["input_mask"],
            example_index=data["example_index"], window_start=data["window_start"],
            token_offsets=token_offsets, token_is_max_context=data["is_max_context"].tolist(),
            contexts=text["contexts"],
            start_positions=data["start_positions"] if labels else None,
            end_positions=data["end_positions"] if labels else None,
        )
        examples = [Example(**{k: tuple(v) if isinstance(v, list) else v for k, v in e.items()})
                    for e in text["examples"]]
        return cls(examples, features, text["origin"])


def featurize(examples: Sequence[Example], vocab_path: Path | str, lower_case: bool, *, max_seq_length: int = 384,
              doc_stride: int = 128, max_query_length: int = 64, with_labels: bool = False,
              origin: dict | None = None) -> SquadSet:
    """Tokenize `examples` into windows with the checkpoint's vocab (labels only for training)."""
    tokenizer = make_tokenizer(vocab_path, lower_case=lower_case)
    features = build_features(examples, tokenizer, max_seq_length=max_seq_length, doc_stride=doc_stride,
                              max_query_length=max_query_length, with_labels=with_labels)
    return SquadSet(list(examples), features, dict(origin or {}))


def first_questions(dataset: str, split: str, limit: int | None, offset: int = 0) -> list[Example]:
    """The fixed scoring subset: `limit` questions of `split` from `offset`, in file order."""
    return select(load_split(dataset, split), limit=limit, offset=offset)
