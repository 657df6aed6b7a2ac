"""Issue 29, "refuse early": every mistake in what the user gives is one line, exit 2, before any work starts.

Each case runs the real CLI entry point in-process (`main`), so what is asserted is what a user sees on stderr.
"""

from __future__ import annotations

import os
import textwrap

import pytest

from bertbuild.cli import main

DEFAULT_CONFIG = "configs/default.yaml"


def _cli(argv, capsys) -> tuple[int, list[str]]:
    try:
        code = main([str(a) for a in argv])
    except SystemExit as stop:  # argparse's own errors
        code = stop.code
    return code, capsys.readouterr().err.strip().splitlines()


def _refused(argv, capsys, fragment: str) -> str:
    code, lines = _cli(argv, capsys)
    assert code == 2 and len(lines) == 1, (code, lines)
    assert lines[0].startswith("bertbuild: error:") and fragment in lines[0], lines
    return lines[0]


@pytest.fixture()
def config(tmp_path):
    """A config whose checks before the checkpoint pass: the model is generated, the output goes to tmp_path."""
    path = tmp_path / "run.yaml"
    path.write_text(f"model:\n  source: generated:tiny\noutput_dir: {tmp_path / 'out'}\n"
                    f"publish:\n  store: {tmp_path / 'store'}\n")
    return path


@pytest.fixture()
def not_onnx(tmp_path):
    path = tmp_path / "model.onnx"
    path.write_text("not a model\n")
    return path


# -- 1. --set values YAML cannot parse, or that are not plain data ---------------------------------------------

@pytest.mark.parametrize("assignment, fragment", [
    ("eval.limit=[1,", "--set eval.limit: the value '[1,' is not valid YAML"),
    ("model.name=*a", "--set model.name: the value '*a' is not valid YAML"),
    ("model.name=\t", "--set model.name: the value '\\t' is not valid YAML"),
    ("model.name={a: 1", "--set model.name: the value '{a: 1' is not valid YAML"),
    ("model.name=2020-01-01", "--set model.name: the value '2020-01-01' is a YAML date"),
    ("model.name=!!binary aGk=", "is a YAML !!binary value"),
    ("eval.limit=!!set {a}", "is a YAML !!set"),
    ("eval..limit=1", "--set eval..limit: empty part in the key"),
    ("eval.limit=&a [*a]", "is a YAML structure holding itself"),
    ("=1", "expected KEY=VALUE"),
])
def test_a_set_value_yaml_cannot_take_is_one_line_naming_the_key(assignment, fragment, config, capsys):
    _refused(["run", "--config", config, "--set", assignment], capsys, fragment)


# -- 2. and 3. config validation: no empty precision list, every number finite ---------------------------------

@pytest.mark.parametrize("assignment, fragment", [
    ("engines.precisions=[]", "engines.precisions: name at least one precision"),
    ("gates.int8.min_f1=.nan", "gates.int8.min_f1: Input should be a finite number"),
    ("gates.fp16.max_f1_drop=.inf", "gates.fp16.max_f1_drop: Input should be a finite number"),
    ("parity.max_abs_logit=.inf", "parity.max_abs_logit: Input should be a finite number"),
    ("regression.max_latency_ratio_vs_latest=.nan", "Input should be a finite number"),
    ("validation.tolerances.fp16.atol=.inf", "validation.tolerances.fp16.atol: Input should be a finite number"),
    ("precision.int8.percentile=.nan", "Input should be a finite number"),
])
def test_config_validation_refuses_empty_precisions_and_non_finite_numbers(assignment, fragment, config, capsys):
    _refused(["run", "--config", config, "--set", assignment], capsys, fragment)


def test_a_config_file_holding_itself_is_one_line(tmp_path, capsys):
    path = tmp_path / "loop.yaml"
    path.write_text("model:\n  source: generated:tiny\neval: &a\n  x: *a\n")
    _refused(["run", "--config", path], capsys, "a YAML anchor is used inside itself")


def test_a_nan_in_the_config_file_is_refused_too(tmp_path, capsys):
    path = tmp_path / "nan.yaml"
    path.write_text("model:\n  source: generated:tiny\ngates:\n  fp32:\n    min_em: .nan\n")
    _refused(["run", "--config", path], capsys, "gates.fp32.min_em: Input should be a finite number")


