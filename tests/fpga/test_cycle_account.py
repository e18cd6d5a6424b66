"""The C-simulation's cycle account (``llmc_cycles.h``): pipelined loops count their iterations, unrolled
loops nothing of their own, dataflow regions their slowest process, ports the memory's rate. It is reported
per call and per opcode by ``llmc csim --json``, and ``llmc verify --levels cycles`` holds it to the timing
model within 10%; a kernel whose engine loop is made sequential fails that level."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from math import ceil
from pathlib import Path

import pytest
from zoo import ENGINE_RECIPES, PROMPT, compile_bundled, reseal

from llmc.cli import main
from llmc.sim.csim import CsimDevice
from llmc.sim.image import ProjectImage

INSTR_DEPTH = 16  # the kernel's fetch and decode per instruction (timing.INSTR_OVERHEAD)


def test_the_account_counts_each_pipelined_iteration(engine_projects) -> None:
    project = engine_projects["w4g128"]
    image = ProjectImage.load(project, weights=False)
    program, sfu = image.programs[1], image.config.sfu_lanes
    with CsimDevice(project) as device:
        device.reset()
        device.run([1, 72, 271])
        device.run([400])
        device.run([291])
        prefill, first, second = device.accounts
    adds = [int(i.fields["cols"]) for i in program if i.op == "EADD"]
    assert first.by_opcode["EADD"] == sum(ceil(cols / sfu) + INSTR_DEPTH for cols in adds)  # SFU_LANES a cycle
    assert prefill.by_opcode["EADD"] == sum(ceil(3 * cols / sfu) + INSTR_DEPTH for cols in adds)
    assert prefill.by_opcode["ATTN"] > first.by_opcode["ATTN"]  # three query rows to score
    assert first.cycles > sum(first.by_opcode.values())  # and the ids and logits moved through io
    assert set(first.by_opcode) == {i.op for i in program if i.op != "HALT"}


def test_llmc_csim_reports_the_account(engine_projects, capsys: pytest.CaptureFixture) -> None:
    assert main(["csim", str(engine_projects["w4g128"]), "--prompt-ids", "1,72,271", "--max-new-tokens", "2",
                 "--json"]) == 0
    cycles = json.loads(capsys.readouterr().out)["cycles"]
    assert cycles["prefill"] > 0 and len(cycles["decode"]) >= 1 and all(c > 0 for c in cycles["decode"])
    assert cycles["by_opcode"]["MM"] > cycles["by_opcode"]["EADD"] > 0


def _cycles_level(project: Path, capsys: pytest.CaptureFixture) -> tuple[int, dict]:
    code = main(["verify", str(project), "--prompt-ids", ",".join(map(str, PROMPT)), "--decode", "2",
                 "--levels", "interpreter,csim,cycles", "--json"])
    return code, {r["level"]: r for r in json.loads(capsys.readouterr().out)}


@pytest.mark.parametrize("recipe", [pytest.param(r, marks=[] if r in ("w4g128", "w4-2of4") else pytest.mark.slow)
                                    for r in ENGINE_RECIPES])  # the DSP lanes and the unit lanes by default
def test_the_cycles_level_holds_the_kernel_to_the_timing_model(engine_projects, recipe: str,
                                                               capsys: pytest.CaptureFixture) -> None:
    """The prefill (a 20-token prompt, two chunks) and two decode steps each within 10%, on every engine."""
    code, results = _cycles_level(engine_projects[recipe], capsys)
    assert results["csim"]["mismatches"] == 0
    cycles = results["cycles"]
    assert cycles["compared"] == 3 and cycles["against"] == "timing model" and cycles["tolerance"] == "10%"
    assert code == 0 and cycles["mismatches"] == 0, cycles["detail"]


def test_two_lanes_on_a_v80_channel_hold_the_cycles_level(tiny_llmc: Path, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture) -> None:
    """On the V80 two lanes (two ports) share each HBM channel: bit-exact, and the account within 10% of the
    model at each lane's half of the channel's rate."""
    project = tmp_path / "v80"
    compile_bundled(ENGINE_RECIPES["w4g128"], project, tiny_llmc, board="v80")
    config = ProjectImage.load(project, weights=False).config
    assert config.weight_channels[:4] == (0, 0, 1, 1)
    assert (project / "connectivity.cfg").read_text().count("w0:HBM[0]\nsp=llmc_accel_1.w1:HBM[0]") == 1
    code, results = _cycles_level(project, capsys)
    assert results["csim"]["mismatches"] == 0
    assert code == 0 and results["cycles"]["mismatches"] == 0, results["cycles"]["detail"]


def test_a_sequential_engine_loop_fails_the_cycles_level(engine_projects, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture) -> None:
    """The MAC array's unrolled loop pipelined instead (one DSP pair per cycle): still bit-exact, and caught."""
    project = tmp_path / "sequential"
    shutil.copytree(engine_projects["w4g128"], project)
    kernel = project / "kernel" / "llmc_accel.cpp"
    pattern = re.compile(r"LLMC_UNROLL;(\s*if \(c < len\) \{\s*if \(\(pos \+ c\) / p\.group != g\))")
    text, found = pattern.subn(r"LLMC_PIPELINE(LLMC_TRIP_HIDDEN);\1", kernel.read_text())
    assert found == 1
    kernel.write_text(text)
    reseal(project)
    code, results = _cycles_level(project, capsys)
    assert results["csim"]["mismatches"] == 0
    assert code == 1 and results["cycles"]["mismatches"] == results["cycles"]["compared"]
    assert float(results["cycles"]["detail"].split("account ")[1].split("x")[0]) > 5


