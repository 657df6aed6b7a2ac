"""The Triton model repository in every bundle, checked with Triton's own schema and ONNX Runtime.

No Triton server runs here (its wheel needs a newer glibc than this environment
has): every config.pbtxt is parsed with tritonclient's `model_config_pb2`, its
inputs and outputs are compared with the ONNX graph, and the model file in `1/`
answers a request built from the config alone, through ONNX Runtime.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from google.protobuf import text_format
from onnx import TensorProto, helper
from tritonclient.grpc import model_config_pb2
from tritonclient.utils import triton_to_np_dtype

from bertbuild.artifacts.layout import Bundle
from bertbuild.artifacts.publish import publish_bundle
from bertbuild.evaluation.gates import GateResult
from bertbuild.runner import Profile
from bertbuild.cli import main
from bertbuild.errors import IntegrityError, UserInputError
from bertbuild.model.signature import INPUT_NAMES, OUTPUT_NAMES
from bertbuild.serving.repository import repository_files
from bertbuild.serving.triton import model_config

PROFILES = (Profile((1, 32), (8, 384), (16, 384)), Profile((2, 32), (4, 128), (8, 128)))
PASS = [GateResult("onnxruntime-fp32", "parity", 1e-6, 1e-4, True, "max")]


@pytest.fixture(scope="module")
def engines(tiny_onnx, tmp_path_factory) -> dict[str, dict]:
    """A real ONNX Runtime engine of the tiny model (fp32), and a stand-in TensorRT plan of its fused file.

    Writing a plan's config reads only the ONNX file it was built from, so the
    plan's bytes need no TensorRT here.
    """
    from bertbuild.backends.onnxrt import OnnxRuntimeBackend

    out = tmp_path_factory.mktemp("engines")
    built = OnnxRuntimeBackend(threads=1).build(tiny_onnx["fp32"], "fp32", list(PROFILES), out / "fp32")
    plan = out / "model-fused.plan"
    plan.write_bytes(b"a serialized TensorRT engine")
    return {"fp32": {"path": str(built.path), "backend": "onnxruntime", "precision": "fp32",
                     "onnx": str(tiny_onnx["fp32"])},
            "fused-fp32": {"path": str(plan), "backend": "tensorrt", "precision": "fused-fp32",
                           "onnx": str(tiny_onnx["fused"])}}


def parsed_text(text: str) -> model_config_pb2.ModelConfig:
    """config.pbtxt text read with Triton's own schema: an unknown field, enum or bad syntax raises."""
    return text_format.Parse(text, model_config_pb2.ModelConfig())


def parsed(path: Path | str) -> model_config_pb2.ModelConfig:
    return parsed_text(Path(path).read_text())


def np_dtype(data_type: int) -> np.dtype:
    return np.dtype(triton_to_np_dtype(model_config_pb2.DataType.Name(data_type).removeprefix("TYPE_")))


def onnx_io(path: Path | str) -> tuple[list, list]:
    """(inputs, outputs) of an ONNX graph as (name, numpy dtype, shape with -1 for a free dimension)."""
    graph = onnx.load(str(path), load_external_data=False).graph
    weights = {t.name for t in graph.initializer}

    def described(values):
        return [(v.name, np.dtype(helper.tensor_dtype_to_np_dtype(v.type.tensor_type.elem_type)),
                 [d.dim_value if d.HasField("dim_value") else -1 for d in v.type.tensor_type.shape.dim])
                for v in values]

    return described([v for v in graph.input if v.name not in weights]), described(graph.output)


def config_io(config: model_config_pb2.ModelConfig) -> tuple[list, list]:
    """The config's inputs and outputs in `onnx_io`'s form: the batch dimension put back when Triton owns it."""
    batch = [-1] if config.max_batch_size > 0 else []

    def described(tensors):
        return [(t.name, np_dtype(t.data_type), batch + list(t.dims)) for t in tensors]

    return described(config.input), described(config.output)


