"""Fixtures shared across test folders: the bundled model compiled for the U280 once per engine recipe."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from engine_recipes import RECIPES


@pytest.fixture(scope="session")
def engine_projects(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """``compile_project`` of llmc-tiny under each of :data:`engine_recipes.RECIPES` (tests copy before changing one)."""
    import llmc.compiler.passes  # noqa: F401  (registers the passes)
    from llmc.backends.fpga.flow import compile_project
    from llmc.compiler.pipeline import PassContext, parse_pipeline, run_pipeline

    tiny = llmc.load("llmc-tiny")
    root = tmp_path_factory.mktemp("engines")
    for name, recipe in RECIPES.items():
        module = run_pipeline(tiny.module, parse_pipeline(recipe), PassContext()) if recipe else tiny.module
        compile_project(module, "u280", root / name, tokenizer_json=tiny.tokenizer_json)
    return {name: root / name for name in RECIPES}


@pytest.fixture(scope="session")
def gxx_ap_types() -> tuple[str, Path]:
    """g++ and the ap_types headers C-simulation compiles against (``llmc.sim.csim.ap_types_dir``);
    the test is skipped without them."""
    from llmc.errors import LlmcError
    from llmc.sim.csim import ap_types_dir

    gxx = shutil.which("g++")
    if gxx is None:
        pytest.skip("g++ not found on PATH")
    try:
        return gxx, ap_types_dir()
    except LlmcError as e:
        pytest.skip(str(e))
