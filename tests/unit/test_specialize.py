"""specialize (P=0 prefill, L=1 decode), dce and prune_params."""

from __future__ import annotations

import numpy as np
import pytest
from ir_fixtures import build_every_op_module, fill_params

from llmc.compiler.passes.cleanup import dce, prune_params
from llmc.compiler.passes.specialize import specialize
from llmc.ir import (
    F32,
    I64,
    Builder,
    Dim,
    Function,
    Module,
    Param,
    TensorType,
    parse_module,
    print_module,
    run_function,
    verify_module,
)

L, P = Dim.sym("L"), Dim.sym("P")


def _step_module() -> Module:
    """@step(%x [1, L], %cache [1, P]): %kv = concat(%cache, %x), %o = reshape(%x, [L, 1]) + sum(%kv)."""
    module = Module("m")
    module.params["w"] = Param("w", TensorType.of([1], F32), np.array([0.5], np.float32))
    func = Function("step")
    b = Builder(module, func)
    x = b.input("x", TensorType.of([1, L], F32))
    cache = b.input("cache", TensorType.of([1, P], F32))
    kv = b.op("concat", [cache, x], {"axis": 1}, name="kv")
    y = b.op("reshape", [x], {"shape": [L, 1]}, name="y")
    s = b.op("reduce_sum", [kv], {"axes": [1], "keepdim": True}, name="s")
    pos = b.op("iota", [], {"start": P, "end": P + L, "dtype": I64}, name="pos")
    o = b.op("add", [b.op("add", [y, s]), b.op("cast", [b.op("reshape", [pos], {"shape": [L, 1]})], {"dtype": F32})])
    o = b.op("mul", [o, b.param("w")], name="o")
    b.ret(kv, o)
    module.functions["step"] = func
    verify_module(module)
    return module


def _run(module: Module, name: str, x: np.ndarray, cache: np.ndarray) -> dict[str, np.ndarray]:
    inputs = {"x": x, "cache": cache}
    return run_function(module, name, {v.name: inputs[v.name] for v in module.functions[name].inputs})


def _add(module: Module, func: Function) -> Module:
    module.functions[func.name] = func
    verify_module(module)
    assert parse_module(print_module(module)) == module
    return module


def test_prefill_drops_empty_cache_and_concat():
    module = _step_module()
    prefill = specialize(module.functions["step"], {"P": 0}, "prefill")
    _add(module, prefill)
    assert prefill.name == "prefill"
    assert [v.name for v in prefill.inputs] == ["x"]
    assert [v.name for v in prefill.outputs] == ["kv", "o"]
    assert "concat" not in {n.op for n in prefill.nodes}
    assert prefill.outputs[0].type == TensorType.of([1, L], F32)
    iota = next(n for n in prefill.nodes if n.op == "iota")
    assert iota.attrs["start"] == 0 and iota.attrs["end"] == L
    # the original is untouched
    assert [v.name for v in module.functions["step"].inputs] == ["x", "cache"]
    assert any(n.op == "concat" for n in module.functions["step"].nodes)
    rng = np.random.default_rng(0)
    for length in (1, 4):
        x = rng.standard_normal((1, length)).astype(np.float32)
        want = _run(module, "step", x, np.zeros((1, 0), np.float32))
        got = _run(module, "prefill", x, np.zeros((1, 0), np.float32))
        assert got.keys() == want.keys()
        for k in want:
            np.testing.assert_array_equal(got[k], want[k])


def test_decode_substitutes_types_and_attributes():
    module = _step_module()
    decode = specialize(module.functions["step"], {"L": 1}, "decode")
    _add(module, decode)
    assert [(v.name, str(v.type)) for v in decode.inputs] == [("x", "tensor<1x1xf32>"), ("cache", "tensor<1xPxf32>")]
    reshape = next(n for n in decode.nodes if n.op == "reshape" and n.inputs[0].name == "x")
    assert reshape.attrs["shape"] == [1, 1] and all(type(d) is int for d in reshape.attrs["shape"])
    assert str(reshape.output.type) == "tensor<1x1xf32>"
    iota = next(n for n in decode.nodes if n.op == "iota")
    assert iota.attrs["start"] == P and iota.attrs["end"] == P + 1
    kv = next(n for n in decode.nodes if n.op == "concat")
    assert str(kv.output.type) == "tensor<1xP+1xf32>"
    rng = np.random.default_rng(1)
    for past in (0, 3):
        x = rng.standard_normal((1, 1)).astype(np.float32)
        cache = rng.standard_normal((1, past)).astype(np.float32)
        want, got = _run(module, "step", x, cache), _run(module, "decode", x, cache)
        for k in want:
            np.testing.assert_array_equal(got[k], want[k])


