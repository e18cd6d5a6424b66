"""Compiled and deployed projects of the bundled model, shared by the deployment tests."""

from __future__ import annotations

from pathlib import Path

import pytest
from deploy_support import RECIPES

import llmc
from llmc.cli import main


@pytest.fixture(scope="session")
def projects(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """``llmc compile tiny.llmc -p RECIPE --board u280`` for each recipe (the bundled model)."""
    root = tmp_path_factory.mktemp("projects")
    llmc.load("llmc-tiny").save(root / "tiny.llmc")  # imported once, not per compile
    for name, recipe in RECIPES.items():
        assert main(["compile", str(root / "tiny.llmc"), *(["-p", recipe] if recipe else []), "--board", "u280",
                     "--eval-windows", "0", "-o", str(root / name)]) == 0
    return {name: root / name for name in RECIPES}


@pytest.fixture(scope="session")
def deployed(projects: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """``llmc deploy`` of each project."""
    root = tmp_path_factory.mktemp("deployed")
    for name, project in projects.items():
        assert main(["deploy", str(project), "-o", str(root / name)]) == 0
    return {name: root / name for name in projects}
