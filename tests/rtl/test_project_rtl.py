"""The RTL a compiled project carries: its units lint clean under Verilator -Wall, every black-box description
names files of the project and is referenced by the HLS build files, the black boxes' C++ models compile with the
project's headers, and the project's own unit configurations match the interpreter in simulation."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
from pathlib import Path

import pytest
from zoo import FPGA_SMALL

import llmc
import llmc.compiler.passes  # noqa: F401  (registers the passes)
from llmc.backends.fpga import units
from llmc.backends.fpga.design import AcceleratorConfig
from llmc.backends.fpga.flow import compile_project
from llmc.compiler.pipeline import PassContext, parse_pipeline, run_pipeline
from llmc.sim.rtl import check_unit, random_vectors

pytestmark = pytest.mark.rtl

CONFIG = FPGA_SMALL
RECIPES = {"sparse": "sparsify{pattern=2:4},quantize{bits=4,group=32}", "lut": "quantize{bits=2,group=32},lut-mpgemm"}


@pytest.fixture(scope="module", params=list(RECIPES))
def project(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    module = run_pipeline(llmc.load("llama", config=CONFIG).module, parse_pipeline(RECIPES[request.param]),
                          PassContext())
    out = tmp_path_factory.mktemp("rtl_project") / request.param
    compile_project(module, "u280", out)
    return out


def _boxes(project: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((project / "rtl").glob("*.json"))]


def test_blackboxes_are_complete_and_referenced(project: Path) -> None:
    boxes = _boxes(project)
    assert boxes
    config = (project / "hls_config.cfg").read_text().splitlines()
    tcl = (project / "run_hls.tcl").read_text().splitlines()
    for path in sorted((project / "rtl").glob("*.json")):
        name = str(path.relative_to(project))
        assert f"syn.blackbox.file={name}" in config and f"add_files -blackbox {name}" in tcl
    for box in boxes:
        function = box["c_function_name"]
        assert box["rtl_top_module_name"] == function and function.endswith("_hls")
        for file in [*box["rtl_files"], *(c["c_file"] for c in box["c_files"])]:
            assert (project / file).is_file(), file
        assert f"module {function} (" in (project / box["rtl_files"][0]).read_text()
        assert f"void {function}(" in (project / box["c_files"][0]["c_file"]).read_text()
        assert [p["c_name"] for p in box["c_parameters"]] == ["in", "out"]


def test_project_rtl_lints_clean(project: Path) -> None:
    if shutil.which("verilator") is None:
        pytest.skip("verilator not found on PATH")
    for box in _boxes(project):
        result = subprocess.run(["verilator", "--lint-only", "-Wall", "-Wno-DECLFILENAME", "--top-module",
                                 box["rtl_top_module_name"], *box["rtl_files"]], cwd=project, capture_output=True,
                                text=True, timeout=120)
        assert result.returncode == 0, result.stderr[-3000:]


def test_blackbox_models_compile_with_the_project_headers(project: Path, gxx_ap_types: tuple[str, Path]) -> None:
    gxx, ap_types = gxx_ap_types
    for box in _boxes(project):
        source = box["c_files"][0]
        result = subprocess.run([gxx, "-std=c++17", "-Wall", "-Wextra", "-Werror", "-Wno-unknown-pragmas",
                                 "-fsyntax-only", "-isystem", str(ap_types), *source["cflag"].split(),
                                 source["c_file"]], cwd=project, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr[-3000:]


def test_project_units_match_the_interpreter(project: Path) -> None:
    if shutil.which("iverilog") is None or importlib.util.find_spec("cocotb") is None:
        pytest.skip("needs iverilog and cocotb")
    design = json.loads((project / "design.json").read_text())
    for unit in units.design_units(AcceleratorConfig.from_json(design["config"])):
        config = {**unit.to_json(), "group": 2 * unit.beat_activations}
        x, w, zeros = random_vectors(unit.kind, config, 1000, seed=5)
        result = check_unit(unit.kind, config, x, w, zeros, "icarus", timeout_s=300)
        assert (result.compared, result.mismatches) == (1000, 0), unit.name
