"""ONNX files with external data (`bertbuild.onnx_files`) through every step after the export, and in bundles.

A model past protobuf's 2 GB limit is made cheaply: the tiny export with its
word-embedding table grown to more than 2 GiB of rows, the first ones the
original, the rest zeros that no input id reaches. It is written straight to
disk (the zeros as a sparse file), so only the steps themselves hold it in memory.
"""

from __future__ import annotations

import gc
import os
import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from bertbuild import onnx_files, onnx_skeleton
from bertbuild.artifacts.download import download, verify_dir
from bertbuild.artifacts.publish import publish_bundle
from bertbuild.artifacts.store import ArtifactStore
from bertbuild.errors import IntegrityError, UserInputError
from bertbuild.hashing import sha256_file
from bertbuild.config.precision import Int8Config

CFG = Int8Config(samples=16, max_seq_length=128, batch_size=8).plain()  # the config of conftest's tiny_trt_files
WORD_EMBEDDINGS = "bert/embeddings/word_embeddings"
PASS = True


@pytest.fixture(scope="module")
def samples(vocab_path):
    from bertbuild.precision.calibration_set import calibration_set

    return calibration_set(CFG, vocab_path, lower_case=True)


@pytest.fixture(scope="module")
def feed(samples) -> dict:
    return next(samples.batches(8))


def logits(path: Path, feed: dict) -> list[np.ndarray]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, feed)


