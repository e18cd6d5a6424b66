"""Every random-weight family compiled for the CPU (Relax VM) against the interpreter: prefill and
8 decode steps agree to a relative error of 2e-5 (only the order of float sums differs). The
default suite runs the families whose ops the others do not have: Gemma-2 (soft-capped eager
attention, alternating sliding windows), GPT-NeoX (partial rotary) and Mixtral (top-k routing,
experts gathered by id); make test-full runs them all."""

from __future__ import annotations

import numpy as np
import pytest
from zoo import FAMILIES

import llmc
from llmc.generate.interpreter import InterpreterDevice

compile_model = pytest.importorskip("llmc.backends.tvm.compile").compile_model
DEFAULT = ("gemma2", "gpt_neox", "mixtral")
PROMPT = [3, 17, 42, 8, 25, 61, 9, 4, 5, 6, 7]


@pytest.mark.parametrize("arch", [pytest.param(a, marks=[] if a in DEFAULT else [pytest.mark.slow])
                                  for a in sorted(FAMILIES)])
def test_family_on_the_cpu_matches_the_interpreter(arch: str) -> None:
    module = llmc.load(arch, config=FAMILIES[arch], seed=0, max_length=128).module
    ref, device = InterpreterDevice(module), compile_model(module, "cpu")
    pairs = [(ref.prefill(PROMPT), device.prefill(PROMPT))]
    for token in (5, 9, 12, 3, 8, 1, 2, 7):
        pairs.append((ref.decode(token), device.decode(token)))
    errors = [float(np.abs(a - b).max() / np.abs(a).max()) for a, b in pairs]
    assert max(errors) <= 2e-5, errors
