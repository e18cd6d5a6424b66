"""Shared helpers for the IR unit tests: tiny modules built with the Builder."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pytest

from llmc.ir import Builder, Function, Module, TensorType, run_function, verify_module


def one_node(op: str, in_types: Sequence[TensorType], attrs: dict[str, Any] | None = None) -> Module:
    """A verified module whose function @f applies ``op`` to inputs %a0, %a1, ... and returns it."""
    module = Module("t")
    func = Function("f")
    b = Builder(module, func)
    ins = [b.input(f"a{i}", t) for i, t in enumerate(in_types)]
    b.ret(b.op(op, ins, attrs or {}, name="out"))
    module.functions["f"] = func
    verify_module(module)
    return module


def run1(op: str, in_types: Sequence[TensorType], arrays: Sequence[np.ndarray], attrs: dict[str, Any] | None = None):
    """Run a one-node module and return its single result."""
    module = one_node(op, in_types, attrs)
    return run_function(module, "f", {f"a{i}": a for i, a in enumerate(arrays)})["out"]


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)