def answer_request(config: model_config_pb2.ModelConfig, model_dir: Path, batch: int, seq: int) -> None:
    """Send the model in `model_dir/1/` one request built from the config alone: outputs of the config's shapes."""
    import onnxruntime as ort

    def shape(tensor) -> list[int]:
        return [batch, *(seq if d == -1 else d for d in tensor.dims)]

    feed = {t.name: np.ones(shape(t), np_dtype(t.data_type)) for t in config.input}
    session = ort.InferenceSession(str(model_dir / "1" / config.default_model_filename),
                                   providers=["CPUExecutionProvider"])
    outputs = session.run([t.name for t in config.output], feed)
    for tensor, value in zip(config.output, outputs, strict=True):
        assert value.shape == tuple(shape(tensor)) and value.dtype == np_dtype(tensor.data_type), tensor.name
        assert np.isfinite(value).all()


def test_onnxruntime_engine_config_matches_its_onnx_file(engines, tmp_path):
    files = repository_files("tiny", [engines["fp32"]], PROFILES, 2, tmp_path)
    engine = Path(engines["fp32"]["path"])
    assert files == {"triton/tiny-fp32/config.pbtxt": str(tmp_path / "triton/tiny-fp32/config.pbtxt"),
                     f"triton/tiny-fp32/1/{engine.name}": str(engine)}
    config = parsed(files["triton/tiny-fp32/config.pbtxt"])
    assert config.name == "tiny-fp32" and config.platform == "onnxruntime_onnx"
    assert config.default_model_filename == engine.name
    inputs, outputs = onnx_io(engine)
    assert [name for name, _, _ in inputs] == list(INPUT_NAMES) and [n for n, _, _ in outputs] == list(OUTPUT_NAMES)
    assert config_io(config) == (inputs, outputs)
    assert config.max_batch_size == 16  # the largest batch a profile allows: ONNX Runtime serves any batch
    assert list(config.dynamic_batching.preferred_batch_size) == [2, 4, 8]  # the profiles' opt and the bench batch
    assert config.dynamic_batching.max_queue_delay_microseconds > 0
    (group,) = config.instance_group
    assert group.kind == model_config_pb2.ModelInstanceGroup.KIND_CPU and group.count == 1 and not group.profile
    assert not config.optimization.execution_accelerators.gpu_execution_accelerator


def test_tensorrt_plan_config_has_one_instance_group_per_profile(engines, tmp_path):
    files = repository_files("tiny", [engines["fused-fp32"]], PROFILES, 8, tmp_path)
    assert set(files) == {"triton/tiny-fused-fp32/config.pbtxt", "triton/tiny-fused-fp32/1/model-fused.plan"}
    config = parsed(files["triton/tiny-fused-fp32/config.pbtxt"])
    assert config.platform == "tensorrt_plan" and config.default_model_filename == "model-fused.plan"
    assert config_io(config) == onnx_io(engines["fused-fp32"]["onnx"])  # the plan's I/O are its ONNX file's
    gpu = model_config_pb2.ModelInstanceGroup.KIND_GPU
    assert [(g.kind, g.count, list(g.profile)) for g in config.instance_group] == [(gpu, 1, ["0"]), (gpu, 1, ["1"])]
    # Triton may hand any batch to any instance: the limit is the largest batch both profiles take, and the
    # preferred sizes (the opt batches 8 and 4, the bench batch 8) are ones both profiles take.
    assert config.max_batch_size == 8
    assert list(config.dynamic_batching.preferred_batch_size) == [4, 8]


def test_onnxruntime_tensorrt_engine_asks_triton_for_the_tensorrt_accelerator(engines, tmp_path):
    engine = {**engines["fp32"], "backend": "onnxruntime-tensorrt"}
    config = parsed(repository_files("tiny", [engine], PROFILES, 2, tmp_path)["triton/tiny-fp32/config.pbtxt"])
    assert config.platform == "onnxruntime_onnx"
    assert [g.kind for g in config.instance_group] == [model_config_pb2.ModelInstanceGroup.KIND_GPU]
    assert [a.name for a in config.optimization.execution_accelerators.gpu_execution_accelerator] == ["tensorrt"]


