"""Compiled and deployed projects of the bundled model, shared by the deployment tests."""

from __future__ import annotations

from pathlib import Path

import pytest
from deploy_support import RECIPES
from zoo import shared_folder

from llmc.cli import main


@pytest.fixture(scope="session")
def projects(engine_projects: dict[str, Path]) -> dict[str, Path]:
    """The engine projects of :data:`deploy_support.RECIPES` (compiled once for the whole run)."""
    return {name: engine_projects[name] for name in RECIPES}


@pytest.fixture(scope="session")
def deployed(projects: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """``llmc deploy`` of each project."""
    def deploy(name: str) -> Path:
        return shared_folder(tmp_path_factory, f"deployed/{name}",
                             lambda out: _check(main(["deploy", str(projects[name]), "-o", str(out)])))

    return {name: deploy(name) for name in projects}


def _check(code: int) -> None:
    assert code == 0
