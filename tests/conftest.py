"""Fixtures shared across test folders: the bundled model compiled for the U280 once per engine recipe,
shared by every test and every pytest-xdist worker of a run."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest
from zoo import ENGINE_RECIPES, compile_bundled, shared_folder


@pytest.fixture(scope="session")
def tiny_llmc(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundled model imported once for the whole run and saved as ``llmc-tiny.llmc`` (loading it
    takes milliseconds; importing the bundled model traces it with torch.export, seconds)."""
    import llmc

    folder = shared_folder(tmp_path_factory, "bundled", lambda out: llmc.load("llmc-tiny").save(out / "llmc-tiny.llmc"))
    return folder / "llmc-tiny.llmc"


class EngineProjects(Mapping[str, Path]):
    """Recipe name -> the bundled model compiled under it, compiled on first use (tests copy before
    changing a project)."""

    def __init__(self, tmp_path_factory: pytest.TempPathFactory, source: Path) -> None:
        self.tmp_path_factory = tmp_path_factory
        self.source = source

    def __getitem__(self, name: str) -> Path:
        return shared_folder(self.tmp_path_factory, f"engines/{name}",
                             lambda out: compile_bundled(ENGINE_RECIPES[name], out, self.source))

    def __iter__(self) -> Iterator[str]:
        return iter(ENGINE_RECIPES)

    def __len__(self) -> int:
        return len(ENGINE_RECIPES)


@pytest.fixture(scope="session")
def engine_projects(tmp_path_factory: pytest.TempPathFactory, tiny_llmc: Path) -> EngineProjects:
    """``compile_project`` of llmc-tiny under each of :data:`zoo.ENGINE_RECIPES`, on first use."""
    return EngineProjects(tmp_path_factory, tiny_llmc)


CLUSTER_CONTEXT = 256


@pytest.fixture(scope="session")
def tiny_clusters(tmp_path_factory: pytest.TempPathFactory, tiny_llmc: Path) -> Mapping[str, Path]:
    """The bundled model compiled for 2 U280s (context 256), split each way, once per test run and
    shared by every worker: ``{"pipeline": folder, "tensor": folder}``."""
    import llmc
    from llmc.backends.fpga.cluster import compile_cluster

    def make(parallel: str) -> Callable[[Path], None]:
        def compile_split(out: Path) -> None:
            model = llmc.load(tiny_llmc)
            compile_cluster(model.module, "u280", out, 2, parallel, tokenizer_json=model.tokenizer_json,
                            max_context=CLUSTER_CONTEXT)
        return compile_split

    return {p: shared_folder(tmp_path_factory, f"clusters/{p}", make(p)) for p in ("pipeline", "tensor")}


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