def test_every_pipelined_loop_states_its_trip_count(engine_projects, gxx_ap_types) -> None:
    """Under synthesis each pipelined loop of the kernel and its headers carries a LOOP_TRIPCOUNT with a number, the
    design's bound for that kind of loop (LLMC_TRIP_* in llmc_accel.h). The kernel of a 2:4 design (its MAC arrays
    and its sparse chain's feed and gather) is preprocessed as Vitis HLS would see it (the open ap_types headers
    refuse __SYNTHESIS__ with an #error, the only one allowed)."""
    gxx, ap_types = gxx_ap_types
    project = engine_projects["w4-2of4"]
    result = subprocess.run([gxx, "-std=c++14", "-E", "-P", "-D__SYNTHESIS__", "-isystem", str(ap_types), "-I",
                             str(project / "include"), str(project / "kernel" / "llmc_accel.cpp")],
                            capture_output=True, text=True)
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    assert all("does not support synthesis" in line for line in errors), result.stderr
    pipelined = re.findall(r"HLS PIPELINE II = 1\W+(?:_Pragma\(\"|#pragma )?HLS LOOP_TRIPCOUNT max = (\w+)", result.stdout)
    assert len(pipelined) == result.stdout.count("HLS PIPELINE II = 1") >= 30
    assert all(trips.isdigit() and int(trips) > 0 for trips in pipelined)
    defined = re.findall(r"#define LLMC_TRIP_\w+ (\d+)", (project / "include" / "llmc_accel.h").read_text())
    assert set(pipelined) <= set(defined)


@pytest.mark.slow
def test_a_7b_shaped_layer_holds_the_cycles_level(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """One decoder layer of Llama-2-7B's widths (random weights, W4g128): C-sim against the timing model at
    the sizes the figures in docs/fpga.md are for (benchmarks/cycle_account.py --layer-7b)."""
    import llmc
    import llmc.compiler.passes  # noqa: F401  (registers the passes)
    from llmc.backends.fpga.flow import compile_project
    from llmc.compiler.pipeline import PassContext, parse_pipeline, run_pipeline

    layer = {"hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 1, "num_attention_heads": 32,
             "num_key_value_heads": 32, "vocab_size": 1024, "max_position_embeddings": 512, "rms_norm_eps": 1e-5}
    module = run_pipeline(llmc.load("llama", config=layer, max_length=512).module,
                          parse_pipeline("quantize{bits=4,group=128}"), PassContext())
    compile_project(module, "u280", tmp_path / "layer")
    code = main(["verify", str(tmp_path / "layer"), "--prompt-ids", "1,2,3,4", "--decode", "2",
                 "--levels", "csim,cycles", "--json"])
    results = {r["level"]: r for r in json.loads(capsys.readouterr().out)}
    assert code == 0 and results["cycles"]["mismatches"] == 0, results["cycles"]["detail"]
