"""The C-simulation's cycle account: each pipelined loop of the generated kernel counts its iterations at
II = 1 (``llmc_cycles.h``), reported per call and per opcode by ``llmc csim --json``. An elementwise
instruction's account is exactly its rows x columns; attention's grows with the position."""

from __future__ import annotations

import json

import pytest

from llmc.cli import main
from llmc.sim.csim import CsimDevice
from llmc.sim.image import ProjectImage


def test_the_account_counts_each_pipelined_iteration(engine_projects) -> None:
    project = engine_projects["w4g128"]
    program = ProjectImage.load(project, weights=False).programs[1]
    with CsimDevice(project) as device:
        device.reset()
        device.run([1, 72, 271])
        device.run([400])
        device.run([291])
        prefill, first, second = device.accounts
    adds = [i for i in program if i.op == "EADD"]
    assert first.by_opcode["EADD"] == sum(int(i.fields["cols"]) for i in adds)  # one row: cols per instruction
    assert prefill.by_opcode["EADD"] == 3 * first.by_opcode["EADD"]
    assert second.by_opcode["ATTN"] > first.by_opcode["ATTN"]  # one more cache row to read and score
    assert first.cycles > sum(first.by_opcode.values())  # and the io buffer moved around the program
    assert set(first.by_opcode) == {i.op for i in program if i.op != "HALT"}


def test_llmc_csim_reports_the_account(engine_projects, capsys: pytest.CaptureFixture) -> None:
    assert main(["csim", str(engine_projects["w4g128"]), "--prompt-ids", "1,72,271", "--max-new-tokens", "2",
                 "--json"]) == 0
    cycles = json.loads(capsys.readouterr().out)["cycles"]
    assert cycles["prefill"] > 0 and len(cycles["decode"]) >= 1 and all(c > 0 for c in cycles["decode"])
    assert cycles["by_opcode"]["MM"] > cycles["by_opcode"]["EADD"] > 0


def test_the_cycles_level_holds_the_kernel_to_the_timing_model(engine_projects, capsys: pytest.CaptureFixture) -> None:
    """Every call's account against the timing model within 10%: the functional kernel (one MAC per cycle)
    fails it by orders of magnitude, which the level reports rather than hides."""
    code = main(["verify", str(engine_projects["w4g128"]), "--prompt-ids", "1,72,271", "--decode", "2",
                 "--levels", "interpreter,csim,cycles", "--json"])
    results = {r["level"]: r for r in json.loads(capsys.readouterr().out)}
    assert results["csim"]["mismatches"] == 0
    cycles = results["cycles"]
    assert cycles["compared"] == 3 and cycles["against"] == "timing model" and cycles["tolerance"] == "10%"
    ratio = float(cycles["detail"].split("account ")[1].split("x")[0])
    assert code == 1 and cycles["mismatches"] == 3 and ratio > 100