@pytest.mark.parametrize("argv, fragment", [
    (["bench", "--onnx", "{onnx}", "--min-seconds", "nan"], "argument --min-seconds: expected a finite number"),
    (["bench", "--onnx", "{onnx}", "--min-seconds", "inf"], "argument --min-seconds: expected a finite number"),
    (["bench", "--onnx", "{onnx}", "--min-seconds=-inf"], "argument --min-seconds: expected a finite number"),
    (["finetune", "--pretrained", "{onnx}", "--out", "{out}", "--lr", "nan"], "--lr: Input should be a finite number"),
    (["finetune", "--pretrained", "{onnx}", "--out", "{out}", "--weight-decay", "inf"],
     "--weight-decay: Input should be a finite number (got inf)"),
    (["finetune", "--pretrained", "{onnx}", "--out", "{out}", "--warmup", "nan"], "--warmup: Input should be a finite"),
])
def test_non_finite_numbers_on_the_command_line_are_refused(argv, fragment, not_onnx, tmp_path, capsys):
    argv = [a.replace("{onnx}", str(not_onnx)).replace("{out}", str(tmp_path / "ft")) for a in argv]
    _refused(argv, capsys, fragment)


# -- 4. eval.offset must leave a question --------------------------------------------------------------------

def test_an_offset_past_the_split_is_refused_before_the_run(config, tmp_path, capsys):
    line = _refused(["run", "--config", config, "--set", "eval.offset=999999"], capsys,
                    "eval.offset 999999 selects no question: split 'heldout' of bundled has 5173 questions")
    assert "use 0..5172" in line
    assert not (tmp_path / "out").exists()


def test_eval_offset_past_the_split_uses_the_same_check(not_onnx, tmp_path, capsys):
    (tmp_path / "vocab.txt").write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\nthe\n")
    _refused(["eval", "--onnx", not_onnx, "--offset", "999999"], capsys,
             "--offset 999999 selects no question: split 'heldout'")


# -- 5. output_dir and publish.store ----------------------------------------------------------------------------

@pytest.mark.parametrize("key, fragment", [
    ("output_dir", "output_dir {file}: is not a directory"),
    ("publish.store", "publish.store {file}: is not a directory"),
    ("output_dir", "output_dir {below}: is not a directory ({file} is a file)"),
    ("cache.dir", "cache.dir {file}: is not a directory"),
])
def test_an_output_that_is_an_existing_file_is_refused(key, fragment, config, tmp_path, capsys):
    existing = tmp_path / "a-file"
    existing.write_text("x")
    value = existing / "below" if "{below}" in fragment else existing
    fragment = fragment.replace("{file}", str(existing)).replace("{below}", str(existing / "below"))
    _refused(["run", "--config", config, "--set", f"{key}={value}"], capsys, fragment)


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_an_output_dir_that_cannot_be_written_is_refused(config, tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    _refused(["run", "--config", config, "--set", f"output_dir={locked / 'runs'}"], capsys, "is not writable")


# -- 6. a window longer than the position embeddings ------------------------------------------------------------

def test_ask_refuses_a_max_seq_length_above_the_position_embeddings(not_onnx, capsys):
    (not_onnx.parent / "bert_config.json").write_text('{"max_position_embeddings": 512}')
    _refused(["ask", "--engine", not_onnx, "--question", "q", "--context", "c", "--max-seq-length", "2000"], capsys,
             "--max-seq-length 2000 is above the model's max_position_embeddings 512")


def test_ask_reads_the_position_embeddings_off_an_onnx_file(tmp_path, capsys):
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    table = numpy_helper.from_array(np.zeros((128, 4), np.float32), "bert/embeddings/position_embeddings")
    graph = helper.make_graph([helper.make_node("Identity", ["bert/embeddings/position_embeddings"], ["y"])], "g",
                              [], [helper.make_tensor_value_info("y", TensorProto.FLOAT, [128, 4])], [table])
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(graph), path)
    _refused(["ask", "--engine", path, "--question", "q", "--context", "c", "--max-seq-length", "256"], capsys,
             "above the model's max_position_embeddings 128 ({}'s position embeddings)".format(path))


# -- 7. files the CLI reads and writes ---------------------------------------------------------------------------