def test_without_profiles_the_benchmark_batch_is_the_limit(engines, tmp_path):
    config = parsed(repository_files("tiny", [engines["fp32"]], (), 4, tmp_path)["triton/tiny-fp32/config.pbtxt"])
    assert config.max_batch_size == 4 and list(config.dynamic_batching.preferred_batch_size) == [4]


def _tiny_graph(path: Path, batch_dim, input_name: str = "ids") -> Path:
    """A one-node ONNX file: int64 `input_name` [batch_dim, 'seq'] -> float32 'scores' of the same shape."""
    node = helper.make_node("Cast", [input_name], ["scores"], to=TensorProto.FLOAT)
    graph = helper.make_graph([node], "g",
                              [helper.make_tensor_value_info(input_name, TensorProto.INT64, [batch_dim, "seq"])],
                              [helper.make_tensor_value_info("scores", TensorProto.FLOAT, [batch_dim, "seq"])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_a_fixed_batch_dimension_means_no_batching_and_full_dims(tmp_path):
    model = _tiny_graph(tmp_path / "fixed.onnx", 1)
    config = parsed_text(model_config("fixed-fp32", "onnxruntime", model, PROFILES, 8).to_pbtxt())
    assert config.max_batch_size == 0 and not config.HasField("dynamic_batching")
    assert config_io(config) == onnx_io(model) == ([("ids", np.dtype("int64"), [1, -1])],
                                                   [("scores", np.dtype("float32"), [1, -1])])


def test_any_tensor_name_survives_the_text_format(tmp_path):
    name = 'ids:0 "quoted" \\ back\nslash é'
    model = _tiny_graph(tmp_path / "odd.onnx", "batch", input_name=name)
    config = parsed_text(model_config("odd-fp32", "onnxruntime", model, PROFILES, 8).to_pbtxt())
    assert [t.name for t in config.input] == [name] and config_io(config) == onnx_io(model)


def test_a_plan_without_its_onnx_file_or_an_unknown_backend_is_refused(engines):
    with pytest.raises(UserInputError, match="ONNX file it was built from"):
        model_config("m", "tensorrt", engines["fused-fp32"]["path"], PROFILES, 8)
    with pytest.raises(UserInputError, match="no Triton platform for backend 'tflite'"):
        model_config("m", "tflite", engines["fp32"]["path"], PROFILES, 8)


def _publish(store, tmp_path, engine_list, run_id="r1", with_triton=True) -> dict[str, str]:
    """A released bundle of `engine_list`: each engine under engines/<precision>/, results.json, the Triton tree."""
    run_dir = tmp_path / f"run-{run_id}"
    run_dir.mkdir()
    (run_dir / "results.json").write_text("{}\n")
    bundle = Bundle()  # laid out as the flow lays out its bundle
    bundle.add("results.json", run_dir / "results.json")
    for engine in engine_list:
        bundle.add(f"engines/{engine['precision']}/{Path(engine['path']).name}", engine["path"], engine["precision"])
    if with_triton:
        bundle.add_triton("tiny", engine_list, PROFILES, 2, run_dir)
    bundle.add_companions()
    publish_bundle(store, "tiny", run_id, bundle.files, {}, PASS, True, precisions=bundle.precisions)
    return bundle.files


def _tree(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


def test_download_triton_lays_out_a_repository_that_answers(engines, store, tmp_path):
    from bertbuild.artifacts.download import download

    files = _publish(store, tmp_path, list(engines.values()))
    fp32 = Path(engines["fp32"]["path"]).name
    result = download(store, "tiny", tmp_path / "repo", triton=True)
    repo = tmp_path / "repo"
    assert _tree(repo) == {"tiny-fp32/config.pbtxt", f"tiny-fp32/1/{fp32}",
                           "tiny-fused-fp32/config.pbtxt", "tiny-fused-fp32/1/model-fused.plan"}
    assert sorted(result.files) == sorted(n for n in files if n.startswith("triton/"))
    for name in _tree(repo):
        assert (repo / name).read_bytes() == Path(files[f"triton/{name}"]).read_bytes()
    for folder in ("tiny-fp32", "tiny-fused-fp32"):
        config = parsed(repo / folder / "config.pbtxt")
        assert config.name == folder and (repo / folder / "1" / config.default_model_filename).is_file()
    config = parsed(repo / "tiny-fp32" / "config.pbtxt")
    answer_request(config, repo / "tiny-fp32", batch=config.max_batch_size, seq=64)
    answer_request(config, repo / "tiny-fp32", batch=1, seq=32)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".repo")] == []


def test_download_triton_with_precision_keeps_that_model_only(engines, store, store_cli_env, tmp_path, capsys):
    _publish(store, tmp_path, list(engines.values()))
    assert main(["artifacts", "download", "--store", store.url, "--precision", "fp32",
                 "--triton", str(tmp_path / "repo")]) == 0
    assert "Triton model repository" in capsys.readouterr().out
    assert {p.split("/")[0] for p in _tree(tmp_path / "repo")} == {"tiny-fp32"}  # not tiny-fused-fp32
    code = main(["artifacts", "download", "--store", store.url, "--precision", "int8",
                 "--triton", str(tmp_path / "none")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert "has no Triton model for int8 (Triton models in this bundle: tiny-fp32, tiny-fused-fp32)" in err
    assert not (tmp_path / "none").exists()


def test_a_bundle_without_a_triton_repository_is_one_line_and_leaves_nothing(engines, store, store_cli_env, tmp_path,
                                                                             capsys):
    _publish(store, tmp_path, [engines["fp32"]], with_triton=False)
    code = main(["artifacts", "download", "--store", store.url, "--triton", str(tmp_path / "repo")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "has no Triton model repository" in err and "--dest" in err
    assert not (tmp_path / "repo").exists()


def test_dest_and_triton_are_exclusive(tmp_path, capsys):
    with pytest.raises(SystemExit) as exited:
        main(["artifacts", "download", "--dest", str(tmp_path / "a"), "--triton", str(tmp_path / "b")])
    assert exited.value.code == 2 and "not allowed with argument" in capsys.readouterr().err


def test_a_tampered_triton_file_fails_and_leaves_nothing(engines, store, tmp_path):
    from bertbuild.artifacts.download import download

    _publish(store, tmp_path, [engines["fp32"]])
    manifest = store.read_manifest("tiny", "r1")
    path = store.content_path(store.run_path("tiny", "r1"), manifest, "triton/tiny-fp32/config.pbtxt")
    store.write_atomic(path, store.read_bytes(path).replace(b"max_batch_size: 16", b"max_batch_size: 99"))
    with pytest.raises(IntegrityError, match="triton/tiny-fp32/config.pbtxt"):
        download(store, "tiny", tmp_path / "repo", triton=True)
    assert not (tmp_path / "repo").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_external_data_goes_into_the_version_folder_and_loads_there(tiny_onnx, store, tmp_path):
    from bertbuild import onnx_files
    from bertbuild.artifacts.download import download
    from bertbuild.backends.onnxrt import OnnxRuntimeBackend

    source = tmp_path / "src" / "model-fp32.onnx"
    source.parent.mkdir()
    onnx_files.save(onnx_files.load(tiny_onnx["fp32"]), source, external_data=True)
    built = OnnxRuntimeBackend(threads=1).build(source, "fp32", list(PROFILES), tmp_path / "engine")
    data = onnx_files.companions(built.path)[1:]
    assert data  # the engine keeps its weights beside it, as a big model's does
    engine = {"path": str(built.path), "backend": "onnxruntime", "precision": "fp32", "onnx": str(source)}
    files = repository_files("tiny", [engine], PROFILES, 2, tmp_path / "run")
    assert {f"triton/tiny-fp32/1/{d.name}" for d in data} <= set(files)

    _publish(store, tmp_path, [engine])
    download(store, "tiny", tmp_path / "repo", precision="fp32", triton=True)
    model_dir = tmp_path / "repo" / "tiny-fp32"
    assert _tree(model_dir) == {"config.pbtxt", f"1/{built.path.name}", *(f"1/{d.name}" for d in data)}
    config = parsed(model_dir / "config.pbtxt")
    assert config_io(config) == onnx_io(built.path)
    answer_request(config, model_dir, batch=2, seq=48)


# --- OpenVINO engines: an IR pair for Triton's OpenVINO backend ---------------------------------------------------

@pytest.fixture(scope="module")
def openvino_engine(tiny_onnx, tmp_path_factory) -> dict:
    """A real OpenVINO engine (IR pair + metadata) of the tiny model's fused file, as the flow's engine dict."""
    pytest.importorskip("openvino")
    from bertbuild.backends.openvino import OpenVinoBackend

    built = OpenVinoBackend(threads=1).build(tiny_onnx["fused"], "fused-fp32", list(PROFILES),
                                             tmp_path_factory.mktemp("openvino"))
    return {"path": str(built.path), "metadata": str(built.metadata_path), "backend": "openvino",
            "precision": "fused-fp32", "onnx": str(tiny_onnx["fused"]), "weights": str(built.path.with_suffix(".bin"))}


def _parameters(config: model_config_pb2.ModelConfig) -> dict[str, str]:
    return {key: value.string_value for key, value in config.parameters.items()}


def _openvino_answers(config: model_config_pb2.ModelConfig, model_dir: Path, batch: int, seq: int) -> None:
    """Compile `model_dir/1/<default_model_filename>` as Triton's OpenVINO backend reads it (the .bin found by its
    stem) at the config's precision hint, and answer a request built from the config alone."""
    from bertbuild.backends.openvino import import_openvino

    ov = import_openvino()
    feed = {t.name: np.ones([batch if d == -1 and i == 0 else seq if d == -1 else d for i, d in enumerate(t.dims)],
                            np_dtype(t.data_type)) for t in config.input}
    core = ov.Core()
    compiled = core.compile_model(core.read_model(str(model_dir / "1" / config.default_model_filename)), "CPU",
                                  {"INFERENCE_PRECISION_HINT": _parameters(config)["INFERENCE_PRECISION_HINT"],
                                   "INFERENCE_NUM_THREADS": "1"})
    results = compiled.create_infer_request().infer(feed)
    for tensor in config.output:
        value = np.asarray(results[compiled.output(tensor.name)])
        assert value.shape == (batch, seq) and value.dtype == np_dtype(tensor.data_type) and np.isfinite(value).all()


def test_openvino_engine_is_an_ir_pair_for_tritons_openvino_backend(openvino_engine, tmp_path):
    files = repository_files("tiny", [openvino_engine], PROFILES, 2, tmp_path)
    assert files == {"triton/tiny-fused-fp32/config.pbtxt": str(tmp_path / "triton/tiny-fused-fp32/config.pbtxt"),
                     "triton/tiny-fused-fp32/1/model.xml": openvino_engine["path"],
                     "triton/tiny-fused-fp32/1/model.bin": openvino_engine["weights"]}
    text = Path(files["triton/tiny-fused-fp32/config.pbtxt"]).read_text()
    config = parsed_text(text)
    assert config.backend == "openvino" and config.platform == "" and "platform" not in text
    assert config.default_model_filename == "model.xml"  # also the backend's default name
    (group,) = config.instance_group
    assert group.kind == model_config_pb2.ModelInstanceGroup.KIND_CPU and group.count == 1
    # Triton's OpenVINO backend fixes the batch at max_batch_size and refuses any other: it does not batch here,
    # every dimension is the ONNX file's, batch and sequence free.
    assert config.max_batch_size == 0 and not config.HasField("dynamic_batching")
    assert config_io(config) == onnx_io(openvino_engine["onnx"])
    assert [list(t.dims) for t in (*config.input, *config.output)] == [[-1, -1]] * 5
    assert _parameters(config) == {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY",
                                   "NUM_STREAMS": "1"}
    assert "reads no INFERENCE_PRECISION_HINT" in text  # the reader is told that Triton cannot pin f32

    # Laid out as Triton would find it, the renamed pair loads and answers any batch and length.
    model_dir = tmp_path / "repo" / "tiny-fused-fp32"
    for name, source in files.items():
        target = tmp_path / "repo" / name.removeprefix("triton/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(Path(source).read_bytes())
    _openvino_answers(config, model_dir, batch=3, seq=40)


def test_a_bf16_openvino_engine_asks_triton_for_bf16(openvino_engine, tmp_path):
    import json
    import shutil

    engine_dir = tmp_path / "bf16"
    engine_dir.mkdir()
    paths = {key: Path(shutil.copy(openvino_engine[key], engine_dir)) for key in ("path", "metadata", "weights")}
    record = json.loads(paths["metadata"].read_text())
    paths["metadata"].write_text(json.dumps({**record, "precision": "bf16", "inference_precision_hint": "bf16",
                                             "compute_precision": "bf16"}))
    # No "onnx" in the dict and no "weights": the metadata's source ONNX file, and the .bin of the engine's stem.
    engine = {"path": str(paths["path"]), "backend": "openvino", "precision": "bf16"}
    files = repository_files("tiny", [engine], PROFILES, 2, tmp_path / "run")
    assert files["triton/tiny-bf16/1/model.bin"] == str(paths["weights"])
    config = parsed(files["triton/tiny-bf16/config.pbtxt"])
    assert _parameters(config) == {"INFERENCE_PRECISION_HINT": "bf16", "HINT_BF16": "YES",
                                   "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": "1"}
    assert config_io(config) == onnx_io(record["source_onnx"])


def test_an_openvino_engine_without_its_weights_is_refused(openvino_engine, tmp_path):
    engine = {**openvino_engine, "weights": str(tmp_path / "missing.bin")}
    with pytest.raises(UserInputError, match="missing.bin is missing; an OpenVINO IR is served as a pair"):
        repository_files("tiny", [engine], PROFILES, 2, tmp_path)


def test_download_triton_lays_out_the_openvino_pair(openvino_engine, engines, tmp_path):
    from bertbuild.artifacts.download import download
    from bertbuild.artifacts.store import ArtifactStore

    store = ArtifactStore(tmp_path / "store")
    _publish(store, tmp_path, [openvino_engine, engines["fp32"]])
    download(store, "tiny", tmp_path / "repo", triton=True)
    repo = tmp_path / "repo"
    assert {n for n in _tree(repo) if n.startswith("tiny-fused-fp32/")} == {
        "tiny-fused-fp32/config.pbtxt", "tiny-fused-fp32/1/model.xml", "tiny-fused-fp32/1/model.bin"}
    assert (repo / "tiny-fused-fp32/1/model.bin").read_bytes() == Path(openvino_engine["weights"]).read_bytes()
    config = parsed(repo / "tiny-fused-fp32" / "config.pbtxt")
    assert config.backend == "openvino"
    _openvino_answers(config, repo / "tiny-fused-fp32", batch=1, seq=32)
    assert parsed(repo / "tiny-fp32" / "config.pbtxt").platform == "onnxruntime_onnx"  # unchanged beside it
