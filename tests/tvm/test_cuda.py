"""CUDA: TVM generates the kernels of a compressed model (no nvcc or GPU needed), nvcc compiles
them to a cubin where it is installed, and on an NVIDIA GPU the cubin runs through CuPy from the
exported files and matches the interpreter."""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from pathlib import Path

import pytest

pytest.importorskip("tvm")
from tvm_cases import compressed, model, prompt  # noqa: E402

from llmc.backends.tvm.compile import export, kernel_plan, lower, tvm_target  # noqa: E402
from llmc.backends.tvm.cuda import nvcc  # noqa: E402
from llmc.generate.interpreter import InterpreterDevice  # noqa: E402

RECIPES = ("w4g128", "w2lut")


def launched(plan: object) -> set[str]:
    return {op.name for k in plan.kernels.values() for op in k.ops if op.op == "launch"}


@pytest.mark.parametrize("recipe", RECIPES)
def test_tvm_generates_cuda_kernels(recipe: str) -> None:
    plan, code = kernel_plan(lower(compressed("llmc-tiny", recipe)), tvm_target("cuda", "sm_90"))
    defined = set(re.findall(r'extern "C" __global__ void (?:__launch_bounds__\(\d+\) )?(\w+)\(', code.source))
    assert launched(plan) and launched(plan) <= defined
    assert any("dequant" in name or "lut_gemm" in name for name in defined)


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """Recipe -> the bundled model under it, exported for CUDA (nvcc builds the cubin), on first use."""
    if nvcc() is None:
        pytest.skip("nvcc not found (install the CUDA toolkit or set CUDA_HOME)")

    @functools.cache
    def export_recipe(recipe: str) -> Path:
        folder = tmp_path_factory.mktemp(recipe)
        export(compressed("llmc-tiny", recipe), folder, "cuda", "sm_90")
        return folder

    return export_recipe


@pytest.mark.parametrize("recipe", ["w2lut", pytest.param("w4g128", marks=pytest.mark.slow)])
def test_nvcc_compiles_every_launched_kernel(exported: Callable[[str], Path], recipe: str) -> None:
    cubin = (exported(recipe) / "kernels.cubin").read_bytes()
    assert cubin[:4] == b"\x7fELF"
    from llmc.backends.tvm.launch import Plan

    plan = Plan.load(exported(recipe) / "plan.json")
    assert all(name.encode() in cubin for name in launched(plan))


@pytest.mark.gpu
@pytest.mark.parametrize("recipe", RECIPES)
def test_cubin_runs_on_the_gpu_through_cupy(exported: Callable[[str], Path], recipe: str) -> None:
    cupy = pytest.importorskip("cupy")
    if cupy.cuda.runtime.getDeviceCount() < 1:
        pytest.skip("no NVIDIA GPU")
    from llmc.backends.tvm.device import load_compiled
    from llmc.backends.tvm.launch import CudaBackend

    folder = exported(recipe)
    device = load_compiled(folder, CudaBackend(folder / "kernels.cubin"), "cuda")
    ids = prompt("llmc-tiny")
    m = model("llmc-tiny")
    got = [t for t, _ in m.stream(prompt_ids=ids, max_new_tokens=12, stop=False, device=device)]
    reference = InterpreterDevice(compressed("llmc-tiny", recipe))
    assert got == [t for t, _ in m.stream(prompt_ids=ids, max_new_tokens=12, stop=False, device=reference)]