@pytest.fixture()
def files(tmp_path):
    binary = tmp_path / "binary.bin"
    binary.write_bytes(bytes(range(256)) * 4)
    folder = tmp_path / "folder"
    folder.mkdir()
    a_list = tmp_path / "list.yaml"
    a_list.write_text("- a\n- b\n")
    store_file = tmp_path / "store-file"
    store_file.write_text("not a store\n")
    return {"binary": binary, "folder": folder, "list": a_list, "storefile": store_file, "tmp": tmp_path}


@pytest.mark.parametrize("argv, fragment", [
    (["run", "--config", "{folder}"], "{folder}: is a directory, expected a YAML config file"),
    (["run", "--config", "{binary}"], "{binary}: not a text file (not UTF-8), expected a YAML config file"),
    (["run", "--config", "{list}"], "expected a mapping at the top level, got list"),
    (["trt-check", "{onnx}", "--config", "{folder}"], "is a directory, expected a YAML config file"),
    (["eval", "--onnx", "{onnx}", "--vocab", "{binary}"], "--vocab {binary}: not a vocab.txt (UTF-8 text)"),
    (["eval", "--onnx", "{onnx}", "--vocab", "{folder}"], "--vocab {folder}: is a directory"),
    (["eval", "--onnx", "{onnx}", "--json", "{folder}"], "--json {folder}: is a directory; name a file to write"),
    (["eval", "--onnx", "{onnx}", "--json", "{binary}/x.json"], "--json {binary}/x.json: its folder {binary}: is not a directory"),
    (["bench", "--onnx", "{onnx}", "--json", "{folder}"], "--json {folder}: is a directory"),
    (["bench", "--onnx", "{onnx}", "--vocab", "{binary}"], "--vocab {binary}: not a vocab.txt"),
    (["trt-check", "{onnx}", "--json", "{folder}"], "--json {folder}: is a directory"),
    (["ask", "--engine", "{onnx}", "--question", "q", "--context", "c", "--vocab", "{binary}"], "--vocab {binary}: not"),
    (["ask", "--engine", "{onnx}", "--question", "q", "--context-file", "{binary}"], "--context-file {binary}: not"),
    (["doctor", "--prefect-file", "{list}"], "expected a mapping with a `deployments:` list at the top level"),
    (["doctor", "--prefect-file", "{binary}"], "--prefect-file {binary}: not a UTF-8 text file"),
    (["doctor", "--prefect-file", "{folder}"], "--prefect-file {folder}: is a directory"),
    (["artifacts", "history", "--model", "m", "--store", "{tmp}/s", "--plot", "{tmp}/x.txt"],
     "unsupported format '.txt'; use .png, .svg, .pdf"),
    (["artifacts", "history", "--model", "m", "--store", "{tmp}/s", "--plot", "{folder}"], "is a directory"),
    (["artifacts", "list", "--store", "{storefile}"], "{storefile} is not an artifact store: it is a file"),
    (["artifacts", "prune", "--model", "m", "--keep", "1", "--store", "{storefile}"], "is not an artifact store"),
])
def test_files_the_cli_reads_and_writes_are_checked_first(argv, fragment, files, not_onnx, capsys):
    def fill(text: str) -> str:
        for name, value in {**files, "onnx": not_onnx}.items():
            text = text.replace("{" + name + "}", str(value))
        return text

    _refused([fill(a) for a in argv], capsys, fill(fragment))


def test_doctor_refuses_a_deployment_list_of_the_wrong_shape(tmp_path, capsys):
    spec = tmp_path / "prefect.yaml"
    spec.write_text(textwrap.dedent("""\
        deployments:
          - just-a-name
    """))
    _refused(["doctor", "--prefect-file", spec], capsys, "deployments[0]: expected a mapping with a text `name`")


# -- 8. an execution provider this host does not have ------------------------------------------------------------

def test_bench_refuses_a_provider_this_onnx_runtime_lacks(not_onnx, capsys):
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("this host has CUDA")
    line = _refused(["bench", "--onnx", not_onnx, "--provider", "CUDAExecutionProvider"], capsys,
                    "--provider CUDAExecutionProvider: not available in this ONNX Runtime")
    assert "CPUExecutionProvider" in line
    _refused(["bench", "--onnx", not_onnx, "--provider", "NoSuchProvider"], capsys, "--provider NoSuchProvider")


# -- 10. checks made before Prefect starts ----------------------------------------------------------------------

