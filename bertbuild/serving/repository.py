"""The Triton model repository in a run's bundle: `triton/<model>-<precision>/config.pbtxt` and `1/<engine>`.

Every engine gets a Triton model folder. Its `config.pbtxt` is written into the
run directory under its bundle name; its `1/` lists the engine file itself under
its own name (and, for an ONNX file with external data, its data files beside
it, under the names the .onnx records), so Triton loads exactly the file that
was scored and timed. The store keeps content once, so listing an engine a
second time costs no bytes.

An OpenVINO engine is an IR pair (`<stem>.openvino.xml` and its weights,
`<stem>.openvino.bin`, the engine dict's "weights"): its `1/` lists both under
the names Triton's OpenVINO backend reads, `model.xml` and `model.bin` (an IR
finds its weights by its own stem, so the pair is renamed together).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Mapping, Sequence

TRITON_DIR = "triton"  # the repository's folder in a bundle
VERSION = "1"  # the one model version a bundle's repository holds


def triton_model_name(model: str, precision: str) -> str:
    return f"{model}-{precision}"


def repository_files(model: str, engines: Iterable[Mapping], profiles: Sequence, batch: int,
                     run_dir: Path | str) -> dict[str, str]:
    """Bundle name -> local file of the Triton repository for `engines`; each config.pbtxt written under `run_dir`.

    `engines`: dicts with the built engine's `path`, `backend`, `precision` and `onnx`
    (the ONNX file it was built from, whose inputs and outputs a TensorRT plan and
    an OpenVINO IR have), and for an OpenVINO engine its `weights` (the .bin; by
    default the engine's own stem + .bin). `profiles` and `batch`: the run's
    `engines.profiles` and `benchmark.batch`.
    """
    from bertbuild.onnx_files import onnx_companions
    from bertbuild.serving.triton import model_config

    files: dict[str, str] = {}
    for engine in engines:
        path = Path(engine["path"])
        name = triton_model_name(model, engine["precision"])
        config = model_config(name, engine["backend"], path, profiles, batch, source_onnx=engine.get("onnx"))
        folder = f"{TRITON_DIR}/{name}"
        written = Path(run_dir) / folder / "config.pbtxt"
        written.parent.mkdir(parents=True, exist_ok=True)
        written.write_text(config.to_pbtxt())
        if engine["backend"] == "openvino":
            model_file = _openvino_files(f"{folder}/{VERSION}", path, engine.get("weights"))
        else:
            model_file = {f"{folder}/{VERSION}/{path.name}": str(path)}
        files |= {f"{folder}/config.pbtxt": str(written), **model_file, **onnx_companions(model_file)}
    return files


def _openvino_files(version_dir: str, xml: Path, weights: str | Path | None) -> dict[str, str]:
    """`model.xml` and `model.bin` in the version folder: the engine's IR pair, under Triton's default names."""
    from bertbuild.errors import UserInputError
    from bertbuild.serving.triton import OPENVINO_MODEL, OPENVINO_WEIGHTS

    bin_path = Path(weights) if weights else xml.with_suffix(".bin")
    if not bin_path.is_file():
        raise UserInputError(f"{xml}: its weights file {bin_path} is missing; an OpenVINO IR is served as a pair")
    return {f"{version_dir}/{OPENVINO_MODEL}": str(xml), f"{version_dir}/{OPENVINO_WEIGHTS}": str(bin_path)}
