"""``llmc compile DIR --shapes-only`` on a folder holding only Llama-2-7B's config.json: a whole
project for a 4096-token context that fits the U280 (W4, W4 + 2:4 and int8 with the KV cache striped over
the weight lanes); a context whose cache the HBM cannot hold is refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmc.backends.fpga.container import read_container
from llmc.backends.fpga.isa import decode_program
from llmc.backends.fpga.target import load_target
from llmc.cli import main

LLAMA2_7B = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 4096, "intermediate_size": 11008,
    "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 32, "vocab_size": 32000,
    "max_position_embeddings": 4096, "rms_norm_eps": 1e-5, "bos_token_id": 1, "eos_token_id": 2,
    "tie_word_embeddings": False, "torch_dtype": "float16",
}
SOURCES = ["Makefile", "connectivity.cfg", "hls_config.cfg", "run_hls.tcl", "host/host.cpp", "kernel/llmc_accel.cpp",
           "include/llmc_accel.h", "include/llmc_math.h", "csim/csim_main.cpp", "model.llmc", "program.txt",
           "design.json", "report.md"]


@pytest.fixture(scope="module")
def config_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("llama-2-7b")
    (folder / "config.json").write_text(json.dumps(LLAMA2_7B))
    return folder


@pytest.mark.parametrize("pipeline, engine", [
    ("quantize{bits=4,group=128}", "dsp"),
    pytest.param("sparsify{pattern=2:4},quantize{bits=4,group=128}", "sparse", marks=pytest.mark.slow),
])
def test_shapes_only_7b_compiles_to_a_project_that_fits(config_dir: Path, tmp_path: Path, pipeline: str,
                                                        engine: str, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "llama7b"
    assert main(["compile", str(config_dir), "--board", "u280", "--shapes-only", "-p", pipeline, "-o", str(out)]) == 0
    assert "0.073% of one program per length" in capsys.readouterr().out
    assert all((out / name).is_file() for name in SOURCES)
    assert not (out / "weights.bin").exists()  # nothing to pack without weights
    report = json.loads((out / "report.json").read_text())
    assert report["needs"]["max_context"] == 4096 and report["needs"]["layers"] == 32
    assert report["program_size"]["ratio"] < 0.01
    assert all(0 < f < 1 for f in report["resources"]["fractions"].values())
    u280 = load_target("u280")
    assert max(report["weight_channel_bytes"]) <= u280.memory.channel_bytes
    assert max(report["kv_channel_bytes"]) <= u280.memory.channel_bytes
    assert {x["engine"] for x in report["layers"] if "lm_head" not in x["name"]} == {engine}
    assert len(report["layers"]) == 32 * 7 + 1
    offsets = [x["offset"] for x in report["layers"]]  # placed without data: one striped span per layer
    assert offsets == sorted(set(offsets)) and offsets[-1] < max(report["weight_channel_bytes"])
    assert report["accuracy"] == {"measured": False, "reason": "the model has no weights (shapes only)"}
    programs = read_container(out / "program.bin", "program")
    assert sorted(programs.sections) == ["bucket_1", "bucket_16", "bucket_64"]
    program = decode_program(bytes(programs.sections["bucket_64"]))
    assert sum(i.op == "ATTN" for i in program) == 32 and sum(i.op == "MM" for i in program) == 225
    assert main(["simulate", str(out), "--timing-only", "--json"]) == 0  # one performance model
    simulated = json.loads(capsys.readouterr().out)["modelled"]
    assert report["modelled_decode"]["tokens_per_s"] == pytest.approx(simulated["decode_tokens_per_s"], rel=1e-12)
    assert report["modelled_decode"]["decode_tokens"] == simulated["decode_tokens"] == 128


def test_shapes_only_7b_at_int8_fits_with_the_cache_on_the_lanes(config_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "int8"
    assert main(["compile", str(config_dir), "--shapes-only", "-o", str(out)]) == 0
    config = json.loads((out / "design.json").read_text())["config"]
    assert config["mm_lanes"] == 32 and config["kv_channels"] == config["weight_channels"]
    report = json.loads((out / "report.json").read_text())
    per_channel = [w + kv for w, kv in zip(report["weight_channel_bytes"], report["kv_channel_bytes"], strict=True)]
    assert max(per_channel) <= load_target("u280").memory.channel_bytes < max(per_channel) * 1.25


def test_a_context_the_hbm_cannot_hold_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    folder = tmp_path / "long"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(LLAMA2_7B | {"max_position_embeddings": 16384}))
    out = tmp_path / "int8"
    assert main(["compile", str(folder), "--shapes-only", "-o", str(out)]) == 2
    assert "needs 10.5 GiB of HBM (weights 6.4 GiB + KV cache 4.1 GiB at 16384 tokens); u280 has 8.0 GiB" in capsys.readouterr().err
    assert not out.exists()
