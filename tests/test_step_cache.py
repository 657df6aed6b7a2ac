"""The content-keyed step cache, the run directories and the saved SQuAD sets that steps pass around."""

from __future__ import annotations

import json
import types

import numpy as np
import pytest

from bertbuild.runs import materialize, open_run
from bertbuild.step_cache import StepCache, step_key


def _module(tmp_path, name, source):
    path = tmp_path / f"{name}.py"
    path.write_text(source)
    module = types.ModuleType(name)
    module.__file__ = str(path)
    return module


def test_the_key_follows_inputs_fields_code_and_host(tmp_path):
    data = tmp_path / "model.onnx"
    data.write_bytes(b"weights")
    code = _module(tmp_path, "step", "x = 1\n")
    base = step_key("export", files=[data], fields={"opset": 17}, modules=[code])
    assert step_key("export", files=[data], fields={"opset": 17}, modules=[code]) == base
    assert step_key("export", files=[data], fields={"opset": 18}, modules=[code]) != base
    assert step_key("export", files=[data], fields={"opset": 17}, modules=[code], host=True) != base
    data.write_bytes(b"other weights")
    assert step_key("export", files=[data], fields={"opset": 17}, modules=[code]) != base
    data.write_bytes(b"weights")
    code_path = tmp_path / "step.py"
    code_path.write_text("x = 2\n")
    assert step_key("export", files=[data], fields={"opset": 17}, modules=[code]) != base


def _producer(calls):
    def produce(out):
        calls.append(out)
        (out / "a.bin").write_bytes(b"made")
        return {"path": str(out / "a.bin"), "nested": [str(out / "a.bin")], "n": 3}
    return produce


def test_a_hit_returns_the_stored_result_with_its_paths_and_reruns_nothing(tmp_path):
    cache, calls = StepCache(tmp_path / "cache", tmp_path / "scratch"), []
    first = cache.run("fuse", "k1", _producer(calls))
    second = cache.run("fuse", "k1", _producer(calls))
    assert len(calls) == 1 and first["cached"] is False and second["cached"] is True
    assert second["path"] == first["path"] == second["nested"][0] and second["n"] == 3
    assert open(second["path"], "rb").read() == b"made"
    assert not [p for p in (tmp_path / "cache" / "steps" / "fuse").iterdir() if p.name.startswith(".")]


def test_an_entry_whose_files_went_missing_is_recomputed(tmp_path):
    cache, calls = StepCache(tmp_path / "cache", tmp_path / "scratch"), []
    first = cache.run("fuse", "k1", _producer(calls))
    (tmp_path / "cache" / "steps" / "fuse" / "k1" / "a.bin").unlink()
    again = cache.run("fuse", "k1", _producer(calls))
    assert len(calls) == 2 and again["cached"] is False and open(again["path"], "rb").read() == b"made"
    assert first["path"] == again["path"]


def test_refresh_recomputes_and_no_cache_stores_nothing(tmp_path):
    calls = []
    StepCache(tmp_path / "cache", tmp_path / "scratch").run("fp16", "k", _producer(calls))
    refreshed = StepCache(tmp_path / "cache", tmp_path / "scratch", frozenset({"fp16"})).run("fp16", "k",
                                                                                           _producer(calls))
    assert len(calls) == 2 and refreshed["cached"] is False
    off = StepCache(None, tmp_path / "scratch").run("fp16", "k", _producer(calls))
    assert len(calls) == 3 and off["path"].startswith(str(tmp_path / "scratch"))


def test_an_entry_is_installed_once_unless_replaced(tmp_path):
    from bertbuild.content_cache import CacheEntry

    entry = CacheEntry(tmp_path, "k")

    def built(text):
        work = entry.fresh_scratch("tmp")
        work.mkdir()
        (work / "f").write_text(text)
        return work

    assert entry.install(built("first")) == tmp_path / "k"
    entry.install(built("second"))  # another process finished first: its entry is kept
    assert (tmp_path / "k" / "f").read_text() == "first"
    entry.install(built("third"), replace=True)  # a refresh: the old entry goes through a hidden trash name
    assert (tmp_path / "k" / "f").read_text() == "third" and [p.name for p in tmp_path.iterdir()] == ["k"]


