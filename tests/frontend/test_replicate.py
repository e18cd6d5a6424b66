"""A shapes-only import traces two blocks and copies them: the IR equals the full trace's (the
import of the same config with weights) up to the names of intermediate values."""

from __future__ import annotations

from typing import Any

import pytest

import llmc
from llmc.compiler.frontend import hf
from llmc.ir import Module

SMALL = dict(hidden_size=64, intermediate_size=128, num_attention_heads=4, vocab_size=256,
             max_position_embeddings=128)


def canonical(module: Module) -> tuple:
    """``module.structure()`` with intermediate values renamed in order of definition (inputs,
    outputs and parameters keep their names)."""
    names: dict[int, str] = {}
    funcs = []
    for f in module.functions.values():
        for v in f.inputs:
            names[id(v)] = v.name
        for n in f.nodes:
            for v in n.outputs:
                names[id(v)] = v.name if n.op == "param" or v in f.outputs else f"v{len(names)}"
        funcs.append((f.name, [(names[id(v)], v.type) for v in f.inputs],
                      [(n.op, [names[id(v)] for v in n.inputs], [(names[id(v)], v.type) for v in n.outputs],
                        sorted(n.attrs.items(), key=repr)) for n in f.nodes],
                      [names[id(v)] for v in f.outputs]))
    return module.attrs, [(p.name, p.type) for p in module.params.values()], funcs


@pytest.fixture
def traced(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The depth of every model ``torch.export`` traces."""
    depths: list[int] = []
    export = hf.export_step
    monkeypatch.setattr(hf, "export_step", lambda model, n, shape=None: depths.append(model.config.num_hidden_layers)
                        or export(model, n, shape))
    return depths


def both(arch: str, **config: Any) -> tuple[Module, Module]:
    values = {**SMALL, **config}
    shapes = llmc.load(arch, config=values, shapes_only=True, max_length=128).module
    full = llmc.load(arch, config=values, seed=0, max_length=128).module
    return shapes, full


@pytest.mark.parametrize("arch, config", [
    ("llama", dict(num_hidden_layers=3, num_key_value_heads=2)),
    pytest.param("qwen2", dict(num_hidden_layers=4, num_key_value_heads=2, tie_word_embeddings=True),
                 marks=pytest.mark.slow),
    pytest.param("mistral", dict(num_hidden_layers=3, num_key_value_heads=1), marks=pytest.mark.slow),
])
def test_shapes_only_import_equals_the_full_trace(arch: str, config: dict, traced: list[int]) -> None:
    shapes, full = both(arch, **config)
    assert traced == [2, config["num_hidden_layers"]]
    assert not shapes.has_weights and full.has_weights
    assert canonical(shapes) == canonical(full)
    layers = config["num_hidden_layers"]
    decode = shapes.functions["decode"]
    assert [v.name for v in decode.outputs] == ["logits"] + [f"{kv}_{i}" for i in range(layers) for kv in "kv"]
    assert len({v.name for n in decode.nodes for v in n.outputs}) == sum(len(n.outputs) for n in decode.nodes)


def test_blocks_of_different_kinds_are_traced_whole(traced: list[int]) -> None:
    shapes, full = both("qwen2", num_hidden_layers=4, num_key_value_heads=2, use_sliding_window=True,
                        max_window_layers=2)
    assert traced == [4, 4] and canonical(shapes) == canonical(full)


def test_blocks_that_trace_differently_fall_back_to_the_full_trace(traced: list[int]) -> None:
    shapes, full = both("gpt2", n_layer=3, n_head=4, n_embd=64, bos_token_id=0, eos_token_id=0)
    assert traced == [2, 3, 3] and canonical(shapes) == canonical(full)