@pytest.mark.parametrize("name", ["../escaped", "a/b", "a b", ".."])
def test_a_bad_model_name_is_refused_before_the_flow(name, config, tmp_path, capsys):
    line = _refused(["run", "--config", config, "--set", f"model.name={name}"], capsys, "model name")
    assert "Traceback" not in line
    assert not (tmp_path / "out").exists()


# -- run --check --------------------------------------------------------------------------------------------------

def test_run_check_runs_only_the_checks(config, tmp_path, capsys):
    code = main(["run", "--config", str(config), "--check", "--set", "resources.check_memory=false"])
    out = capsys.readouterr().out
    assert code == 0 and "ready to run tiny" in out
    assert not (tmp_path / "out").exists() and not (tmp_path / "store").exists()
    _refused(["run", "--config", config, "--check", "--set", "eval.offset=6000"], capsys, "eval.offset 6000")


# -- 10. finetune's mistakes, before its flow -----------------------------------------------------------------

@pytest.mark.parametrize("flags, fragment", [
    (["--out", "{file}"], "--out {file}: is not a directory"),
    (["--out", "{tmp}/ft", "--train-json", "{tmp}/missing.json"], "--train-json {tmp}/missing.json: not found"),
    (["--out", "{tmp}/ft", "--train-json", "{tmp}"], "--train-json {tmp}: is a directory"),
    (["--out", "{tmp}/ft", "--train-json", "{file}"], "is not valid SQuAD JSON"),
    (["--out", "{tmp}/ft", "--train-json", "{unanswered}"], "the training set has no answered questions"),
    (["--out", "{tmp}/ft", "--export-fp16", "{file}"], "--export-fp16 {file}: is not a directory"),
    (["--out", "{resumable}", "--lr", "0.5"], "holds a run with different lr"),
])
def test_finetune_mistakes_are_one_line_before_the_flow(flags, fragment, tiny_checkpoint, tmp_path, capsys):
    import json

    (tmp_path / "a-file").write_text("x")
    unanswered = {"version": "1.1", "data": [{"title": "t", "paragraphs": [{"context": "c", "qas": [
        {"id": "q", "question": "q?", "answers": []}]}]}]}
    (tmp_path / "unanswered.json").write_text(json.dumps(unanswered))
    (tmp_path / "resume").mkdir()
    (tmp_path / "resume" / "finetune.json").write_text(json.dumps({"hyper": {"lr": 1e-4}}))
    names = {"file": tmp_path / "a-file", "tmp": tmp_path, "unanswered": tmp_path / "unanswered.json",
             "resumable": tmp_path / "resume"}

    def fill(text):
        for name, value in names.items():
            text = text.replace("{" + name + "}", str(value))
        return text

    line = _refused(["finetune", "--pretrained", tiny_checkpoint, *map(fill, flags)], capsys, fill(fragment))
    assert "Traceback" not in line and not (tmp_path / "ft").exists()


# -- 9. interruption: 130 for Ctrl-C, 143 for SIGTERM ------------------------------------------------------------

@pytest.mark.parametrize("how", ["sigterm", "prefect", "ctrl-c"])
def test_an_interrupted_command_exits_130_or_143_in_one_line(how, tmp_path):
    import signal
    import subprocess
    import sys
    import time

    script = textwrap.dedent(f"""
        import signal, sys, time
        from bertbuild import cli
        from bertbuild.commands import passes

        def slow(args):
            if {how!r} == "prefect":
                from prefect.exceptions import TerminationSignal
                raise TerminationSignal(signal.SIGTERM)
            print("ready", flush=True)
            time.sleep(60)

        passes.run = slow
        real = passes.add_parser
        passes.add_parser = lambda sub: (real(sub), sub.choices["passes"].set_defaults(handler=slow))
        sys.exit(cli.main(["passes"]))
    """)
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, cwd=tmp_path, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    if how != "prefect":
        assert child.stdout.readline().strip() == "ready"
        time.sleep(0.2)
        child.send_signal(signal.SIGTERM if how == "sigterm" else signal.SIGINT)
    _, err = child.communicate(timeout=60)
    expected = (130, "bertbuild: interrupted") if how == "ctrl-c" else (143, "bertbuild: terminated")
    assert (child.returncode, err.strip()) == expected
