"""The instruction-set simulator against the interpreter on the lowered program, for every engine's recipe,
and the verification ladder (`llmc verify`) end to end."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from zoo import ENGINE_RECIPES as RECIPES
from zoo import PROMPT, reseal

from llmc.cli import main
from llmc.errors import LlmcError
from llmc.generate.step import StepDevice
from llmc.io import ir_digest, load_module
from llmc.sim.image import ProjectImage
from llmc.sim.iss import IssDevice


@pytest.mark.parametrize("recipe", list(RECIPES))
def test_iss_is_bit_identical_to_the_lowered_program(engine_projects, recipe):
    project = engine_projects[recipe]
    reference = StepDevice(load_module(project / "model.llmc"))
    iss = IssDevice(project)
    np.testing.assert_array_equal(iss.run(PROMPT[:13]), reference.run(PROMPT[:13]))  # a 16-row bucket
    np.testing.assert_array_equal(iss.run(PROMPT[13:]), reference.run(PROMPT[13:]))  # the chunk continues
    token = 5
    for _ in range(16):
        got, want = iss.decode(token), reference.decode(token)
        np.testing.assert_array_equal(got, want)
        token = int(np.argmax(got))
    assert iss.last_seconds > 0 and all(c.cycles > 0 for c in iss.costs)


def test_iss_chunks_long_prompts_by_bucket(engine_projects):
    """A prompt longer than the largest bucket runs as several kernel calls, like the host does."""
    project = engine_projects["w4g128"]
    image = ProjectImage.load(project)
    long_prompt = (PROMPT * 5)[: max(image.config.buckets) + 7]
    got = IssDevice(image).run(long_prompt)
    want = StepDevice(load_module(project / "model.llmc")).run(long_prompt)
    np.testing.assert_array_equal(got, want)


def test_iss_refuses_bad_input(engine_projects, tmp_path):
    project = engine_projects["int8"]
    device = IssDevice(project)
    with pytest.raises(LlmcError, match="exceeds the compiled context"):
        device.run([1] * (device.image.config.max_context + 1))
    with pytest.raises(LlmcError, match="outside the vocabulary"):
        device.run([device.image.vocab])
    other = tmp_path / "other"
    shutil.copytree(engine_projects["w4g128"], other)
    shutil.copy(project / "weights.bin", other / "weights.bin")
    with pytest.raises(LlmcError, match="weights.bin: does not match llmc-manifest.json"):
        IssDevice(other)
    reseal(other)  # past the manifest, the weights still name their program
    with pytest.raises(LlmcError, match="belong to another program"):
        IssDevice(other)


def test_verify_ladder_agrees_and_reports_json(engine_projects, capsys):
    project = engine_projects["w4g128"]
    code = main(["verify", str(project), "--levels", "interpreter,iss,csim", "--decode", "3", "--json"])
    levels = json.loads(capsys.readouterr().out)
    assert code == 0
    assert [x["level"] for x in levels] == ["interpreter", "iss", "csim"]
    vocab = ProjectImage.load(project).vocab
    for x in levels:
        assert x["mismatches"] == 0 and x["compared"] == (20 + 3) * vocab


def test_verify_reports_a_mismatch_with_exit_code_1(engine_projects, tmp_path, capsys):
    """A changed weight in the interpreter's copy of the program is caught at the ISS level."""
    from safetensors.numpy import load_file, save_file

    project = tmp_path / "changed"
    shutil.copytree(engine_projects["int8"], project)
    weights = load_file(project / "model.safetensors")
    name = next(n for n in sorted(weights) if "norm" in n)
    weights[name] = weights[name] * np.float32(1.5)
    save_file(weights, project / "model.safetensors", metadata={"ir_sha256": ir_digest((project / "model.llmc").read_text())})
    reseal(project)
    code = main(["verify", str(project), "--levels", "interpreter,iss", "--decode", "1"])
    out = capsys.readouterr().out
    assert code == 1
    assert "iss" in out and " 0 " not in out.splitlines()[-1]


def test_simulate_generates_and_reports_modelled_figures(engine_projects, capsys, tmp_path):
    project = engine_projects["w4g128"]
    svg = tmp_path / "roofline.svg"
    ids = ",".join(map(str, PROMPT[:8]))
    assert main(["simulate", str(project), "--prompt-ids", ids, "--max-new-tokens", "6", "--json",
                 "--roofline", str(svg)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert main(["run", str(project), "--prompt-ids", ids, "--max-new-tokens", "6", "--json"]) == 0
    assert out["tokens"] == json.loads(capsys.readouterr().out)["tokens"]
    modelled = out["modelled"]
    assert modelled["prefill_ms"] > 0 and modelled["decode_tokens_per_s"] > 0
    assert 0 < modelled["hbm_utilisation"] < 1
    assert svg.read_text().startswith("<svg") and "q_proj" in svg.read_text()


def test_verify_ladder_drives_the_designs_rtl_units(engine_projects, capsys):
    """The whole ladder on the 2:4 design: its sparse MAC chain under Icarus and Verilator gets the
    first sparse layer's real int8 activations and codes."""
    code = main(["verify", str(engine_projects["w4-2of4"]), "--decode", "2", "--rtl-vectors", "500", "--json"])
    levels = json.loads(capsys.readouterr().out)
    assert code == 0
    names = [x["level"] for x in levels]
    assert names[:3] == ["interpreter", "iss", "csim"]
    assert {"rtl:sparse_mac:icarus", "rtl:sparse_mac:verilator"} <= set(names)
    for x in levels:
        assert x["mismatches"] == 0 and x["compared"] > 0
