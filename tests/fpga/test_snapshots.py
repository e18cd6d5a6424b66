"""Snapshots of the generated project for a tiny random Llama: a change to emitted code shows here.
Regenerate with ``LLMC_UPDATE_SNAPSHOTS=1 pytest tests/fpga/test_snapshots.py`` and review the diff."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from zoo import FPGA_SMALL

import llmc
from llmc.backends.fpga.flow import compile_project
from llmc.templating import HLS_TEMPLATES

SNAPSHOTS = Path(__file__).parent / "snapshots"
FILES = ["kernel/llmc_accel.cpp", "include/llmc_accel.h", "connectivity.cfg", "program.txt", "csim/csim_main.cpp"]
CONFIG = FPGA_SMALL
# compressed variants: their RTL units, black-box descriptions and HLS build files
STATIC_RTL = {"rtl/llmc_result_queue.v"}  # copied verbatim from llmc/hls_templates: compared with the source
RTL_RECIPES = {"sparse": "sparsify{pattern=2:4},quantize{bits=4,group=32}", "lut": "quantize{bits=2,group=32},lut-mpgemm"}


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("snap") / "tiny"
    compile_project(llmc.load("llama", config=CONFIG).module, "u280", out)
    return out


def _check(got: str, snap: Path, name: str) -> None:
    if os.environ.get("LLMC_UPDATE_SNAPSHOTS"):
        snap.parent.mkdir(exist_ok=True)
        snap.write_text(got)
    assert got == snap.read_text(), f"{name} changed: review and regenerate the snapshot"


@pytest.mark.parametrize("name", FILES)
def test_generated_file_matches_snapshot(project, name):
    _check((project / name).read_text(), SNAPSHOTS / name.replace("/", "__"), name)


@pytest.mark.parametrize("recipe", list(RTL_RECIPES))
def test_generated_rtl_matches_snapshot(recipe, tmp_path):
    import llmc.compiler.passes  # noqa: F401
    from llmc.compiler.pipeline import PassContext, parse_pipeline, run_pipeline

    module = run_pipeline(llmc.load("llama", config=CONFIG).module, parse_pipeline(RTL_RECIPES[recipe]), PassContext())
    out = tmp_path / f"tiny-{recipe}"
    compile_project(module, "u280", out)
    names = ["hls_config.cfg", "run_hls.tcl", *sorted(str(p.relative_to(out)) for p in (out / "rtl").iterdir())]
    assert len(names) > 3
    assert STATIC_RTL <= set(names)
    for name in STATIC_RTL:
        assert (out / name).read_text() == (HLS_TEMPLATES / name).read_text(), name
    generated = [n for n in names if n not in STATIC_RTL]
    for name in generated:
        _check((out / name).read_text(), SNAPSHOTS / f"{recipe}__{name.replace('/', '__')}", name)
    stale = {p.name for p in SNAPSHOTS.glob(f"{recipe}__*")} - {f"{recipe}__{n.replace('/', '__')}" for n in generated}
    assert not stale, f"snapshots of files no longer generated: {sorted(stale)}"
