"""Helpers for the IR unit tests: one-node modules and a module that uses every registered op.

A plain module (not conftest.py) so tests can import it by name: ``from ir_fixtures import ...``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from llmc.ir import OPS, Builder, Function, Module, TensorType, run_function, verify_module


def one_node(op: str, in_types: Sequence[TensorType], attrs: dict[str, Any] | None = None) -> Module:
    """A verified module whose function @f applies ``op`` to inputs %a0, %a1, ... and returns it."""
    module = Module("t")
    func = Function("f")
    b = Builder(module, func)
    ins = [b.input(f"a{i}", t) for i, t in enumerate(in_types)]
    results = OPS[op].num_results
    b.ret(*b.op_multi(op, ins, attrs or {}, ["out"] if results == 1 else [f"out{i}" for i in range(results)]))
    module.functions["f"] = func
    verify_module(module)
    return module


def run1(op: str, in_types: Sequence[TensorType], arrays: Sequence[np.ndarray], attrs: dict[str, Any] | None = None):
    """Run a one-node module and return its single result."""
    module = one_node(op, in_types, attrs)
    return run_function(module, "f", {f"a{i}": a for i, a in enumerate(arrays)})["out"]


def run_op(op: str, in_types: Sequence[TensorType], arrays: Sequence[np.ndarray], attrs: dict[str, Any] | None = None):
    """Run a one-node module and return its results in order."""
    out = run_function(one_node(op, in_types, attrs), "f", {f"a{i}": a for i, a in enumerate(arrays)})
    return list(out.values())


def fill_params(module: Module, rng: np.random.Generator) -> None:
    """Random data for every parameter without data: small normals for floats, the full range
    for integers."""
    for p in module.params.values():
        if p.data is not None:
            continue
        if p.type.dtype.is_float:
            data = rng.standard_normal(p.type.static_shape()) * 0.3
        else:
            lo, hi = p.type.dtype.int_range()
            data = rng.integers(lo, hi + 1, p.type.static_shape())
        p.data = data.astype(p.type.dtype.numpy())


def build_every_op_module() -> Module:
    """A verified module whose function @step.v1 uses every registered op at least once.

    Inputs: ``%ids`` [1, L] i64, ``%x`` [1, L, 8] f32, ``%mask`` [1, 1, L, P+L] f32 and a KV cache
    ``%past.k`` [1, 2, P, 4] f32, so symbols L and P are both bound.
    """
    from llmc.ir import F32, I32, I64, Param
    from llmc.ir.types import Dim

    module = Module("every-op", attrs={"arch": "test", "n_layers": 1})
    for name, shape in [("model.embed.weight", [16, 8]), ("model.proj.weight", [8, 8]), ("model.proj.bias", [8]),
                        ("model.norm.weight", [8]), ("model.norm.bias", [8])]:
        module.params[name] = Param(name, TensorType.of(shape, F32))
    from llmc.ir.types import F16, DType, QuantEncoding

    i4, u4, i8 = DType("int", 4), DType("uint", 4), DType("int", 8)
    for name, type_ in [
        ("model.q.codes", TensorType.of([8, 8], i4, (QuantEncoding(4, 4),))),
        ("model.q.scales", TensorType.of([8, 2], F16)),
        ("model.a.codes", TensorType.of([8, 8], u4, (QuantEncoding(4, 4, F16, False, u4),))),
        ("model.a.zeros", TensorType.of([8, 2], u4)),
        ("model.m.codes", TensorType.of([8, 8], u4, (QuantEncoding(4, 4, F16, False, None, F16),))),
        ("model.m.mins", TensorType.of([8, 2], F16)),
        ("model.w8.codes", TensorType.of([8, 8], i8, (QuantEncoding(8, 0),))),
        ("model.w8.scales", TensorType.of([8, 1], F16)),
        ("model.lut.zeros", TensorType.of([8, 2], DType("uint", 8))),
    ]:
        module.params[name] = Param(name, type_)
    planes = np.arange(2 * 8 * 2, dtype=np.uint8).reshape(2, 8, 2) % 16  # 4-bit pattern indices
    module.params["model.lut.planes"] = Param("model.lut.planes", TensorType.of([2, 8, 2], DType("uint", 8)), planes)
    func = Function("step.v1")
    module.functions[func.name] = func
    b = Builder(module, func)
    L, P = Dim.sym("L"), Dim.sym("P")
    ids = b.input("ids", TensorType.of([1, L], I64))
    x = b.input("x", TensorType.of([1, L, 8], F32))
    mask = b.input("mask", TensorType.of([1, 1, L, P + L], F32))
    past = b.input("past.k", TensorType.of([1, 2, P, 4], F32))

    emb = b.op("embedding", [b.param("model.embed.weight"), ids], name="h.0")
    h = b.op("add", [emb, x])
    h = b.op("layer_norm", [h, b.param("model.norm.weight"), b.param("model.norm.bias")], {"eps": 1e-5})
    h = b.op("layer_norm", [h], {"eps": 1e-6})
    h = b.op("rms_norm", [h, b.param("model.norm.weight")], {"eps": 1e-6})
    h = b.op("linear", [h, b.param("model.proj.weight"), b.param("model.proj.bias")])
    h = b.op("linear", [h, b.param("model.proj.weight")])
    # quantized arithmetic: weight dequantization (symmetric, with zero points, with minimums), int8 linear
    scales = b.param("model.q.scales")
    h = b.op("linear", [h, b.op("dequantize", [b.param("model.q.codes"), scales], {"group": 4})])
    wa = b.op("dequantize", [b.param("model.a.codes"), scales, b.param("model.a.zeros")], {"group": 4})
    h = b.op("linear", [h, wa])
    wm = b.op("dequantize_min", [b.param("model.m.codes"), scales, b.param("model.m.mins")], {"group": 4})
    h = b.op("linear", [h, wm])
    xq, xs = b.op_multi("quantize_dynamic", [h], {"bits": 8})
    h = b.op("qlinear", [xq, xs, b.param("model.w8.codes"), b.param("model.w8.scales")], {"group": 0})
    h = b.op("fake_quant", [h], {"bits": 4, "group": 4})
    tables = b.op_multi("lut_precompute", [h], {"g": 4})
    lut = [b.param("model.lut.planes"), b.param("model.q.scales"), b.param("model.lut.zeros")]
    h = b.op("lut_gemm", [*tables, *lut], {"bits": 2, "group": 4})
    int8_tables = b.op_multi("lut_precompute", [h], {"g": 4, "table_bits": 8})
    h = b.op("lut_gemm", [*int8_tables, *lut], {"bits": 2, "group": 4})
    # elementwise: a positive operand for log/sqrt/pow
    pos = b.op("add", [b.op("abs", [h]), b.constant(1.0, F32)])
    for op in ["exp", "log", "sqrt", "rsqrt", "reciprocal", "tanh", "sigmoid", "silu", "erf", "cos", "sin", "gelu",
               "gelu_tanh", "neg", "relu"]:
        pos = b.op(op, [pos])
    pos = b.op("add", [b.op("abs", [pos]), b.constant(1.0, F32)])  # >= 1: a safe divisor
    for op in ["sub", "mul", "div", "maximum", "minimum"]:
        h = b.op(op, [h, pos])
    h = b.op("pow", [b.op("add", [b.op("abs", [h]), b.constant(0.5, F32, [1])]), b.constant(2.0, F32)])
    conds = [b.op(op, [h, pos]) for op in ["eq", "ne", "lt", "le", "gt", "ge"]]
    cond = b.op("logical_and", [conds[0], conds[1]])
    for c in conds[2:]:
        cond = b.op("logical_or", [cond, c])
    cond = b.op("logical_not", [cond])
    h = b.op("where", [cond, h, pos])
    h = b.op("mul", [h, b.op("cast", [b.op("cast", [cond], {"dtype": I32})], {"dtype": F32})])
    # reductions and softmax
    s = b.op("reduce_sum", [h], {"axes": [-1], "keepdim": True})
    s = b.op("add", [s, b.op("reduce_mean", [h], {"axes": [2], "keepdim": True})])
    s = b.op("add", [s, b.op("reduce_max", [h], {"axes": [-1], "keepdim": True})])
    s = b.op("sub", [s, b.op("reduce_min", [h], {"axes": [2], "keepdim": True})])
    h = b.op("softmax", [b.op("add", [h, s])], {"axis": -1})
    h = b.op("cumsum", [h], {"axis": 1})
    # attention over the cache: q [1, 2, L, 4], k/v [1, 2, P+L, 4]
    q = b.op("transpose", [b.op("reshape", [h], {"shape": [1, L, 2, 4]})], {"perm": [0, 2, 1, 3]})
    k = b.op("concat", [past, q], {"axis": 2}, name="present.k")
    inv_freq = b.constant([1.0, 0.01], F32, [2])
    rope_pos = b.op("reshape", [b.op("iota", [], {"start": P, "end": P + L, "dtype": I64})], {"shape": [1, L]})
    q = b.op("rope", [q, rope_pos, inv_freq], {"seq_axis": -2})
    windowed = b.op("sliding_window_mask", [mask, rope_pos], {"window": 2})
    att = b.op("attention", [q, k, k, windowed], {"scale": 0.5})
    att = b.op("attention", [att, k, k])
    h = b.op("reshape", [b.op("transpose", [att], {"perm": [0, 2, 1, 3]})], {"shape": [1, L, 8]})
    # data movement
    first = b.op("slice", [h], {"axis": 1, "start": 0, "end": 1})
    h = b.op("add", [h, b.op("expand", [first], {"shape": [1, L, 8]})])
    idx = b.op("iota", [], {"start": 0, "end": 8, "step": 2, "dtype": I64})
    h = b.op("gather", [h, idx], {"axis": -1})  # [1, L, 4]
    experts = b.constant([float(v % 5) / 10 for v in range(4 * 8)], F32, [4, 8])
    mixed = b.op("moe", [b.op("reshape", [h], {"shape": [L, 4]}), b.constant([0.1] * 8, F32, [2, 4]),
                         b.op("reshape", [experts], {"shape": [2, 4, 4]}),
                         b.constant([float(v % 3) / 10 for v in range(16)], F32, [2, 4, 2])],
                 {"top_k": 1, "normalize": True})
    h = b.op("add", [h, b.op("reshape", [mixed], {"shape": [1, L, 4]})])
    top, top_idx = b.op_multi("topk", [h], {"k": 2, "axis": -1})  # a router's choice: [1, L, 2] twice
    h = b.op("add", [h, b.op("reduce_sum", [top], {"axes": [-1], "keepdim": True})])
    h = b.op("add", [h, b.op("cast", [b.op("reduce_sum", [top_idx], {"axes": [-1], "keepdim": True})], {"dtype": F32})])
    pos_ids = b.op("iota", [], {"start": P, "end": P + L, "dtype": I64}, name="pos.ids")
    h = b.op("add", [h, b.op("cast", [b.op("reshape", [pos_ids], {"shape": [1, L, 1]})], {"dtype": F32})])
    scores = b.op("matmul", [h, b.op("transpose", [h], {"perm": [0, 2, 1]})], name="scores")
    table = b.constant([0.0, 1.0, 2.0, -3.5], F32, [2, 2])
    b.ret(scores, k, b.op("reduce_sum", [table], {"axes": [0, 1]}, name="total"))
    _add_hw_function(module)
    verify_module(module)
    return module


def _add_hw_function(module: Module) -> None:
    """Function @hw over T tokens: every accelerator op, with parameters in their legal ranges."""
    from llmc.ir import F32, I32, Param
    from llmc.ir.types import F16, Dim, DType

    rng = np.random.default_rng(7)
    i4, u4 = DType("int", 4), DType("uint", 4)
    angles = np.arange(16)[:, None] * np.array([1.0, 0.01])[None, :]
    for name, dtype, data in [
        ("hw.table", F16, rng.standard_normal((16, 8))),
        ("hw.norm", F32, 1 + 0.1 * rng.standard_normal(8)),
        ("hw.codes", i4, rng.integers(-7, 8, (8, 8))),
        ("hw.scales", I32, rng.integers(1, 1 << 12, (8, 2))),
        ("hw.ucodes", u4, rng.integers(0, 16, (8, 8))),
        ("hw.zeros", DType("int", 16), rng.integers(0, 16, (8, 2))),
        ("hw.mins", I32, rng.integers(-1 << 16, 1 << 16, (8, 2))),
        ("hw.bias", I32, rng.integers(-1 << 16, 1 << 16, 8)),
        ("hw.cos", I32, np.rint(np.cos(angles) * 2.0**30)),
        ("hw.sin", I32, np.rint(np.sin(angles) * 2.0**30)),
        ("hw.smooth", F32, 1 + 0.1 * rng.standard_normal(8)),
        ("hw.router", i4, rng.integers(-7, 8, (3, 8))),
        ("hw.rscales", I32, rng.integers(1, 1 << 12, (3, 2))),
        ("hw.experts", i4, rng.integers(-7, 8, (3, 8, 8))),
        ("hw.escales", I32, rng.integers(1, 1 << 12, (3, 8, 2))),
    ]:
        module.params[name] = Param(name, TensorType.of(list(data.shape), dtype), data.astype(dtype.numpy()))
    func = Function("hw")
    module.functions[func.name] = func
    b = Builder(module, func)
    T = Dim.sym("T")
    ids = b.input("ids", TensorType.of([T], I32))
    pos = b.input("pos", TensorType.of([T], I32))
    h = b.op("hw_rms_norm", [b.op("hw_embed", [b.param("hw.table"), ids]), b.param("hw.norm")], {"eps": 1e-5})
    m = b.op("hw_matmul", [h, b.param("hw.codes"), b.param("hw.scales")], {"group": 4, "shift": 16, "scale_bits": 20})
    m2 = b.op("hw_matmul", [h, b.param("hw.ucodes"), b.param("hw.scales"), b.param("hw.zeros"), b.param("hw.bias")],
              {"group": 4, "shift": 16, "scale_bits": 20, "engine": "lut", "has_zero": True, "has_bias": True})
    m3 = b.op("hw_matmul", [h, b.param("hw.codes"), b.param("hw.scales"), b.param("hw.mins"), b.param("hw.bias")],
              {"group": 4, "shift": 16, "scale_bits": 20, "has_min": True, "has_bias": True})
    m = b.op("hw_add", [m, m3])
    q = b.op("hw_rope", [m, pos, b.param("hw.cos"), b.param("hw.sin")], {"head_dim": 4})
    kc, ks = b.op_multi("hw_quant8", [q], {"group": 4})
    att = b.op("hw_attention", [q, kc, ks, kc, ks], {"heads": 2, "kv_heads": 2, "head_dim": 4, "scale": 0.5})
    a = b.op("hw_act", [b.op("hw_act", [att], {"fn": "silu"})], {"fn": "relu"})
    a = b.op("hw_scale", [b.op("hw_add", [b.op("hw_mul", [a, m2]), m]), b.param("hw.smooth")])
    a = b.op("hw_layer_norm", [a, b.param("hw.norm"), b.param("hw.smooth")], {"eps": 1e-5})
    logits = b.op("hw_matmul", [a, b.param("hw.router"), b.param("hw.rscales")], {"group": 4, "shift": 16, "scale_bits": 20})
    route = b.op("hw_route", [logits], {"top_k": 2, "normalize": True})
    e = b.op("hw_expert_matmul", [a, route, b.param("hw.experts"), b.param("hw.escales")],
             {"slot": 1, "group": 4, "shift": 16, "scale_bits": 20})
    a = b.op("hw_add", [a, b.op("hw_weigh", [e, route], {"slot": 1})])
    a = b.op("hw_send", [a], {"slot": 0})  # to @hw_card (llmc.ir.cluster.run_cluster runs the two)
    b.ret(b.op("hw_to_float", [a], name="out"))
    card = Function("hw_card")
    module.functions[card.name] = card
    b = Builder(module, card)
    pos = b.input("pos", TensorType.of([T], I32))
    b.ret(b.op("hw_to_float", [b.op("hw_recv", [pos], {"slot": 0, "cols": 8})], name="received"))