def test_specialize_to_another_symbol():
    module = _step_module()
    func = specialize(module.functions["step"], {"L": 2 * Dim.sym("M"), "P": Dim.sym("M")}, "even")
    _add(module, func)
    assert str(func.outputs[0].type) == "tensor<1x3*Mxf32>"
    x = np.arange(4, dtype=np.float32)[None]
    want, got = _run(module, "step", x, x[:, :2]), _run(module, "even", x, x[:, :2])
    for k in want:
        np.testing.assert_array_equal(got[k], want[k])


def test_every_op_module_specialises_to_prefill_and_decode():
    module = build_every_op_module()
    rng = np.random.default_rng(2)
    fill_params(module, rng)
    step = module.functions["step.v1"]
    _add(module, dce(specialize(step, {"P": 0}, "prefill")))
    _add(module, dce(specialize(step, {"L": 1}, "decode")))
    assert [v.name for v in module.functions["prefill"].inputs] == ["ids", "x", "mask"]
    assert [v.name for v in module.functions["prefill"].outputs] == ["scores", "present.k", "total"]
    assert str(module.functions["prefill"].inputs[2].type) == "tensor<1x1xLxLxf32>"
    assert str(module.functions["decode"].inputs[2].type) == "tensor<1x1x1xP+1xf32>"
    for name, length, past in [("prefill", 3, 0), ("decode", 1, 2)]:
        inputs = {
            "ids": rng.integers(0, 16, (1, length)),
            "x": rng.standard_normal((1, length, 8)).astype(np.float32),
            "mask": rng.standard_normal((1, 1, length, past + length)).astype(np.float32),
            "past.k": rng.standard_normal((1, 2, past, 4)).astype(np.float32),
        }
        want = run_function(module, "step.v1", inputs)
        func = module.functions[name]
        got = run_function(module, name, {v.name: inputs[v.name] for v in func.inputs})
        assert got.keys() == want.keys()
        for k in want:
            np.testing.assert_array_equal(got[k], want[k])


def test_folded_concat_of_a_node_output_takes_its_name():
    module = Module("m")
    func = Function("f")
    b = Builder(module, func)
    x = b.input("x", TensorType.of([1, L], F32))
    cache = b.input("cache", TensorType.of([1, P], F32))
    h = b.op("neg", [x], name="h")
    b.ret(b.op("concat", [cache, h], {"axis": -1}, name="kv"))
    module.functions["f"] = func
    out = specialize(func, {"P": 0}, "g")
    _add(module, out)
    assert [(n.op, n.output.name) for n in out.nodes] == [("neg", "kv")]
    assert [v.name for v in out.outputs] == ["kv"]


@pytest.mark.parametrize("order", ["kv_first", "h_first"])
def test_folded_concat_and_its_operand_both_returned(order):
    """Returning both the concat and the operand it folds to must keep both names."""
    module = Module("m")
    func = Function("f")
    b = Builder(module, func)
    x = b.input("x", TensorType.of([1, L], F32))
    cache = b.input("cache", TensorType.of([1, P], F32))
    h = b.op("neg", [x], name="h")
    kv = b.op("concat", [cache, h], {"axis": 1}, name="kv")
    b.ret(*((kv, h) if order == "kv_first" else (h, kv)))
    module.functions["f"] = func
    out = specialize(func, {"P": 0}, "g")
    _add(module, out)
    names = [v.name for v in func.outputs]
    assert [v.name for v in out.outputs] == names
    xs = np.array([[1.0, -2.0]], np.float32)
    got = run_function(module, "g", {"x": xs})
    want = run_function(module, "f", {"x": xs, "cache": np.zeros((1, 0), np.float32)})
    for k in names:
        np.testing.assert_array_equal(got[k], want[k])


