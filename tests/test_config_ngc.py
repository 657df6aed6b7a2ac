"""The NGC BERT configs load offline; engines.profiles must cover every shape a run feeds; GPU backend names."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from bertbuild.config import load_config, parse_config
from bertbuild.errors import ConfigError

PROJECT_ROOT = Path(__file__).resolve().parent.parent

# name -> (source, sequence length, the sources its gate comments must cite)
NGC_CONFIGS = {
    "bert-large-ngc.yaml": ("ngc://nvidia/bert_tf_ckpt_large_qa_squad11_amp_384:19.03.1", 384,
                            ["inference_rules.adoc", "90.874"]),
    "bert-base-ngc.yaml": ("ngc://nvidia/bert_tf_ckpt_base_qa_squad11_amp_128:19.03.1", 128,
                           ["inference_rules.adoc", "Devlin et al. 2019"]),
}


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("loading a config must not open a connection")

    monkeypatch.setattr(socket, "socket", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.mark.parametrize("name", sorted(NGC_CONFIGS))
def test_ngc_config_loads_offline_with_published_gates(name, no_network):
    source, seq, citations = NGC_CONFIGS[name]
    cfg = load_config(PROJECT_ROOT / "configs" / name)
    assert cfg.model.source == source  # an ngc:// URL stays a URL: nothing is fetched at load time
    assert cfg.eval.split == "all" and cfg.eval.limit is None and cfg.eval.max_seq_length == seq
    assert cfg.engines.backend == "auto" and cfg.benchmark.seq == seq
    assert cfg.precision.int8.activation_type == "s8"  # the evaluated INT8 file is the TensorRT one
    assert cfg.gate_for("fp16").max_f1_drop == 0.1 and cfg.gate_for("int8").max_f1_drop == 1.0
    text = (PROJECT_ROOT / "configs" / name).read_text()
    assert all(citation in text for citation in citations)  # the published gates name their sources


def test_large_int8_floor_is_mlperf_bert_99():
    cfg = load_config(PROJECT_ROOT / "configs" / "bert-large-ngc.yaml")
    assert cfg.gate_for("int8").min_f1 == pytest.approx(0.99 * 90.874, abs=1e-3)


def _raw(**sections):
    return {"model": {"source": "generated:tiny"}, **sections}


@pytest.mark.parametrize("sections, needle", [
    ({"eval": {"max_seq_length": 512}}, "(1, 512): eval runs batches 1..eval.batch_size 8 at eval.max_seq_length 512"),
    # length-bucketed batches are fed at every multiple of the bucket up to max_seq_length
    ({"eval": {"length_bucket": 16}}, "(1, 16): eval.length_bucket 16 trims batches 1..eval.batch_size 8 to seq 16, "
                                      "32, 48,"),
    ({"engines": {"profiles": [{"min": [1, 128], "opt": [8, 384], "max": [16, 384]}]}},
     "(1, 32): eval.length_bucket 32 trims batches"),
    ({"engines": {"profiles": [{"min": [1, 32], "opt": [4, 384], "max": [4, 384]}]}}, "(5, 384)"),
    ({"eval": {"batch_size": 32}}, "(17, 384)"),
    ({"benchmark": {"batch": 4, "seq": 512}}, "(4, 512) of benchmark.batch/benchmark.seq"),
    ({"engines": {"profiles": [{"min": [2, 128], "opt": [8, 384], "max": [16, 384]}]}}, "(1, 384)"),
])
def test_shapes_outside_every_profile_are_a_one_line_config_error(sections, needle):
    with pytest.raises(ConfigError) as caught:
        parse_config(_raw(**sections), origin="c.yaml")
    message = str(caught.value)
    assert message.startswith("c.yaml: engines.profiles (") and needle in message and "\n" not in message


def test_padded_batches_need_only_max_seq_length():
    """eval.length_bucket 0 feeds max_seq_length alone: a static-sequence profile is enough."""
    static = [{"min": [1, 384], "opt": [8, 384], "max": [16, 384]}]
    cfg = parse_config(_raw(engines={"profiles": static}, eval={"length_bucket": 0}))
    assert cfg.eval.length_bucket == 0


def test_bucket_lengths_past_max_seq_length_are_capped():
    profiles = [{"min": [1, 128], "opt": [8, 128], "max": [8, 128]}]
    cfg = parse_config(_raw(engines={"profiles": profiles}, eval={"max_seq_length": 128, "length_bucket": 256},
                            benchmark={"batch": 8, "seq": 128}))
    assert cfg.eval.length_bucket == 256  # every batch is cut at 128: the only length fed


@pytest.mark.parametrize("name", sorted(NGC_CONFIGS))
def test_ngc_profiles_have_a_dynamic_sequence_axis_over_every_bucket(name):
    from bertbuild.shapes import fitting_profile
    from bertbuild.shapes import bucket_lengths

    cfg = load_config(PROJECT_ROOT / "configs" / name)
    assert cfg.eval.length_bucket > 0
    lengths = bucket_lengths(cfg.eval.length_bucket, cfg.eval.max_seq_length)
    assert len(lengths) > 1 and any(p.min[1] < p.max[1] for p in cfg.engines.profiles)
    assert all(fitting_profile(cfg.engines.profiles, batch, seq) is not None
               for seq in lengths for batch in range(1, cfg.eval.batch_size + 1))


def test_two_profiles_together_cover_a_run():
    profiles = [{"min": [1, 32], "opt": [4, 128], "max": [4, 128]}, {"min": [5, 32], "opt": [8, 384], "max": [8, 384]}]
    cfg = parse_config(_raw(engines={"profiles": profiles}, eval={"max_seq_length": 128},
                            benchmark={"batch": 8, "seq": 384}))
    assert len(cfg.engines.profiles) == 2


@pytest.mark.parametrize("backend", ["auto", "onnxruntime-cuda", "onnxruntime-tensorrt"])
def test_gpu_backend_names_are_accepted(backend):
    assert parse_config(_raw(engines={"backend": backend})).engines.backend == backend
