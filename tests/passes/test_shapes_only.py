"""Passes on shapes-only modules: the IR a pipeline gives without weight data is the IR it gives
with data (same parameters, types and nodes), only without the arrays."""

from __future__ import annotations

import pytest
import zoo

import llmc
import llmc.compiler.passes  # noqa: F401  (registers the passes)
from llmc.compiler.calibrate import CalibrationConfig
from llmc.compiler.passes.linear import clone
from llmc.compiler.pipeline import PassContext, PipelineError, parse_pipeline, run_pipeline
from llmc.ir import Module
from llmc.ir.types import SparseEncoding

LLAMA = zoo.LLAMA


@pytest.fixture(scope="module")
def llama() -> Module:
    return llmc.load("llama", config=LLAMA, seed=0, max_length=128).module


def bare(module: Module) -> Module:
    out = clone(module)
    for p in out.params.values():
        p.data = None
    return out


@pytest.mark.parametrize("pipeline", [
    "quantize{bits=4,group=32}",
    "quantize{bits=3,group=32,symmetric=false}",
    "quantize{bits=8,group=0,include_head=true}",
    "quantize{bits=4,group=32,method=gptq}",
    "quantize{method=ternary,group=32}",
    "sparsify{pattern=2:4},quantize{bits=4,group=32}",
    "sparsify{pattern=4:8,method=wanda}",
    "sparsify{pattern=unstructured,ratio=0.5}",
    "quantize{bits=2,group=32},lut-mpgemm",
    "quantize{bits=3,group=32,symmetric=false},lut-mpgemm{g=4}",
    "act-quant{wbits=8,abits=8}",
    "act-quant{wbits=4,group=32}",
])
def test_shapes_only_gives_the_same_ir_without_data(llama: Module, pipeline: str) -> None:
    calibration = CalibrationConfig(samples=2, length=16)
    with_data = run_pipeline(llama, parse_pipeline(pipeline), PassContext(calibration_config=calibration))
    shapes = run_pipeline(bare(llama), parse_pipeline(pipeline), PassContext())
    assert shapes == with_data
    assert with_data.has_weights and all(p.data is None for p in shapes.params.values())


def test_awq_without_data_types_like_rtn(llama: Module) -> None:
    awq = run_pipeline(bare(llama), parse_pipeline("quantize{bits=4,group=32,method=awq}"))
    rtn = run_pipeline(bare(llama), parse_pipeline("quantize{bits=4,group=32}"))
    assert awq == rtn


def test_unstructured_without_data_states_the_nominal_density(llama: Module) -> None:
    context = PassContext()
    out = run_pipeline(bare(llama), parse_pipeline("sparsify{pattern=unstructured,ratio=0.25}"), context)
    weight = out.params["model.layers.0.mlp.up_proj.weight"]
    assert weight.type.encodings == (SparseEncoding(density=0.75),)
    assert context.reports["sparsify"]["sparsity"] == pytest.approx(0.25)
    assert context.reports["sparsify"]["shapes_only"] is True


def test_a_module_with_some_weights_missing_is_refused(llama: Module) -> None:
    partial = clone(llama)
    partial.params["model.layers.1.mlp.up_proj.weight"].data = None
    with pytest.raises(PipelineError, match="up_proj.weight has no data but other weights do"):
        run_pipeline(partial, parse_pipeline("quantize{group=32}"))


@pytest.mark.parametrize("pipeline", ["outliers", "smoothquant", "mixed-precision{budget=4}"])
def test_passes_that_need_data_refuse_a_shapes_only_module(llama: Module, pipeline: str) -> None:
    with pytest.raises(llmc.LlmcError, match="no (weights|data)"):
        run_pipeline(bare(llama), parse_pipeline(pipeline))