def test_returned_input_folded_concat_keeps_name():
    module = Module("m")
    func = Function("f")
    b = Builder(module, func)
    x = b.input("x", TensorType.of([1, L], F32))
    cache = b.input("cache", TensorType.of([1, P], F32))
    b.ret(b.op("concat", [cache, x], {"axis": 1}, name="kv"), x)
    module.functions["f"] = func
    out = specialize(func, {"P": 0}, "g")
    _add(module, out)
    assert [v.name for v in out.outputs] == ["kv", "x"]
    got = run_function(module, "g", {"x": np.ones((1, 3), np.float32)})
    np.testing.assert_array_equal(got["kv"], np.ones((1, 3), np.float32))


def test_concat_operand_empty_in_another_dim_is_kept():
    """Only operands empty along the concat axis may be dropped: [P, 2] ++ [P, 3] at P=0 is [0, 5]."""
    module = Module("m")
    func = Function("f")
    b = Builder(module, func)
    a = b.input("a", TensorType.of([P, 2], F32))
    c = b.input("c", TensorType.of([P, 3], F32))
    b.ret(b.op("concat", [a, c], {"axis": 1}, name="out"))
    module.functions["f"] = func
    out = specialize(func, {"P": 0}, "g")
    _add(module, out)
    assert out.outputs[0].type == TensorType.of([0, 5], F32)


def test_empty_input_still_used_is_kept():
    module = Module("m")
    func = Function("f")
    b = Builder(module, func)
    x = b.input("x", TensorType.of([P], F32))
    b.ret(b.op("neg", [x], name="y"))
    module.functions["f"] = func
    out = specialize(func, {"P": 0})
    assert out.name == "f" and [v.name for v in out.inputs] == ["x"]


def test_dce_removes_dead_nodes_only():
    module = Module("m")
    module.params["w"] = Param("w", TensorType.of([2], F32))
    func = Function("f")
    b = Builder(module, func)
    x = b.input("x", TensorType.of([2], F32))
    unused_input = b.input("u", TensorType.of([2], F32))
    dead = b.op("exp", [x], name="dead")
    b.op("add", [dead, b.param("w")], name="dead2")  # dead chain through a param
    live = b.op("neg", [x], name="live")
    y = b.op("mul", [live, live], name="y")
    b.ret(y)
    module.functions["f"] = func
    before = len(func.nodes)
    assert dce(func) is func
    assert [n.output.name for n in func.nodes] == ["live", "y"]
    assert len(func.nodes) == before - 3
    assert func.inputs[1] is unused_input  # dce touches nodes only
    verify_module(module)
    assert [n.output.name for n in dce(func).nodes] == ["live", "y"]  # idempotent


def test_prune_params():
    module = Module("m")
    for name in ("used", "dead", "never"):
        module.params[name] = Param(name, TensorType.of([2], F32))
    func = Function("f")
    b = Builder(module, func)
    x = b.input("x", TensorType.of([2], F32))
    b.op("add", [x, b.param("dead")])
    b.ret(b.op("add", [x, b.param("used")]))
    module.functions["f"] = func
    assert set(prune_params(module).params) == {"used", "dead"}  # 'dead' still has a param node
    prune_params(dce(module.functions["f"]) and module)
    assert list(module.params) == ["used"]
    verify_module(module)


def test_prune_params_counts_every_function():
    module = Module("m")
    for name in ("a", "b"):
        module.params[name] = Param(name, TensorType.of([2], F32))
    for fname, pname in (("f", "a"), ("g", "b")):
        func = Function(fname)
        b = Builder(module, func)
        b.ret(b.op("neg", [b.param(pname)]))
        module.functions[fname] = func
    assert list(prune_params(module).params) == ["a", "b"]
    del module.functions["g"]
    assert list(prune_params(module).params) == ["a"]
