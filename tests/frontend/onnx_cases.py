"""Helpers for the ONNX op tests: one-graph models built with ``onnx.helper``, run through llmc's
interpreter and through onnxruntime, compared (integers and bools exactly, floats within a
relative tolerance of the reference's largest magnitude).

A plain module (not conftest.py) so tests can import it by name: ``from onnx_cases import ...``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from llmc.compiler.frontend.onnx import CONTRIB_OPS, import_model
from llmc.ir.builder import value_name
from llmc.ir.graph import Module
from llmc.ir.interpreter import run_function
from llmc.ir.parser import parse_module
from llmc.ir.printer import print_module
from llmc.ir.verify import verify_module

ONNX_TYPE = {np.dtype(k): v for k, v in {
    np.float32: TensorProto.FLOAT, np.float16: TensorProto.FLOAT16, np.float64: TensorProto.DOUBLE,
    np.int8: TensorProto.INT8, np.uint8: TensorProto.UINT8, np.int16: TensorProto.INT16,
    np.uint16: TensorProto.UINT16, np.int32: TensorProto.INT32, np.uint32: TensorProto.UINT32,
    np.int64: TensorProto.INT64, np.bool_: TensorProto.BOOL}.items()}
RTOL = 1e-6


@dataclass
class Case:
    """A graph of ``nodes`` over inputs ``feeds`` (fed to both) and ``inits`` (initializers);
    ``dims`` gives inputs symbolic dims (``{"x": ["N", 4]}``)."""

    id: str
    nodes: list[onnx.NodeProto]
    feeds: dict[str, np.ndarray]
    outputs: Sequence[str] = ("y",)
    inits: dict[str, np.ndarray] = field(default_factory=dict)
    opset: int = 18
    dims: dict[str, list[Any]] = field(default_factory=dict)
    rtol: float = RTOL


def node(op: str, inputs: Sequence[str], outputs: str | Sequence[str] = "y", domain: str = "",
         **attrs: Any) -> onnx.NodeProto:
    outs = [outputs] if isinstance(outputs, str) else list(outputs)
    return helper.make_node(op, list(inputs), outs, name=f"{op.lower()}_{outs[0]}", domain=domain, **attrs)


def build(case: Case) -> onnx.ModelProto:
    """The case's model, its outputs typed by ONNX shape inference (of unknown rank when it has no
    schema for an op)."""
    inputs = [helper.make_tensor_value_info(k, ONNX_TYPE[v.dtype], case.dims.get(k, list(v.shape)))
              for k, v in case.feeds.items()]
    outputs = [helper.make_value_info(name, onnx.TypeProto()) for name in case.outputs]
    inits = [numpy_helper.from_array(np.asarray(v), k) for k, v in case.inits.items()]
    graph = helper.make_graph(case.nodes, case.id.replace("/", "_"), inputs, outputs, inits)
    opsets = [helper.make_opsetid("", case.opset)]
    if any(n.domain == "com.microsoft" for n in case.nodes):
        opsets.append(helper.make_opsetid("com.microsoft", 1))
    model = helper.make_model(graph, opset_imports=opsets, ir_version=10)
    return onnx.shape_inference.infer_shapes(model)


def onnxruntime_outputs(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def imported(model: onnx.ModelProto, name: str = "case") -> Module:
    """The model checked and imported (as ``llmc.load`` does), verified, and through its text form."""
    if not {n.op_type for n in model.graph.node} & CONTRIB_OPS:
        onnx.checker.check_model(model)
    module = import_model(model, Path(f"{name}.onnx"), name)
    verify_module(module)
    text = print_module(module)
    assert print_module(parse_module(text)) == text
    return module


def compare(ours: np.ndarray, theirs: np.ndarray, rtol: float, what: str) -> None:
    assert ours.shape == theirs.shape, f"{what}: shape {ours.shape}, onnxruntime {theirs.shape}"
    assert ours.dtype == theirs.dtype, f"{what}: dtype {ours.dtype}, onnxruntime {theirs.dtype}"
    if ours.dtype.kind != "f":
        np.testing.assert_array_equal(ours, theirs, err_msg=what)
        return
    nan = np.isnan(theirs)
    np.testing.assert_array_equal(np.isnan(ours), nan, err_msg=f"{what}: NaN positions")
    a, b = ours[~nan].astype(np.float64), theirs[~nan].astype(np.float64)
    if a.size:
        finite = np.isfinite(b)
        np.testing.assert_array_equal(a[~finite], b[~finite], err_msg=f"{what}: infinities")
        scale = max(float(np.abs(b[finite]).max(initial=0.0)), np.finfo(np.float32).tiny)
        err = float(np.abs(a[finite] - b[finite]).max(initial=0.0)) / scale
        assert err <= rtol, f"{what}: relative error {err:.3g} > {rtol:g}"


def check(case: Case) -> Module:
    """Run the case through onnxruntime and llmc's interpreter; the outputs agree."""
    model = build(case)
    theirs = onnxruntime_outputs(model, case.feeds)
    for vi, ref in zip(model.graph.output, theirs):
        if not vi.type.HasField("tensor_type"):  # an op without an ONNX schema: type from onnxruntime
            vi.type.tensor_type.elem_type = ONNX_TYPE[ref.dtype]
        if not vi.type.tensor_type.HasField("shape"):
            for _ in ref.shape:
                vi.type.tensor_type.shape.dim.add()
    module = imported(model, case.id.replace("/", "_"))
    ours = run_function(module, "main", case.feeds)
    for name, ref in zip(case.outputs, theirs, strict=True):
        compare(ours[value_name(name)], ref, case.rtol, f"{case.id}: {name}")
    return module


def data(rng: np.random.Generator, dtype: Any, shape: Sequence[int], positive: bool = False) -> np.ndarray:
    """Random test data: normals (times 2) for floats, small integers (-100..100 for int8, to wrap
    on products and sums), random bools."""
    dt = np.dtype(dtype)
    shape = tuple(shape)
    if dt.kind == "f":
        x = np.asarray(rng.standard_normal(shape) * 2)
        return (np.abs(x) + 0.1 if positive else x).astype(dt)
    if dt.kind == "b":
        return np.asarray(rng.random(shape) < 0.5)
    lo = 1 if positive else (0 if dt.kind == "u" else -100 if dt.itemsize == 1 else -50)
    return np.asarray(rng.integers(lo, 100 if dt.itemsize == 1 else 50, shape)).astype(dt)
