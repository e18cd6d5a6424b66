"""Pass infrastructure: pipeline strings and recipes, option checking, hooks and timings."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

import llmc
import llmc.compiler.passes  # noqa: F401  (registers the passes)
from llmc.compiler.passes.linear import clone
from llmc.compiler.pipeline import (
    PASSES,
    Hooks,
    PassContext,
    PipelineError,
    load_recipe,
    parse_pipeline,
    register_pass,
    run_pipeline,
)
from llmc.errors import LlmcError
from llmc.ir.graph import Module, Node, Value
from llmc.ir.types import F32, TensorType

CONFIG = dict(vocab_size=64, max_position_embeddings=64, hidden_size=64, intermediate_size=128,
              num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=2)


@pytest.fixture(scope="module")
def module() -> Module:
    return llmc.load("llama", config=CONFIG, seed=0, max_length=64).module


@dataclass(frozen=True)
class BreakOptions:
    pass


@register_pass("test-break", BreakOptions)
def _break(module: Module, options: BreakOptions, context: PassContext) -> Module:
    """Adds a node whose declared type is wrong (for the verify-after hook)."""
    module = clone(module)
    func = next(iter(module.functions.values()))
    x = func.inputs[0]
    func.nodes.append(Node("neg", [x], [Value("broken", TensorType.of([3], F32))]))
    return module


def test_pipeline_string_parses_options_with_types() -> None:
    calls = parse_pipeline(" quantize{bits=3, group=64, symmetric=false} , mixed-precision{budget=2.5}")
    assert [c.info.name for c in calls] == ["quantize", "mixed-precision"]
    assert calls[0].options.bits == 3 and calls[0].options.group == 64 and calls[0].options.symmetric is False
    assert calls[1].options.budget == 2.5
    assert parse_pipeline(str(calls[0]))[0].options == calls[0].options  # printing round-trips
    assert parse_pipeline("") == []


@pytest.mark.parametrize("text, message", [
    ("nope", "unknown pass 'nope'"),
    ("quantize{bits=4", "cannot parse"),
    ("quantize{bits}", "not key=value"),
    ("quantize{bits=four}", "not a int"),
    ("quantize{symmetric=maybe}", "not a bool"),
    ("quantize{colour=red}", "unknown option 'colour'"),
    ("quantize{bits=0}", "bits must be 2..8"),
])
def test_bad_pipelines_are_refused(text: str, message: str) -> None:
    with pytest.raises(PipelineError, match=message):
        parse_pipeline(text)


def test_recipe_files(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("pipeline: quantize{bits=4,group=32}\n")
    (tmp_path / "b.yaml").write_text("passes:\n  - pass: quantize\n    bits: 4\n    group: 32\n    symmetric: false\n")
    (tmp_path / "c.yaml").write_text("passes: [{bits: 4}]\n")
    assert load_recipe(tmp_path / "a.yaml")[0].options.group == 32
    assert load_recipe(tmp_path / "b.yaml")[0].options.symmetric is False
    with pytest.raises(PipelineError, match="needs a 'pass' key"):
        load_recipe(tmp_path / "c.yaml")


def test_checks_run_before_any_pass(module: Module) -> None:
    ran = []
    calls = parse_pipeline("quantize{bits=4,group=32},quantize{bits=4,group=48}")
    with pytest.raises(PipelineError, match="does not divide K=64"):
        run_pipeline(module, calls, hooks=Hooks(printer=lambda name, m: ran.append(name), print_after=frozenset({"all"})))
    assert ran == []


def test_hooks_print_verify_and_time(module: Module) -> None:
    printed: list[str] = []
    context = PassContext()
    out = run_pipeline(module, parse_pipeline("quantize{bits=4,group=32}"), context,
                       Hooks(print_after=frozenset({"quantize"}), printer=lambda name, m: printed.append(name)))
    assert out is not module and printed == [str(parse_pipeline("quantize{bits=4,group=32}")[0])]
    assert len(context.timings) == 1 and context.timings[0][1] >= 0
    with pytest.raises(LlmcError, match="after pass test-break: invalid IR"):
        run_pipeline(module, parse_pipeline("test-break"))
    PASSES.pop("test-break")
