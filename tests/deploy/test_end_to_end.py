"""llmc compile -> llmc deploy -> the deployed run.py on the simulator device: the lowered program's
tokens (interpreter), the same as ``llmc run build/NAME --device sim``, with modelled timing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from deploy_support import PROMPT, RECIPES, ids_text, run_py, snapshot

import llmc
from llmc.backends.fpga.design import AcceleratorConfig
from llmc.cli import main
from llmc.deploy.layout import register_map
from llmc.generate.loop import generate
from llmc.generate.step import StepDevice
from llmc.io import load_module

NEW_TOKENS = 16


def interpreter_tokens(project: Path, prompt: list[int]) -> list[int]:
    """The lowered program (model.llmc) in the interpreter, through the same generation loop."""
    module = load_module(project / "model.llmc")
    stops = [int(module.attrs["eos_token_id"])]
    return generate(StepDevice(module), prompt, NEW_TOKENS, stop_ids=stops).tokens


@pytest.mark.parametrize("recipe", list(RECIPES))
def test_deployed_folder_runs_the_interpreters_tokens(projects, deployed, recipe, capsys):
    folder = deployed[recipe]
    before = snapshot(folder)
    result = run_py(folder, "--device", "sim", "--prompt-ids", ids_text(PROMPT), "--max-new-tokens", str(NEW_TOKENS),
                    "--json")
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["tokens"] == interpreter_tokens(projects[recipe], PROMPT)
    assert out["prompt_ids"] == PROMPT and out["device"] == "sim" and out["timing"] == "modelled"
    assert len(out["seconds"]) == len(out["tokens"]) and all(s > 0 for s in out["seconds"])
    assert out["seconds"][0] > out["seconds"][1]  # the first token's time includes the 20-row prefill
    assert out["decode_tokens_per_s"] > 0 and isinstance(out["text"], str)
    assert snapshot(folder) == before  # a run writes nothing (no __pycache__ either)

    assert main(["run", str(projects[recipe]), "--device", "sim", "--prompt-ids", ids_text(PROMPT),
                 "--max-new-tokens", str(NEW_TOKENS), "--json"]) == 0
    in_place = json.loads(capsys.readouterr().out)
    assert in_place["tokens"] == out["tokens"] and in_place["text"] == out["text"]


def test_text_prompt_streams_text_and_matches_the_models_tokenizer(projects, deployed):
    folder, prompt = deployed["w4g128"], "A hacker is"
    result = run_py(folder, "--device", "sim", "--prompt", prompt, "--max-new-tokens", "8", "--json")
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    model = llmc.load(projects["w4g128"])
    assert out["prompt_ids"] == model.encode(prompt)
    assert out["tokens"] == interpreter_tokens(projects["w4g128"], out["prompt_ids"])[:8]
    assert out["text"] == model.decode_text(out["tokens"])

    streamed = run_py(folder, "--device", "sim", "--prompt", prompt, "--max-new-tokens", "8")
    assert streamed.returncode == 0
    assert streamed.stdout == out["text"] + "\n"
    assert streamed.stderr.startswith(f"sim: {len(out['prompt_ids'])} prompt tokens, prefill ")
    assert "(modelled)" in streamed.stderr


def test_runtime_imports_only_numpy_and_its_own_llmc(deployed):
    """The deployed runtime, imported from the folder and run, loads no third-party module but NumPy."""
    folder = deployed["int8"]
    probe = (
        "import io, sys, contextlib\n"
        f"sys.path.insert(0, {str(folder)!r}); sys.dont_write_bytecode = True\n"
        "from llmc.deploy.runtime import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        f"    assert main(__import__('pathlib').Path({str(folder)!r}), ['--device', 'sim', '--prompt', 'Hi']) == 0\n"
        "import llmc\n"
        "print(llmc.__file__)\n"
        "print(' '.join(sorted({m.split('.')[0] for m in sys.modules} - set(sys.stdlib_module_names))))\n"
    )
    result = subprocess.run([sys.executable, "-I", "-c", probe], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    where, modules = result.stdout.splitlines()
    assert Path(where).parent == folder / "llmc"
    assert {m for m in modules.split() if not m.startswith("_")} - {"cython_runtime"} == {"llmc", "numpy"}


def test_deployed_folder_contents(deployed, projects):
    folder = deployed["w4g128"]
    manifest = json.loads((folder / "deploy.json").read_text())
    assert manifest["xclbin"] is None and manifest["tokenizer"] == "tokenizer.json"
    assert manifest["max_context"] == 512 and manifest["vocab"] == 1024
    assert (folder / "weights.bin").read_bytes() == (projects["w4g128"] / "weights.bin").read_bytes()
    design = json.loads((folder / "design.json").read_text())
    assert "target" in design
    assert (folder / "requirements.txt").read_text().count("pynq==") == 1
    readme = (folder / "README.md").read_text()
    n_instr = next(r for r in register_map(AcceleratorConfig.from_json(design["config"])) if r.name == "n_instr")
    assert f"| {n_instr.index} | `n_instr` | scalar |" in readme and "`llmc_accel_1`" in readme
    shipped = {p.relative_to(folder).as_posix() for p in (folder / "llmc").rglob("*.py")}
    assert {"llmc/sim/iss.py", "llmc/deploy/pynq_device.py", "llmc/deploy/tokenizer.py"} <= shipped
    assert not any(p.startswith(("llmc/compiler", "llmc/backends/tvm", "llmc/cli")) for p in shipped)
