"""The FPGA flow end to end on the bundled model: compile -> C-simulation bit-identical with the
lowered program in the interpreter (logits and 6 greedy tokens), for every engine's recipe."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from zoo import ENGINE_RECIPES as RECIPES
from zoo import PROMPT, compile_bundled

import llmc
from llmc.backends.fpga.compile import compile_step
from llmc.backends.fpga.flow import design
from llmc.backends.fpga.isa import decode_program
from llmc.cli import main
from llmc.errors import LlmcError
from llmc.generate.step import StepDevice
from llmc.io import load_module
from llmc.sim.csim import CsimDevice

pytestmark = pytest.mark.skipif(shutil.which("g++") is None, reason="C-simulation needs g++")


@pytest.fixture(scope="module")
def tiny(tiny_llmc) -> llmc.Model:
    return llmc.load(tiny_llmc)


@pytest.mark.parametrize("recipe", list(RECIPES))
def test_csim_is_bit_identical_to_the_lowered_program(engine_projects, recipe):
    out = engine_projects[recipe]
    reference = StepDevice(load_module(out / "model.llmc"))
    with CsimDevice(out) as csim:
        np.testing.assert_array_equal(csim.run(PROMPT[:13]), reference.run(PROMPT[:13]))  # a 16-row bucket
        np.testing.assert_array_equal(csim.run(PROMPT[13:]), reference.run(PROMPT[13:]))  # chunks continue
        token = 5
        for _ in range(6):
            got, want = csim.decode(token), reference.decode(token)
            np.testing.assert_array_equal(got, want)
            token = int(np.argmax(got))


def test_compile_is_deterministic_and_complete(engine_projects, tmp_path):
    a, b = engine_projects["w4g128"], tmp_path / "w4g128"
    compile_bundled(RECIPES["w4g128"], b)  # imported anew: the import is deterministic too
    files = sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())  # a may hold a C-simulation build
    for name in ["Makefile", "connectivity.cfg", "hls_config.cfg", "run_hls.tcl", "host/host.cpp", "program.bin",
                 "weights.bin", "kernel/llmc_accel.cpp", "include/llmc_math.h", "report.json", "report.md",
                 "model.llmc", "csim/csim_main.cpp"]:
        assert any(str(f) == name for f in files), name
    for f in files:
        assert (a / f).read_bytes() == (b / f).read_bytes(), f
    report = json.loads((a / "report.json").read_text())
    assert all(0 < v < 1 for v in report["resources"]["fractions"].values())
    assert report["config"]["act_buffers"] == json.loads((a / "design.json").read_text())["buffers"] > 1
    assert report["program_size"]["ratio"] == pytest.approx(3 / 512)
    assert {x["engine"] for x in report["layers"]} == {"dsp"}
    from llmc.backends.fpga.container import read_container

    programs = read_container(a / "program.bin", "program")
    assert sorted(programs.sections) == ["bucket_1", "bucket_16", "bucket_64"]
    program = decode_program(bytes(programs.sections["bucket_1"]))
    assert program[-1].op == "HALT" and sum(i.op == "ATTN" for i in program) == 4


def test_llmc_run_and_csim_commands_agree(engine_projects, capsys):
    out = engine_projects["w4g128"]
    outputs = []
    for cmd in ("run", "csim"):
        assert main([cmd, str(out), "--prompt", "A hacker is", "--max-new-tokens", "16", "--json"]) == 0
        outputs.append(json.loads(capsys.readouterr().out))
    assert outputs[0]["tokens"] == outputs[1]["tokens"] and len(outputs[0]["tokens"]) == 16
    assert outputs[0]["text"] == outputs[1]["text"] and outputs[1]["cycles"]["prefill"] > 0  # C-sim adds its account


def test_bad_inputs_are_refused_and_nothing_is_written(tiny_llmc, tmp_path, capsys):
    out = tmp_path / "exists"
    out.mkdir()
    assert main(["compile", "llmc-tiny", "-o", str(out)]) == 2
    assert "output folder exists" in capsys.readouterr().err
    for source, options, message in [
        (str(tiny_llmc), ["-p", "kv-quant{bits=4}"], "4-bit KV cache is not supported"),
    ]:
        target = tmp_path / Path(source).stem
        assert main(["compile", source, *options, "-o", str(target)]) == 2
        assert message in capsys.readouterr().err
        assert not target.exists() and not any(p.name.startswith(".") for p in tmp_path.iterdir())
    config = tmp_path / "huge.json"
    config.write_text(json.dumps({"hidden_size": 8192, "intermediate_size": 28672, "num_hidden_layers": 80,
                                  "num_attention_heads": 64, "num_key_value_heads": 8, "vocab_size": 32000}))
    assert main(["compile", "llama", "--config", str(config), "--shapes-only", "-o", str(tmp_path / "h")]) == 2
    assert "u280 has 8.0 GiB" in capsys.readouterr().err
    config.write_text(json.dumps({"hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
                                  "num_attention_heads": 32, "num_key_value_heads": 8, "num_local_experts": 8,
                                  "num_experts_per_tok": 2, "vocab_size": 32000}))  # Mixtral-8x7B: sized first
    assert main(["compile", "mixtral", "--config", str(config), "--shapes-only", "-o", str(tmp_path / "m")]) == 2
    assert "the weights need at least 43.5 GiB; the u280 has 8.0 GiB of HBM" in capsys.readouterr().err


def test_a_design_with_too_few_activation_buffers_is_refused(tiny):
    d = design(tiny.module, "u280")
    with pytest.raises(LlmcError, match=f"needs {d.config.act_buffers} activation buffers; the design has 2"):
        compile_step(d.lowered, dataclasses.replace(d.config, act_buffers=2))


def test_compiled_project_refuses_too_long_sequences(engine_projects):
    device = StepDevice(load_module(engine_projects["int8"] / "model.llmc"))
    with pytest.raises(LlmcError, match="exceeds the model's context of 512"):
        device.run(list(range(513)))


def test_a_test_bench_that_dies_is_named_with_its_status(engine_projects):
    with CsimDevice(engine_projects["int8"]) as csim:
        csim.run(PROMPT[:3])
        csim.proc.kill()
        with pytest.raises(LlmcError, match=r"C-simulation stopped \(killed by signal 9\)"):
            csim.run(PROMPT[3:5])
