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
from tvm_cases import MODELS, OPENCL_FAST_BUILD, RECIPES, TARGETS, compressed, prompt

from llmc.deploy.interpreter_device import InterpreterDevice

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


@pytest.mark.parametrize("recipe", sorted(RECIPES))
@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("target", TARGETS)
def test_compiled_model_matches_the_interpreter(target: str, name: str, recipe: str) -> None:
    module = compressed(name, recipe)
    ids = prompt(name)
    ref_tokens, ref_logits = greedy(InterpreterDevice(module), ids)
    device = compile_model(module, target, opencl_options=OPENCL_FAST_BUILD)
    tokens, logits = greedy(device, ids, feed=ref_tokens)
    errors = [rel_err(a, b) for a, b in zip(logits, ref_logits)]
    assert max(errors) <= TOLERANCE, f"step {int(np.argmax(errors))}: {max(errors):.2e}"
    assert tokens == ref_tokens