def test_a_failed_step_leaves_no_entry(tmp_path):
    cache = StepCache(tmp_path / "cache", tmp_path / "scratch")

    def broken(out):
        (out / "half.bin").write_bytes(b"half")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        cache.run("int8", "k", broken)
    assert list((tmp_path / "cache" / "steps" / "int8").iterdir()) == []
    assert cache.lookup("int8", "k") is None


def test_run_directories_are_exclusive_and_latest_follows_the_newest_completed(tmp_path):
    from bertbuild.runs import mark_complete

    first = open_run(tmp_path / "runs", "model", "r1", cache_dir=str(tmp_path / "cache"))
    second = open_run(tmp_path / "runs", "model", "r2", cache_dir=str(tmp_path / "cache"))
    latest = tmp_path / "runs" / "model" / "latest"
    assert first.run_dir != second.run_dir and not latest.exists()  # a run still working never takes it
    assert mark_complete(second) and latest.resolve() == second.run_dir
    assert not mark_complete(first) and latest.resolve() == second.run_dir  # started earlier, finished later
    with pytest.raises(FileExistsError):
        open_run(tmp_path / "runs", "model", "r1")
    source = tmp_path / "engine.onnx"
    source.write_bytes(b"engine")
    placed = materialize({"engines/fp32/engine.onnx": str(source)}, second.run_dir)
    assert placed == {"engines/fp32/engine.onnx": str(second.run_dir / "engines/fp32/engine.onnx")}
    assert (second.run_dir / "engines/fp32/engine.onnx").read_bytes() == b"engine"


def test_a_squad_set_round_trips_through_its_file(tmp_path, vocab_path):
    from bertbuild.squad.sets import SquadSet, featurize, first_questions

    examples = first_questions("bundled", "heldout", limit=6)
    original = featurize(examples, vocab_path, True, max_seq_length=96, doc_stride=32, origin={"split": "heldout"})
    loaded = SquadSet.load(original.save(tmp_path / "set.npz"))
    assert loaded.examples == original.examples and loaded.origin == {"split": "heldout"}
    assert loaded.fingerprint == original.fingerprint and len(loaded) == len(original) > 6  # long contexts: windows
    assert loaded.features.token_offsets == original.features.token_offsets
    assert loaded.features.token_is_max_context == original.features.token_is_max_context
    first = original.first_windows(3)
    assert len(first) == 3 and set(first.question_ids) <= set(original.question_ids)
    assert int(first.features.example_index.max()) == len(first.examples) - 1
    np.testing.assert_array_equal(first.features.input_ids, original.features.input_ids[:3])
    assert json.loads(json.dumps(first.origin))["windows"] == 3


def test_a_file_edited_through_a_run_directory_does_not_poison_the_cache(tmp_path):
    cache = StepCache(root=tmp_path / "cache", scratch=tmp_path / "scratch")
    calls = []

    def produce(out):
        calls.append(1)
        (out / "engine.onnx").write_bytes(b"engine bytes")
        return {"path": str(out / "engine.onnx")}

    first = cache.run("engine", "k", produce)
    run = open_run(tmp_path / "runs", "model", "r1", cache_enabled=False)
    placed = materialize({"engine.onnx": first["path"]}, run.run_dir)  # a hard link into the entry
    with open(placed["engine.onnx"], "r+b") as handle:  # edited in place, as a user's tool might
        handle.write(b"E")
    again = cache.run("engine", "k", produce)
    assert len(calls) == 2 and not again["cached"]  # the changed entry is no hit: it was rebuilt
    assert open(again["path"], "rb").read() == b"engine bytes"
    assert cache.run("engine", "k", produce)["cached"] and len(calls) == 2
