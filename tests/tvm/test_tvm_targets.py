"""Compiled models on the CPU (Relax VM) and on OpenCL (TVM's OpenCL kernels on PoCL through pyopencl)
against the reference interpreter: the bundled model and two random-weight families, at fp32,
W8A8, W4g128 and W2 LUT-mpGEMM.

Per case: the prefill logits and those of 11 greedy decode steps agree to a relative error
(``max|tvm - ref| / max|ref|``) of ``TOLERANCE``, and the 12 greedy tokens are identical. Only the
order of float sums differs from the interpreter (integer paths are exact), so the measured
errors are about 1e-6; the tolerance leaves a margin of 10x.
"""

from __future__ import annotations

import numpy as np
import pytest
from tvm_cases import (
    CALIBRATION,
    MODELS,
    OPENCL_FAST_BUILD,
    RECIPES,
    TARGETS,
    compressed,
    model,
    prompt,
    require_opencl,
)
from zoo import matrix

from llmc.compiler.pipeline import PassContext, parse_pipeline, run_pipeline
from llmc.generate.interpreter import InterpreterDevice

compile_model = pytest.importorskip("llmc.backends.tvm.compile").compile_model

TOLERANCE = 2e-5
STEPS = 12


def rel_err(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / np.abs(b).max())


def greedy(device: object, ids: list[int], feed: list[int] | None = None) -> tuple[list[int], list[np.ndarray]]:
    """Greedy tokens and the logits of each step; with ``feed``, decode those tokens instead."""
    logits = [device.prefill(ids)]
    tokens = [int(np.argmax(logits[-1]))]
    for step in range(STEPS - 1):
        logits.append(device.decode((feed or tokens)[step]))
        tokens.append(int(np.argmax(logits[-1])))
    return tokens, logits


# every target, model and recipe at least once by default; the whole product under make test-full
DEFAULT = [("cpu", "llmc-tiny", "w2lut"), ("opencl", "qwen2", "w4g128"), ("cpu", "gpt2", "w8a8"),
           ("opencl", "llmc-tiny", "fp32")]


@pytest.mark.parametrize(("target", "name", "recipe"), matrix([TARGETS, MODELS, sorted(RECIPES)], DEFAULT))
def test_compiled_model_matches_the_interpreter(target: str, name: str, recipe: str) -> None:
    if target == "opencl":
        require_opencl()
    module = compressed(name, recipe)
    ids = prompt(name)
    ref_tokens, ref_logits = greedy(InterpreterDevice(module), ids)
    device = compile_model(module, target, opencl_options=OPENCL_FAST_BUILD)
    tokens, logits = greedy(device, ids, feed=ref_tokens)
    errors = [rel_err(a, b) for a, b in zip(logits, ref_logits)]
    assert max(errors) <= TOLERANCE, f"step {int(np.argmax(errors))}: {max(errors):.2e}"
    assert tokens == ref_tokens


# more compression forms on the bundled model on the CPU: N:M sparse (float and quantized codes),
# asymmetric and 3-bit codes, mixed precision (dequantized weights gathered), outliers (float16
# side matrices), a quantized KV cache, and int8 LUT tables (a table entry on a rounding tie may
# round the other way, so those logits agree to the table quantization error). The default suite
# runs the combined recipes, which cover every form; make test-full runs each form alone too.
MORE = {
    "sparse2:4+kv-quant": ("sparsify{pattern=2:4},kv-quant", TOLERANCE),
    "sparse2:4+w4": ("sparsify{pattern=2:4},quantize{bits=4,group=128}", TOLERANCE),
    "outliers+w3asym-g64": ("outliers,quantize{bits=3,group=64,symmetric=false}", TOLERANCE),
    "mixed-3bpw": ("mixed-precision{budget=3.0,group=128}", TOLERANCE),
    "w4lut-int8": ("quantize{bits=4,group=128},lut-mpgemm{table_bits=8}", 2e-2),
}
ALONE = {
    "sparse2:4": ("sparsify{pattern=2:4}", TOLERANCE),
    "w4asym-g64": ("quantize{bits=4,group=64,symmetric=false}", TOLERANCE),
    "w3": ("quantize{bits=3,group=128}", TOLERANCE),
    "outliers+w4": ("outliers,quantize{bits=4,group=128}", TOLERANCE),
    "kv-quant": ("kv-quant", TOLERANCE),
}


@pytest.mark.parametrize("recipe", [*sorted(MORE), *(pytest.param(r, marks=pytest.mark.slow) for r in sorted(ALONE))])
def test_more_recipes_on_the_cpu(recipe: str) -> None:
    pipeline, tolerance = {**MORE, **ALONE}[recipe]
    m = model("llmc-tiny")
    context = PassContext(tokenizer_json=m.tokenizer_json, calibration_config=CALIBRATION)
    module = run_pipeline(m.module, parse_pipeline(pipeline), context)
    ids = prompt("llmc-tiny")
    ref_tokens, ref_logits = greedy(InterpreterDevice(module), ids)
    tokens, logits = greedy(compile_model(module, "cpu"), ids, feed=ref_tokens)
    assert max(rel_err(a, b) for a, b in zip(logits, ref_logits)) <= tolerance
    if tolerance == TOLERANCE:
        assert tokens == ref_tokens
