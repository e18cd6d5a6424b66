"""Refusals and interruptions of the deployed runtime and of llmc deploy: one clear line, exit code 2
(130 for an interrupt), and nothing changed on disk."""

from __future__ import annotations

import _thread
import importlib.util
import json
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from deploy_support import PROMPT, ids_text, one_error_line, run_py, snapshot
from zoo import reseal

from llmc.cli import main
from llmc.deploy.runtime import Deployment, open_device
from llmc.generate.loop import generate


@pytest.fixture
def copy(deployed, tmp_path) -> Path:
    folder = tmp_path / "copy"
    shutil.copytree(deployed["int8"], folder)
    return folder


def test_interrupt_prints_one_line_and_leaves_the_folder_unchanged(deployed):
    folder = deployed["int8"]
    before = snapshot(folder)
    proc = subprocess.Popen([sys.executable, str(folder / "run.py"), "--device", "sim", "--prompt-ids", "1,72,271",
                             "--max-new-tokens", "400"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.read(1)  # generation has started
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert err.strip().splitlines() == ["run.py: interrupted (the folder is unchanged; run again to start over)"]
    assert snapshot(folder) == before


def test_interrupted_device_resets_and_runs_again(deployed):
    deployment = Deployment.read(deployed["w4g128"])
    with open_device(deployment, "sim") as fresh:
        want = generate(fresh, PROMPT, 8).tokens
    with open_device(deployment, "sim") as device:
        timer = threading.Timer(0.3, _thread.interrupt_main)  # lands inside a device call: most time is spent there
        timer.start()
        try:
            generate(device, PROMPT, 400)
            interrupted = False
        except KeyboardInterrupt:
            interrupted = True
        finally:
            timer.cancel()
        assert interrupted
        assert generate(device, PROMPT, 8).tokens == want  # the loop resets the device first


def test_pynq_without_an_xclbin(deployed, capsys):
    one_error_line(run_py(deployed["int8"], "--device", "pynq", "--prompt-ids", "1,2"), "no xclbin deployed")
    missing = deployed["int8"] / "missing.xclbin"
    one_error_line(run_py(deployed["int8"], "--device", "pynq", "--prompt-ids", "1,2", "--xclbin", str(missing)),
                   "missing.xclbin: xclbin not found")


def test_pynq_without_pynq_or_a_card(deployed, tmp_path, projects, capsys):
    """Up to the hardware boundary: an xclbin file exists, then pynq or the card is missing."""
    xclbin = tmp_path / "llmc_accel.hw.xclbin"
    xclbin.write_bytes(b"xclbin2\0")
    result = run_py(deployed["int8"], "--device", "pynq", "--prompt-ids", "1,2", "--xclbin", str(xclbin))
    if importlib.util.find_spec("pynq") is None:
        one_error_line(result, "pynq: not installed")
    else:
        one_error_line(result, "pynq")
    assert main(["run", str(projects["int8"]), "--device", "pynq", "--prompt-ids", "1,2"]) == 2
    assert "no xclbin deployed" in capsys.readouterr().err


def test_weights_of_another_program_or_corrupted(copy, deployed):
    shutil.copy(deployed["w4g128"] / "weights.bin", copy / "weights.bin")
    one_error_line(run_py(copy, "--device", "sim", "--prompt-ids", "1,2"), "weights.bin: does not match llmc-manifest.json")
    reseal(copy)  # past the manifest, the weights still name their program
    for device in ("sim", "pynq"):  # checked before the card is looked for
        one_error_line(run_py(copy, "--device", device, "--prompt-ids", "1,2", "--xclbin", str(copy / "run.py")),
                       "these weights belong to another program (program_digest differs)")
    shutil.copy(deployed["int8"] / "weights.bin", copy / "weights.bin")
    with open(copy / "weights.bin", "r+b") as f:
        f.seek(-100, 2)
        byte = f.read(1)
        f.seek(-100, 2)
        f.write(bytes([byte[0] ^ 1]))
    one_error_line(run_py(copy, "--device", "sim", "--prompt-ids", "1,2"), "weights.bin: does not match llmc-manifest.json")
    reseal(copy)
    one_error_line(run_py(copy, "--device", "sim", "--prompt-ids", "1,2"), "checksum mismatch (file corrupted?)")


def test_program_of_another_deployment(copy, deployed):
    for name in ("program.bin", "weights.bin"):
        shutil.copy(deployed["w4g128"] / name, copy / name)
    one_error_line(run_py(copy, "--device", "sim", "--prompt-ids", "1,2"), "program.bin: does not match llmc-manifest.json")
    reseal(copy)
    one_error_line(run_py(copy, "--device", "sim", "--prompt-ids", "1,2"),
                   "not the program this folder was deployed with")


def test_prompt_longer_than_the_compiled_context(deployed):
    folder = deployed["int8"]
    one_error_line(run_py(folder, "--device", "sim", "--prompt-ids", ids_text([5] * 513)),
                   "the prompt has 513 tokens, longer than the compiled context of 512")
    one_error_line(run_py(folder, "--device", "sim", "--prompt-ids", ids_text([5] * 500), "--max-new-tokens", "32"),
                   "need 531 positions; the design holds 512 (at most --max-new-tokens 13)")
    one_error_line(run_py(folder, "--device", "sim", "--prompt-ids", "5,1024"), "outside the vocabulary [0, 1024)")


def test_unsupported_tokenizer_needs_prompt_ids(copy):
    spec = json.loads((copy / "tokenizer.json").read_text())
    spec["model"]["type"] = "WordPiece"
    (copy / "tokenizer.json").write_text(json.dumps(spec))
    one_error_line(run_py(copy, "--device", "sim", "--prompt", "hi"), "--prompt needs a byte-level BPE tokenizer")
    result = run_py(copy, "--device", "sim", "--prompt-ids", "1,72", "--max-new-tokens", "3")
    assert result.returncode == 0 and len(result.stdout.split()) == 3  # ids instead of text


def test_not_a_deployed_folder(tmp_path):
    shutil.copy(Path(__file__).parents[2] / "llmc" / "deploy" / "templates" / "run.py", tmp_path / "run.py")
    one_error_line(run_py(tmp_path, "--device", "sim", "--prompt-ids", "1"), "not a deployed llmc folder")


def test_deploy_refuses_an_existing_folder_and_replaces_it_with_force(projects, copy, capsys):
    before = snapshot(copy)
    assert main(["deploy", str(projects["w4g128"]), "-o", str(copy)]) == 2
    assert "output folder exists (use --force to replace it)" in capsys.readouterr().err
    assert snapshot(copy) == before
    assert main(["deploy", str(projects["w4g128"]), "-o", str(copy), "--force", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["program_digest"] == Deployment.read(copy).program_digest
    assert (copy / "weights.bin").read_bytes() == (projects["w4g128"] / "weights.bin").read_bytes()


def test_deploy_is_all_or_nothing(projects, copy, monkeypatch, tmp_path):
    before = snapshot(copy)
    written = []
    write_bytes = Path.write_bytes

    def interrupted(self: Path, data: bytes) -> int:
        written.append(self)
        if len(written) == 5:
            raise KeyboardInterrupt
        return write_bytes(self, data)

    monkeypatch.setattr(Path, "write_bytes", interrupted)
    for out, force in ((tmp_path / "new", []), (copy, ["--force"])):
        written.clear()
        assert main(["deploy", str(projects["w4g128"]), "-o", str(out), *force]) == 130  # "llmc: interrupted"
    assert not (tmp_path / "new").exists() and snapshot(copy) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["copy"]  # no temporary folder left


def test_deploy_refuses_a_broken_project(projects, tmp_path, capsys):
    project = tmp_path / "project"
    shutil.copytree(projects["int8"], project)
    shutil.copy(projects["w4g128"] / "weights.bin", project / "weights.bin")
    assert main(["deploy", str(project), "-o", str(tmp_path / "out")]) == 2
    assert "weights.bin: does not match llmc-manifest.json" in capsys.readouterr().err
    reseal(project)
    assert main(["deploy", str(project), "-o", str(tmp_path / "out")]) == 2
    assert "belong to another program" in capsys.readouterr().err and not (tmp_path / "out").exists()
    assert main(["deploy", str(tmp_path), "-o", str(tmp_path / "out")]) == 2
    assert "not a compiled project" in capsys.readouterr().err
