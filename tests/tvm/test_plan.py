"""Kernel plans: TIR expressions as Python, the plan's JSON form, and a compiled model saved with
its plan and run from the saved files without TVM's compiler (here on OpenCL)."""

from __future__ import annotations

from pathlib import Path

import pytest

tvm = pytest.importorskip("tvm")
from tvm import tirx  # noqa: E402
from tvm_cases import OPENCL_FAST_BUILD, compressed, model, opencl_available, prompt  # noqa: E402

from llmc.backends.tvm.compile import export  # noqa: E402
from llmc.backends.tvm.device import load_compiled  # noqa: E402
from llmc.backends.tvm.launch import OpenCLBackend, Plan, _Expr  # noqa: E402
from llmc.backends.tvm.plan import Namer, pyexpr  # noqa: E402
from llmc.generate.interpreter import InterpreterDevice, prefill_inputs  # noqa: E402


@pytest.mark.parametrize("a", [-7, -1, 0, 5, 9])
def test_python_expressions_follow_tir_integer_semantics(a: int) -> None:
    x = tirx.Var("x", "int64")
    exprs = [tirx.floordiv(x, 3), tirx.floormod(x, 3), tirx.truncdiv(x, 3), tirx.min(x, 2) + tirx.max(x, -1) * 2,
             tirx.Select(x > 0, x, -x), (x + 3) * (x - 1) // 4]
    name = Namer()
    for e in exprs:
        text = pyexpr(e, name)
        expected = {0: a // 3, 1: a % 3, 2: int(a / 3), 3: min(a, 2) + max(a, -1) * 2, 4: abs(a),
                    5: (a + 3) * (a - 1) // 4}[exprs.index(e)]
        assert _Expr(text)({name(x): a}) == expected, text


def test_names_are_unique_per_object() -> None:
    a, b = tirx.Var("n", "int64"), tirx.Var("n", "int64")
    name = Namer()
    assert name(a) != name(b) and name(a) == name(a) and name(a).isidentifier()


@pytest.mark.skipif(not opencl_available(), reason="no OpenCL platform (pyopencl and an ICD such as pocl-opencl-icd)")
def test_an_exported_model_runs_from_its_files(tmp_path: Path) -> None:
    module = compressed("llmc-tiny", "w4g128")
    written = export(module, tmp_path, "opencl")
    assert all(p.exists() for p in written)
    plan = Plan.load(tmp_path / "plan.json")
    assert set(plan.functions) == {"prefill", "decode"} and plan.kernels
    device = load_compiled(tmp_path, OpenCLBackend((tmp_path / "kernels.cl").read_text(), OPENCL_FAST_BUILD), "opencl")
    ids = prompt("llmc-tiny")
    got = [t for t, _ in model("llmc-tiny").stream(prompt_ids=ids, max_new_tokens=8, stop=False, device=device)]
    reference = InterpreterDevice(module)
    want = [t for t, _ in model("llmc-tiny").stream(prompt_ids=ids, max_new_tokens=8, stop=False, device=reference)]
    assert got == want
    outputs = device("prefill", **prefill_inputs(ids))  # the callable module: outputs by name
    assert outputs["logits"].shape == (1, len(ids), 1024) and outputs["k_0"].shape == (1, 2, len(ids), 64)
