"""Snapshots of the generated project for a tiny random Llama: a change to emitted code shows here.
Regenerate with ``LLMC_UPDATE_SNAPSHOTS=1 pytest tests/fpga/test_snapshots.py`` and review the diff."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import llmc
from llmc.backends.fpga.flow import compile_project

SNAPSHOTS = Path(__file__).parent / "snapshots"
FILES = ["kernel/llmc_accel.cpp", "include/llmc_accel.h", "connectivity.cfg", "program.txt", "csim/csim_main.cpp"]
CONFIG = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 1, "num_attention_heads": 2,
          "num_key_value_heads": 1, "vocab_size": 96, "max_position_embeddings": 64}


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("snap") / "tiny"
    compile_project(llmc.load("llama", config=CONFIG).module, "u280", out)
    return out


@pytest.mark.parametrize("name", FILES)
def test_generated_file_matches_snapshot(project, name):
    got = (project / name).read_text()
    snap = SNAPSHOTS / name.replace("/", "__")
    if os.environ.get("LLMC_UPDATE_SNAPSHOTS"):
        snap.parent.mkdir(exist_ok=True)
        snap.write_text(got)
    assert got == snap.read_text(), f"{name} changed: review and regenerate the snapshot"