def max_diff(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    return max(float(np.abs(x.astype(np.float64) - y).max()) for x, y in zip(a, b))


def external_pair(source: Path, path: Path) -> Path:
    """`source` written with its weights in `<path name>.data`."""
    assert onnx_files.save(onnx_files.load(source), path, external_data=True) == [path, onnx_files.data_path(path)]
    return path


def repoint(path: Path, location: str) -> None:
    """Make every external tensor of the file at `path` read `location` (a hostile file)."""
    model = onnx.load(str(path), load_external_data=False)
    for tensor in onnx_skeleton.tensors(model):
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = location
    path.write_bytes(model.SerializeToString())


# --------------------------------------------------------------------------- the module itself


def test_save_writes_inline_by_size_or_one_relative_data_file_and_loads_back_byte_for_byte(tiny_onnx, tmp_path,
                                                                                           monkeypatch):
    model = onnx_files.load(tiny_onnx["fp32"])
    assert onnx_files.fits(model)
    inline = tmp_path / "inline.onnx"
    assert onnx_files.save(model, inline) == [inline] and not onnx_files.is_external(inline)
    assert onnx_files.files_digest(inline) == sha256_file(inline)

    pair = external_pair(tiny_onnx["fp32"], tmp_path / "pair.onnx")
    assert onnx_files.companions(pair) == [pair, tmp_path / "pair.onnx.data"]
    assert onnx_files.external_locations(pair) == ["pair.onnx.data"]  # a bare name: the two move together
    structure = onnx_files.load(pair, load_external_data=False)
    offsets = [int(e.value) for t in structure.graph.initializer for e in t.external_data if e.key == "offset"]
    assert offsets and all(offset % onnx_skeleton.ALIGN == 0 for offset in offsets)
    assert onnx_files.load(pair).SerializeToString() == model.SerializeToString()
    assert onnx_files.files_digest(pair) != sha256_file(pair)  # the data's bytes are part of the content

    moved = tmp_path / "elsewhere"
    moved.mkdir()
    for file in onnx_files.companions(pair):
        shutil.move(file, moved / file.name)
    assert onnx_files.load(moved / "pair.onnx").SerializeToString() == model.SerializeToString()

    # Writing inline over a pair leaves no stale data file behind.
    assert onnx_files.save(model, moved / "pair.onnx", external_data=False) == [moved / "pair.onnx"]
    assert sorted(os.listdir(moved)) == ["pair.onnx"]

    monkeypatch.setattr(onnx_files, "LIMIT", 10**6)  # the same rule at a size this model passes
    assert not onnx_files.fits(model)
    assert len(onnx_files.save(model, tmp_path / "auto.onnx")) == 2
    with pytest.raises(UserInputError, match="2 GB limit") as refused:
        onnx_files.save(model, tmp_path / "forced-inline.onnx", external_data=False)
    assert "\n" not in str(refused.value) and not (tmp_path / "forced-inline.onnx").exists()


def test_a_model_whose_weights_are_already_in_their_data_file_is_written_as_it_is(tiny_onnx, tmp_path):
    pair = external_pair(tiny_onnx["fp32"], tmp_path / "model.onnx")
    streamed = onnx_files.load(pair, load_external_data=False)  # as an exporter that wrote each weight to disk
    pair.unlink()
    assert onnx_files.save(streamed, pair) == [pair, onnx_files.data_path(pair)]
    assert onnx_files.load(pair).SerializeToString() == onnx_files.load(tiny_onnx["fp32"]).SerializeToString()
    with pytest.raises(UserInputError, match="is missing"):  # its data must be beside the file it writes
        onnx_files.save(streamed, tmp_path / "elsewhere" / "model.onnx")


@pytest.mark.parametrize("location", ["../outside.data", "/tmp/outside.data", "sub/pair.onnx.data",
                                      "C:outside.data", ".."])
def test_a_data_location_outside_the_models_folder_is_refused_in_one_line(tiny_onnx, tmp_path, capsys, location):
    from bertbuild.cli import main

    pair = external_pair(tiny_onnx["fp32"], tmp_path / "model.onnx")
    repoint(pair, location)
    for read in (onnx_files.load, onnx_files.companions, onnx_files.external_locations):
        with pytest.raises(UserInputError, match="not a file name beside the model") as refused:
            read(pair)
        assert "\n" not in str(refused.value) and repr(location) in str(refused.value)
    assert main(["trt-check", str(pair)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "refusing to read it" in err
    with pytest.raises(UserInputError, match="publish: model.onnx"):
        publish_bundle(ArtifactStore(tmp_path / "store"), "tiny", "r1", {"model.onnx": pair}, {}, [], PASS)


def test_a_missing_data_file_is_one_line_everywhere(tiny_onnx, tmp_path):
    pair = external_pair(tiny_onnx["fp32"], tmp_path / "model.onnx")
    onnx_files.data_path(pair).unlink()
    for read in (onnx_files.load, onnx_files.companions):
        with pytest.raises(UserInputError, match="model.onnx.data is missing"):
            read(pair)
    with pytest.raises(UserInputError, match="keeps its weights in model.onnx.data|is missing"):
        publish_bundle(ArtifactStore(tmp_path / "store"), "tiny", "r1", {"model.onnx": pair}, {}, [], PASS)


def test_a_symlinked_data_file_is_refused_but_a_hard_linked_one_loads(tiny_onnx, tmp_path):
    pair = external_pair(tiny_onnx["fp32"], tmp_path / "model.onnx")
    data = onnx_files.data_path(pair)
    linked = tmp_path / "linked"
    linked.mkdir()
    shutil.copyfile(pair, linked / pair.name)
    os.link(data, linked / data.name)  # as a run directory links the step cache's files
    assert onnx_files.load(linked / pair.name).SerializeToString() == onnx_files.load(pair).SerializeToString()
    onnx_files.check(linked / pair.name, full_check=True)  # onnx's own checker refuses a hard-linked data file
    (linked / data.name).unlink()
    (linked / data.name).symlink_to(data)
    with pytest.raises(UserInputError, match="is a symbolic link"):
        onnx_files.load(linked / pair.name)


def test_the_step_cache_key_and_hits_cover_the_data_file(tiny_onnx, tmp_path):
    from bertbuild.step_cache import StepCache, input_digest

    pair = external_pair(tiny_onnx["fp32"], tmp_path / "model.onnx")
    before, onnx_bytes = input_digest(pair), pair.read_bytes()
    data = onnx_files.data_path(pair)
    raw = bytearray(data.read_bytes())
    raw[-1] ^= 0xFF  # a different weight, same layout: the .onnx file does not change at all
    data.write_bytes(bytes(raw))
    assert pair.read_bytes() == onnx_bytes and input_digest(pair) != before

    cache = StepCache(root=tmp_path / "cache", scratch=tmp_path / "scratch")

    def produce(out: Path) -> dict:
        return {"path": str(external_pair(tiny_onnx["fp32"], out / "model.onnx"))}

    made = cache.run("fuse", "k", produce)
    assert cache.lookup("fuse", "k") is not None
    onnx_files.data_path(made["path"]).unlink()
    assert cache.lookup("fuse", "k") is None  # the .onnx alone is no hit


def test_bundle_companions_go_beside_their_onnx_file(tiny_onnx, tmp_path):
    from bertbuild.onnx_files import onnx_companions
    from bertbuild.runs import materialize

    pair = external_pair(tiny_onnx["fp32"], tmp_path / "model.int8-s8s8.onnx")
    files = {"int8/model.int8-s8s8.onnx": str(pair), "model-fused.onnx": str(tiny_onnx["fused"]),
             "notes/fake.onnx": str(tmp_path / "fake.onnx")}
    (tmp_path / "fake.onnx").write_bytes(b"not a protobuf")  # a name is no promise: it has no companions
    assert onnx_companions(files) == {"int8/model.int8-s8s8.onnx.data": str(onnx_files.data_path(pair))}
    # Under another bundle name the data keeps the file name the .onnx records, beside it.
    renamed = {"int8/renamed.onnx": str(pair)}
    assert onnx_companions(renamed) == {"int8/model.int8-s8s8.onnx.data": str(onnx_files.data_path(pair))}
    with pytest.raises(UserInputError, match="is both"):
        onnx_companions({**renamed, "int8/model.int8-s8s8.onnx.data": str(tiny_onnx["fused"])})

    files.update(onnx_companions(files))
    bundle = materialize(files, tmp_path / "run")
    assert onnx_files.load(bundle["int8/model.int8-s8s8.onnx"]).SerializeToString() == \
        onnx_files.load(pair).SerializeToString()
    with pytest.raises(UserInputError, match="bundle has no int8/model.int8-s8s8.onnx.data"):
        publish_bundle(ArtifactStore(tmp_path / "store"), "tiny", "r1",
                       {k: v for k, v in bundle.items() if not k.endswith(".data")}, {}, [], PASS)


def test_a_run_directory_copies_a_cached_onnx_pair_and_hard_links_everything_else(tiny_onnx, tmp_path):
    from bertbuild.onnx_files import onnx_companions
    from bertbuild.runs import materialize
    from bertbuild.step_cache import StepCache

    def produce(out: Path) -> dict:
        (out / "engine.plan").write_bytes(b"an engine, linked not copied")
        return {"path": str(external_pair(tiny_onnx["fp32"], out / "model.onnx")), "engine": str(out / "engine.plan")}

    cache = StepCache(root=tmp_path / "cache", scratch=tmp_path / "scratch")
    entry = cache.run("fuse", "k", produce)
    files = {"model-fp32.onnx": entry["path"], "engines/fp32/engine.plan": entry["engine"]}
    files.update(onnx_companions(files))
    placed = materialize(files, tmp_path / "run")
    assert os.stat(placed["engines/fp32/engine.plan"]).st_ino == os.stat(entry["engine"]).st_ino
    for run_file, cached in ((placed["model-fp32.onnx"], entry["path"]),
                             (placed["model.onnx.data"], str(onnx_files.data_path(entry["path"])))):
        assert os.stat(run_file).st_ino != os.stat(cached).st_ino and os.stat(cached).st_nlink == 1
        assert Path(run_file).read_bytes() == Path(cached).read_bytes()
    expected = [onnx.numpy_helper.to_array(t) for t in onnx.load(str(tiny_onnx["fp32"])).graph.initializer]
    for path in (placed["model-fp32.onnx"], entry["path"]):  # the run directory, and the cache the next run reads
        model = onnx.load(path)  # onnx's own reader, external data included
        assert all(np.array_equal(onnx.numpy_helper.to_array(t), e) for t, e in zip(model.graph.initializer, expected))
        onnx.checker.check_model(path, full_check=True)
        onnx_files.check(path, full_check=True)
    assert cache.run("fuse", "k", produce)["cached"]  # the run directory's copies left the entry a hit


def test_onnx_refuses_what_the_location_rule_refuses_and_every_reader_says_so_in_one_line(tiny_onnx, tmp_path):
    pair = external_pair(tiny_onnx["fp32"], tmp_path / "model.onnx")
    weight = next(t for t in onnx.load(str(pair), load_external_data=False).graph.initializer
                  if onnx.external_data_helper.uses_external_data(t))
    data = onnx_files.data_path(pair)
    moved = tmp_path / "elsewhere.data"
    data.rename(moved)
    data.symlink_to(moved)
    with pytest.raises(onnx.checker.ValidationError, match="symbolic link"):
        onnx.load(str(pair))  # onnx's own rule
    for read in (onnx_files.load, onnx_files.check, lambda path: onnx_files.array(weight, path)):
        with pytest.raises(UserInputError, match="is a symbolic link") as refused:
            read(pair)
        assert "\n" not in str(refused.value)
    data.unlink()
    moved.rename(data)
    repoint(pair, "../model.onnx.data")
    with pytest.raises(onnx.checker.ValidationError, match="outside"):
        onnx.load(str(pair))
    for read in (onnx_files.load, onnx_files.check):
        with pytest.raises(onnx_files.UnsafeLocation, match="not a file name beside the model") as refused:
            read(pair)
        assert "\n" not in str(refused.value)
    truncated = external_pair(tiny_onnx["fp32"], tmp_path / "short" / "model.onnx")
    with open(onnx_files.data_path(truncated), "r+b") as handle:
        handle.truncate(100)
    with pytest.raises(UserInputError, match="external data cannot be read") as refused:
        onnx_files.load(truncated)
    assert "\n" not in str(refused.value)


def test_download_refuses_hostile_or_unlisted_external_data(tiny_onnx, tmp_path):
    from bertbuild.hashing import sha256_bytes

    store = ArtifactStore(tmp_path / "store")

    def plant(files: dict[str, bytes], run_id: str) -> None:
        import json

        for data in files.values():
            store.write_atomic(store.blob_path(sha256_bytes(data)), data)
        manifest = {"schema": 2, "model": "tiny", "run_id": run_id, "passed": True,
                    "files": {n: {"sha256": sha256_bytes(d), "size": len(d)} for n, d in files.items()}}
        store.write_atomic(f"{store.run_path('tiny', run_id)}/manifest.json", json.dumps(manifest).encode())

    pair = external_pair(tiny_onnx["fp32"], tmp_path / "model.onnx")
    plant({"model.onnx": pair.read_bytes()}, "unlisted")  # the manifest forgot the data
    with pytest.raises(IntegrityError, match=r"missing file: model.onnx.data \(the external data of model.onnx"):
        download(store, "tiny", tmp_path / "dl1", run="unlisted")
    repoint(pair, "../../outside.data")
    plant({"model.onnx": pair.read_bytes(), "model.onnx.data": b"x"}, "hostile")
    with pytest.raises(IntegrityError, match="unsafe external data: model.onnx reads .* outside its folder"):
        download(store, "tiny", tmp_path / "dl2", run="hostile")
    assert not (tmp_path / "dl1").exists() and not (tmp_path / "dl2").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx", "model.onnx.data", "store"]


# --------------------------------------------------------------------------- every step, external by choice


def test_a_small_model_forced_external_goes_through_every_step(tiny_trt_files, samples, feed, tmp_path):
    from bertbuild.runner import Profile
    from bertbuild.backends.onnxrt import OnnxRuntimeBackend
    from bertbuild.fuse import fuse_onnx
    from bertbuild.precision.calibration import calibrate
    from bertbuild.precision.fp16 import convert_to_fp16
    from bertbuild.precision.int8 import quantize_int8
    from bertbuild.artifacts.layout import Bundle, onnx_name
    from bertbuild.runs import materialize
    from bertbuild.trt_check import check_onnx

    small = tiny_trt_files
    fp32 = external_pair(small["fp32"], tmp_path / "model-fp32.onnx")
    assert max_diff(logits(fp32, feed), logits(small["fp32"], feed)) == 0.0

    fused = tmp_path / "model-fused.onnx"
    fuse_onnx(fp32, fused, num_layers=2)
    assert onnx_files.is_external(fused)  # external though small: the input was, by choice
    # The steps below read it hard-linked, as after a run directory linked the step cache's file
    # (ORT's quantizer reads data with onnx's reader, which refuses that).
    os.link(onnx_files.data_path(fused), tmp_path / "linked-as-in-a-run-directory")
    assert max_diff(logits(fused, feed), logits(small["fused"], feed)) <= 1e-4
    inline = tmp_path / "inline" / "model-fused.onnx"
    fuse_onnx(fp32, inline, num_layers=2, external_data=False)  # a setting given wins
    assert onnx_files.companions(inline) == [inline]

    fp16 = tmp_path / "model-fp16.onnx"
    convert_to_fp16(fused, fp16)
    assert onnx_files.is_external(fp16) and max_diff(logits(fp16, feed), logits(small["fp16"], feed)) <= 1e-3

    calibration = calibrate(fused, samples, CFG)
    written = quantize_int8(fused, tmp_path / "int8", calibration, CFG).paths
    for variant in ("s8s8", "u8s8"):
        assert onnx_files.is_external(written[variant])
        assert max_diff(logits(written[variant], feed), logits(small[variant], feed)) <= 1e-3
    for path in (fused, fp16, written["s8s8"]):
        assert check_onnx(path).ready, path

    engine = OnnxRuntimeBackend(threads=1).build(fused, "fp32", [Profile((1, 16), (8, 128), (8, 128))],
                                                tmp_path / "engines")
    assert onnx_files.companions(engine.path) == [engine.path, onnx_files.data_path(engine.path)]
    runner = OnnxRuntimeBackend(threads=1).load(engine.path)
    runner.activate()
    assert max_diff(list(runner.infer(feed).values()), logits(small["fused"], feed)) <= 1e-4
    runner.deactivate()

    layout = Bundle()  # as the flow lays its bundle out: each file with its precision
    for precision, path in (("fp32", fp32), ("fused-fp32", fused), ("fp16", fp16)):
        layout.add(onnx_name(precision), path, precision)
    layout.add_int8({"s8s8": written["s8s8"]}, str(calibration_file(tmp_path)))
    layout.add(f"engines/fp32/{engine.path.name}", engine.path, "fp32")
    layout.add("results.json", tmp_path / "results.json")
    (tmp_path / "results.json").write_text("{}\n")
    layout.add_companions()
    files = layout.files
    assert {"model-fp32.onnx.data", "int8/model.int8-s8s8.onnx.data",
            f"engines/fp32/{engine.path.name}.data"} <= set(files)
    assert layout.precisions["int8/model.int8-s8s8.onnx.data"] == "int8"  # a data file goes with its ONNX file
    bundle = materialize(files, tmp_path / "run")
    store = ArtifactStore(tmp_path / "store")
    published = publish_bundle(store, "tiny", "r1", bundle, {}, [], PASS, precisions=layout.precisions)
    assert published.files["model-fused.onnx.data"]["sha256"] == sha256_file(onnx_files.data_path(fused))

    dest = download(store, "tiny", tmp_path / "dl").dest
    assert set(verify_dir(dest).files) == set(files)
    for name in ("model-fused.onnx", "model-fp16.onnx", "int8/model.int8-s8s8.onnx"):
        assert max_diff(logits(dest / name, feed), logits(Path(files[name]), feed)) == 0.0
    only = download(store, "tiny", tmp_path / "dl-int8", precision="int8")
    assert {"int8/model.int8-s8s8.onnx", "int8/model.int8-s8s8.onnx.data"} <= set(only.files)
    assert "model-fp32.onnx.data" not in only.files
    verify_dir(only.dest, precision="int8")
    onnx_files.load(only.dest / "int8/model.int8-s8s8.onnx")


# --------------------------------------------------------------------------- past 2 GB


BIG_ROWS = 2**31 // (4 * 32) + 100_000  # float32 rows of the tiny model's 32 columns: 2.01 GiB in all


def big_pair(small_fp32: Path, path: Path) -> Path:
    """The small model with its word-embedding table grown past 2 GiB, written without holding it in memory."""
    external_pair(small_fp32, path)
    model = onnx.load(str(path), load_external_data=False)
    table = next(t for t in model.graph.initializer if t.name == WORD_EMBEDDINGS)
    entries = {e.key: e for e in table.external_data}
    length = BIG_ROWS * table.dims[1] * 4
    with open(onnx_files.data_path(path), "r+b") as handle:
        handle.seek(int(entries["offset"].value))
        rows = handle.read(int(entries["length"].value))  # the original rows come first
        offset = -(-handle.seek(0, os.SEEK_END) // onnx_skeleton.ALIGN) * onnx_skeleton.ALIGN
        handle.seek(offset)
        handle.write(rows)
        handle.truncate(offset + length)  # the other rows: zeros, as a hole in the file
    table.dims[0] = BIG_ROWS
    entries["offset"].value, entries["length"].value = str(offset), str(length)
    path.write_bytes(model.SerializeToString())
    return path


@pytest.mark.slow
def test_a_model_past_2_gb_goes_through_every_step_and_round_trips_a_bundle(tiny_trt_files, samples, feed,
                                                                             tmp_path):
    from bertbuild.fuse import fuse_onnx
    from bertbuild.precision.calibration import calibrate
    from bertbuild.precision.fp16 import convert_to_fp16
    from bertbuild.precision.int8 import quantize_int8
    from bertbuild.precision.ort_int8 import write_ort_int8
    from bertbuild.onnx_files import onnx_companions
    from bertbuild.runs import materialize
    from bertbuild.trt_check import check_onnx

    small = tiny_trt_files
    try:
        grown = big_pair(small["fp32"], tmp_path / "grown" / "model-fp32.onnx")
        model = onnx_files.load(grown)
        assert onnx_skeleton.payload_bytes(model) > 2**31 and not onnx_files.fits(model)  # no protobuf holds it
        fp32 = tmp_path / "model-fp32.onnx"
        assert onnx_files.save(model, fp32) == [fp32, onnx_files.data_path(fp32)]  # external: automatic
        del model
        gc.collect()
        assert max_diff(logits(fp32, feed), logits(small["fp32"], feed)) == 0.0

        fused = tmp_path / "model-fused.onnx"
        fuse_onnx(fp32, fused, num_layers=2)
        gc.collect()
        assert onnx_files.is_external(fused)
        assert max_diff(logits(fused, feed), logits(small["fused"], feed)) <= 1e-4

        fp16 = tmp_path / "model-fp16.onnx"
        convert_to_fp16(fused, fp16)
        gc.collect()
        assert not onnx_files.is_external(fp16)  # half the size: under the limit, so inline
        assert max_diff(logits(fp16, feed), logits(small["fp16"], feed)) <= 1e-3

        calibration = calibrate(fused, samples, CFG)
        written = quantize_int8(fused, tmp_path / "int8", calibration, CFG).paths
        gc.collect()
        ort_file = tmp_path / "int8" / "model.int8-ort.onnx"
        write_ort_int8(fused, ort_file, calibration, CFG)
        gc.collect()
        small_ort = tmp_path / "small-ort.onnx"
        write_ort_int8(small["fused"], small_ort, calibrate(small["fused"], samples, CFG), CFG)
        for path, reference in ((written["s8s8"], small["s8s8"]), (written["u8s8"], small["u8s8"]),
                                (ort_file, small_ort)):
            assert onnx_files.is_external(path)  # the FP32 embedding table keeps it past the limit
            assert max_diff(logits(Path(path), feed), logits(Path(reference), feed)) <= 1e-2
        for path in (fused, fp16, written["s8s8"]):
            assert check_onnx(path).ready, path
        for path in written.values():
            Path(path).unlink()
            onnx_files.data_path(path).unlink()
        ort_file.unlink()
        onnx_files.data_path(ort_file).unlink()

        files = {"model-fp32.onnx": str(fp32), "model-fp16.onnx": str(fp16)}
        files.update(onnx_companions(files))
        assert set(files) == {"model-fp32.onnx", "model-fp32.onnx.data", "model-fp16.onnx"}
        store = ArtifactStore(tmp_path / "store")
        publish_bundle(store, "tiny", "r1", materialize(files, tmp_path / "run"), {}, [], PASS)
        dest = download(store, "tiny", tmp_path / "dl").dest
        verify_dir(dest)
        assert max_diff(logits(dest / "model-fp32.onnx", feed), logits(small["fp32"], feed)) == 0.0
    finally:
        for child in tmp_path.iterdir():  # some 15 GB: not left for pytest's kept temporary directories
            shutil.rmtree(child, ignore_errors=True) if child.is_dir() else child.unlink()


def calibration_file(directory: Path) -> Path:
    path = directory / "calibration.json"
    path.write_text("{}\n")
    return path
