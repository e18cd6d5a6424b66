"""The deployed folder in an environment of its own: a venv with only the runtime's requirements
(NumPy < 2 and pynq), as on the card's host. The simulator gives the tokens it gives here; the card
path runs for real up to the hardware boundary and stops with one line.

The venvs are built once (needs PyPI) and cached under build/runtime-venv; ``make test-runtime``
runs this file.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from deploy_support import run_py

from llmc.cli import main

ROOT = Path(__file__).parents[2]
CACHE = ROOT / "build" / "runtime-venv"
REQUIREMENTS = ROOT / "llmc" / "deploy" / "requirements-runtime.txt"
# name -> (pip requirements, the one line --device pynq prints on this machine (no XRT, no card))
VENVS = {
    "pinned": (["-r", str(REQUIREMENTS)], "run.py: error: pynq: no Alveo card found (XRT is not set up: XILINX_XRT is "
                                          "unset; install XRT and source /opt/xilinx/xrt/setup.sh)"),
    "pynq-4.0": (["numpy<2", "pynq==4.0.0"], "run.py: error: pynq 4.0.0 cannot drive Alveo cards (PYNQ 3.1 removed "
                                            "its XRT device probe): pip install pynq==3.0.1"),
}
ABSENT = ("torch", "tvm", "jinja2", "yaml", "tokenizers", "transformers", "safetensors")  # none in these venvs

pytestmark = pytest.mark.slow


def runtime_venv(name: str) -> Path:
    """The cached venv ``name``, (re)built when its requirements changed; skips when PyPI is unreachable."""
    args, _ = VENVS[name]
    venv = CACHE / name
    stamp = hashlib.sha256(json.dumps([args, REQUIREMENTS.read_text()]).encode()).hexdigest()
    if (venv / ".requirements").is_file() and (venv / ".requirements").read_text() == stamp:
        return venv
    shutil.rmtree(venv, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    pip = subprocess.run([str(venv / "bin" / "pip"), "install", "-q", *args], capture_output=True, text=True,
                         timeout=900)
    if pip.returncode != 0:
        shutil.rmtree(venv, ignore_errors=True)
        pytest.skip(f"cannot build the runtime venv {name} (PyPI unreachable?): {pip.stderr.strip()[-300:]}")
    (venv / ".requirements").write_text(stamp)
    return venv


@pytest.fixture(scope="module")
def host_folder(projects, tmp_path_factory) -> Path:
    """The deployed folder with a stand-in xclbin file, copied elsewhere as to the card's host."""
    root = tmp_path_factory.mktemp("host")
    xclbin = root / "llmc_accel.hw.xclbin"
    xclbin.write_bytes(b"xclbin2\0")  # a file to get past the xclbin check; the card would refuse it
    assert main(["deploy", str(projects["w4g128"]), "-o", str(root / "built"), "--xclbin", str(xclbin)]) == 0
    return Path(shutil.copytree(root / "built", root / "copied"))


@pytest.mark.parametrize("name", list(VENVS))
def test_deployed_folder_in_a_numpy_pynq_venv(host_folder, name):
    python = str(runtime_venv(name) / "bin" / "python")
    found = subprocess.run([python, "-c", "import importlib.util as u, numpy, pynq; print(numpy.__version__, "
                            f"[m for m in {ABSENT!r} if u.find_spec(m)])"], capture_output=True, text=True, check=True)
    assert found.stdout.split()[0].startswith("1.") and found.stdout.endswith("[]\n")

    args = ["--device", "sim", "--prompt", "A hacker is", "--max-new-tokens", "12", "--json"]
    here, there = run_py(host_folder, *args), run_py(host_folder, *args, python=python)
    assert there.returncode == 0, there.stderr
    assert json.loads(there.stdout)["tokens"] == json.loads(here.stdout)["tokens"]

    env = {k: v for k, v in os.environ.items() if k != "XILINX_XRT"}
    card = subprocess.run([python, str(host_folder / "run.py"), "--device", "pynq", "--prompt", "A hacker is"],
                          capture_output=True, text=True, timeout=120, env=env)
    assert card.returncode == 2 and card.stdout == ""
    assert card.stderr.splitlines() == [VENVS[name][1]]
