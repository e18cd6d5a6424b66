"""Models and compression recipes shared by the TVM backend tests, built once per session.

A plain module (not conftest.py) so tests import it by name: ``from tvm_cases import ...``.
"""

from __future__ import annotations

import functools

import pytest
from zoo import FAMILIES, SMALL_PROMPT

import llmc
import llmc.compiler.passes  # noqa: F401  (registers the passes)
from llmc.compiler.calibrate import CalibrationConfig
from llmc.compiler.pipeline import PassContext, parse_pipeline, run_pipeline
from llmc.ir.graph import Module

pytest.importorskip("tvm")

# hidden sizes are multiples of 128, so that group-128 quantization applies to every layer
CONFIGS = {
    "qwen2": dict(FAMILIES["qwen2"], hidden_size=128, intermediate_size=256),
    "gpt2": dict(FAMILIES["gpt2"], n_embd=128),
}
MODELS = ("llmc-tiny", *CONFIGS)
RECIPES = {
    "fp32": "",
    "w8a8": "smoothquant,act-quant{wbits=8,abits=8}",
    "w4g128": "quantize{bits=4,group=128}",
    "w2lut": "quantize{bits=2,group=128},lut-mpgemm",
}
CALIBRATION = CalibrationConfig(samples=4, length=64)
OPENCL_FAST_BUILD = ("-cl-opt-disable",)  # PoCL compiles each kernel on first use; unoptimized is 2x faster


def opencl_available() -> bool:
    try:
        import pyopencl

        return bool(pyopencl.get_platforms())
    except Exception:  # no pyopencl, or no ICD loader / platform
        return False


TARGETS = ("cpu", "opencl")
TARGET_PARAMS = ["cpu", pytest.param("opencl", marks=pytest.mark.skipif(
    not opencl_available(), reason="no OpenCL platform (pyopencl and an ICD such as pocl-opencl-icd)"))]


def require_opencl() -> None:
    if not opencl_available():
        pytest.skip("no OpenCL platform (pyopencl and an ICD such as pocl-opencl-icd)")


@functools.cache
def model(name: str) -> llmc.Model:
    return llmc.load(name, config=CONFIGS.get(name))


@functools.cache
def compressed(name: str, recipe: str) -> Module:
    """``name`` compressed by ``RECIPES[recipe]`` (calibrated on 4 x 64 tokens)."""
    m = model(name)
    if not RECIPES[recipe]:
        return m.module
    context = PassContext(tokenizer_json=m.tokenizer_json, calibration_config=CALIBRATION)
    return run_pipeline(m.module, parse_pipeline(RECIPES[recipe]), context)


def prompt(name: str) -> list[int]:
    return model(name).encode("A hacker is") if name == "llmc-tiny" else SMALL_PROMPT
