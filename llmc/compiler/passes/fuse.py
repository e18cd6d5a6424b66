"""``fuse``: the frontends' primitive ops become one op per concept (``rms_norm``, ``rope``,
``silu``, ``gelu_tanh``, ``sliding_window_mask``, ``attention``, ``moe``), so that passes and
backends see them whatever family or exporter wrote them; fused projections become one layer per
operand.

Each rule is a pattern over the primitive form transformers' modules trace to (docs/ir.md lists
them); :func:`fuse_function` runs the tables to a fixpoint with :mod:`llmc.compiler.passes.rewrite`.
A fused op's reference computes what the primitives did in the same float32 order of operations,
to rounding.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from llmc.compiler.passes.causal_mask import causal_window, contract_mask, contract_positions
from llmc.compiler.passes.cleanup import prune_params
from llmc.compiler.passes.rewrite import Const, Graph, Match, Op, Rule, Var, op, rewrite
from llmc.compiler.pipeline import NoOptions, PassContext, register_pass
from llmc.ir.builder import Builder
from llmc.ir.graph import Function, Module, Param, Value
from llmc.ir.types import Dim, TensorType

X, W = Var("x"), Var("w")

# RMSNorm: w * (x * rsqrt(mean(x^2) + eps)), the inverse square root also as reciprocal(sqrt(.)) (ONNX
# exports) or 1 / sqrt(.); Gemma's w is (1 + weight), any vector of x's width
_VARIANCE = op("add", op("reduce_mean", op("pow", X, Const(value=2.0)), bind="mean"), Const("eps"))
_NORMED = tuple(op("mul", X, inverse) for inverse in (
    op("rsqrt", _VARIANCE), op("reciprocal", op("sqrt", _VARIANCE)), op("div", Const(value=1.0), op("sqrt", _VARIANCE))))


def _rms_norm(m: Match, b: Builder) -> Value | None:
    x, w, mean = m["x"], m["w"], m.nodes["mean"].attrs
    if (w.type.shape != (x.type.shape[-1],) or w.type.dtype != x.type.dtype or not mean.get("keepdim", False)
            or [a % x.type.rank for a in mean["axes"]] != [x.type.rank - 1]):
        return None
    return b.op("rms_norm", [x, w], {"eps": _f32_literal(m.consts["eps"])})


def _f32_literal(value: float) -> float:
    """The shortest number that rounds to ``value``'s float32 (ops compute in float32): an exporter's
    ``float32(1e-6)`` is ``1e-06`` again."""
    return float(str(np.float32(value)))


def _silu(m: Match, b: Builder) -> Value:
    return b.op("silu", [m["x"]])


# RoPE, rotate-half form: x * cos + concat(-x_hi, x_lo) * sin, with cos and sin of the angles
# concat(f, f), f = float(positions) * inv_freq, optionally scaled and unsqueezed to x's rank
_ROTATED = op("concat", op("neg", op("slice", X, bind="hi")), op("slice", X, bind="lo"))
_ROPE = op("add", op("mul", X, Var("cos")), op("mul", _ROTATED, Var("sin")))
_ANGLES = Var("angles")
_REPEATED = op("concat", Var("f"), Var("f"), bind="emb")
_FREQS = op("mul", op("cast", op("reshape", Var("positions"))), Var("inv_freq"))


def _trig(fn: str) -> list[Op]:
    scaled = op("mul", op(fn, _ANGLES), Const("scale"))
    return [op("reshape", scaled), op("reshape", op(fn, _ANGLES)), scaled, op(fn, _ANGLES)]


_COS, _SIN = _trig("cos"), _trig("sin")


def _rope(m: Match, b: Builder) -> Value | None:
    x = m["x"]
    width = x.type.shape[-1]
    if x.type.rank < 3 or not width.is_static or width.value % 2:
        return None
    half = width.value // 2
    if not (_is_slice(m.nodes["lo"].attrs, x.type.rank, 0, half) and
            _is_slice(m.nodes["hi"].attrs, x.type.rank, half, width.value)):
        return None
    graph = Graph(b.func)
    cos = next((found for p in _COS if (found := graph.match(p, m["cos"])) is not None), None)
    sin = next((found for p in _SIN if (found := graph.match(p, m["sin"])) is not None), None)
    if cos is None or sin is None or cos["angles"] is not sin["angles"]:
        return None
    scale = cos.consts.get("scale", 1.0)
    if sin.consts.get("scale", 1.0) != scale:
        return None
    angles = graph.match(_REPEATED, cos["angles"])
    if angles is None or angles.nodes["emb"].attrs["axis"] % cos["angles"].type.rank != cos["angles"].type.rank - 1:
        return None
    freqs = graph.match(_FREQS, angles["f"])
    if freqs is None:
        return None
    positions, inv_freq = freqs["positions"], freqs["inv_freq"]
    if positions.type.rank != 2 or inv_freq.type.shape != (Dim.of(half),) or not positions.type.dtype.is_int:
        return None
    seq_axis = _seq_axis(x.type.shape, m["cos"].type.shape, positions.type.shape[1])
    if seq_axis is None:
        return None
    return b.op("rope", [x, positions, inv_freq], {"seq_axis": seq_axis, "scale": scale})


def _is_slice(attrs: dict, rank: int, start: int, end: int) -> bool:
    return attrs["axis"] % rank == rank - 1 and attrs["start"] == start and attrs["end"] >= end and attrs.get("step", 1) == 1


def _seq_axis(x: tuple[Dim, ...], cos: tuple[Dim, ...], tokens: Dim) -> int | None:
    """The axis of x holding the tokens, where cos (of x's rank) has them and is 1 on the other
    middle axes; with one token and one head either choice computes the same."""
    if len(cos) != len(x):
        return None
    for axis in range(len(x) - 2, 0, -1):
        others = [cos[a] for a in range(1, len(x) - 1) if a != axis]
        if x[axis] == tokens and cos[axis] == tokens and all(d == Dim.of(1) for d in others):
            return axis - len(x)
    return None


# GELU, tanh approximation as GPT-2 writes it: 0.5 * x * (1 + tanh(sqrt(2/pi) * (x + 0.044715 * x^3)))
_GELU_TANH = op("mul", op("mul", X, Const(value=0.5)), op("add", op("tanh", op("mul", op("add", X, op(
    "mul", op("pow", X, Const(value=3.0)), Const(value=0.044715))), Const(value=math.sqrt(2 / math.pi)))), Const(value=1.0)))


def _gelu_tanh(m: Match, b: Builder) -> Value:
    return b.op("gelu_tanh", [m["x"]])


# a sliding window over the step's mask: where(positions - iota(S) >= window, lowest, mask)
_WINDOWED = op("where", op("ge", op("sub", op("reshape", Var("positions")), op("iota", bind="keys", start=0, step=1)),
                           Const("window")), Const("fill"), Var("mask"))


def _sliding_window_mask(m: Match, b: Builder) -> Value | None:
    mask, positions = m["mask"], m["positions"]
    lowest = float(np.finfo(mask.type.dtype.numpy()).min) if mask.type.dtype.is_float else None
    if (mask.type.rank != 4 or positions.type.rank != 2 or m.nodes["keys"].attrs["end"] != mask.type.shape[-1]
            or m.consts["fill"] != lowest or m.consts["window"] != int(m.consts["window"])):
        return None
    return b.op("sliding_window_mask", [mask, positions], {"window": int(m.consts["window"])})


# a scalar multiple of a linear layer's output: linear(x, w * c, b * c), the only use of the layer
_LINEAR = (op("linear", X, W, bind="linear"), op("linear", X, W, Var("b"), bind="linear"))


def _scaled_linear(factor: Callable[[float], float]) -> Callable[[Match, Builder], Value | None]:
    def build(m: Match, b: Builder) -> Value | None:
        if not _single_use(b, m["linear"]):
            return None
        c = np.float32(factor(m.consts["c"]))
        sources = [_param_behind(b, m[name]) for name in ("w", "b") if name in m.values]
        if None in sources:
            return None
        params = [_new_param(b, f"{p.name}.scaled", p.type, None if p.data is None else (p.data * c).astype(p.data.dtype))
                  for p in sources]  # type: ignore[union-attr]
        return b.op("linear", [m["x"], *params])

    return build


def _single_use(b: Builder, value: Value) -> bool:
    """``value`` has one user and is not a result of the function."""
    return len(b.func.users().get(value.name, ())) == 1 and value not in b.func.outputs


def _param_behind(b: Builder, value: Value) -> Param | None:
    """The module parameter a ``param`` node gives as ``value``, else None."""
    node = b.func.producers().get(value.name)
    return None if node is None or node.op != "param" else b.module.params[node.attrs["name"]]


def _new_param(b: Builder, name: str, type_: TensorType, data: np.ndarray | None) -> Value:
    """A new module parameter (``name``, with ``_`` appended while taken) read in the function."""
    while name in b.module.params:
        name += "_"
    b.module.params[name] = Param(name, type_, data)
    return b.param(name)


# a slice of a fused projection's columns (Phi-3's qkv_proj and gate_up_proj): the layer of those rows
def _split_linear(m: Match, b: Builder) -> Value | None:
    part = m.nodes["part"].attrs
    rank = m["linear"].type.rank
    users = b.func.users().get(m["linear"].name, ())
    if m["linear"] in b.func.outputs:
        return None
    if (part["axis"] % rank != rank - 1 or part.get("step", 1) != 1 or any(u.op != "slice" for u in users)
            or not all(isinstance(part[k], int) for k in ("start", "end"))):
        return None
    start = int(part["start"])
    end = min(int(part["end"]), m["linear"].type.shape[-1].value)
    params = [_param_rows(b, m[name], list(range(start, end)), f"rows{start}_{end}")
              for name in ("w", "b") if name in m.values]
    if None in params:
        return None
    return b.op("linear", [m["x"], *params])  # type: ignore[list-item]


def _param_rows(b: Builder, value: Value, rows: list[int], label: str) -> Value | None:
    """The parameter ``<base>.<label>.weight`` of ``rows`` of the parameter behind ``value`` (made
    once: the label names the rows), None if ``value`` is not a parameter."""
    source = _param_behind(b, value)
    if source is None:
        return None
    base = source.name.removesuffix(".weight").removesuffix(".bias")
    name = f"{base}.{label}{source.name[len(base):]}"
    if name in b.module.params:
        return b.param(name)
    data = None if source.data is None else np.ascontiguousarray(source.data[rows])
    return _new_param(b, name, source.type.with_shape([len(rows), *source.type.shape[1:]]), data)


# a parameter plus a scalar (Gemma's RMSNorm weight 1 + w) is a parameter
def _offset_param(m: Match, b: Builder) -> Value | None:
    source = _param_behind(b, m["w"])
    if source is None or not source.type.dtype.is_float:
        return None
    data = None if source.data is None else (source.data + np.float32(m.consts["c"])).astype(source.data.dtype)
    return _new_param(b, f"{source.name}.offset", source.type, data)


# GPT-2's Conv1D flattens the tokens for its addmm and restores them: a linear layer of the tokens
_FLATTENED = tuple(op("reshape", op("linear", op("reshape", X), *rest, bind="linear"), bind="restored")
                   for rest in ((W,), (W, Var("b"))))


def _flat_linear(m: Match, b: Builder) -> Value | None:
    x, restored = m["x"], m["restored"]
    if x.type.shape[:-1] != restored.type.shape[:-1] or not _single_use(b, m["linear"]):
        return None
    return b.op("linear", [x, *(m[name] for name in ("w", "b") if name in m.values)])


# GPT-NeoX's fused projection holds each head's q, k and v side by side: a slice of every head's
# columns is the layer of those rows of every head
_HEAD_VIEWS = tuple(op("slice", op("transpose", op("reshape", lin, bind="heads"), bind="perm"), bind="part")
                    for lin in _LINEAR)


def _split_heads(m: Match, b: Builder) -> Value | None:
    heads, part = m["heads"], m.nodes["part"].attrs
    shape = heads.type.shape
    if (heads.type.rank != 4 or not shape[3].is_static or part["axis"] % 4 != 3 or part.get("step", 1) != 1
            or m.nodes["perm"].attrs["perm"] != [0, 2, 1, 3] or not shape[2].is_static
            or not _single_use(b, m["linear"]) or not _single_use(b, heads)
            or any(u.op != "slice" for u in b.func.users().get(m["perm"].name, ()))):
        return None
    width, count = shape[3].value, shape[2].value
    start, end = int(part["start"]), min(int(part["end"]), width)
    rows = [h * width + j for h in range(count) for j in range(start, end)]
    params = [_param_rows(b, m[name], rows, f"heads{start}_{end}") for name in ("w", "b") if name in m.values]
    if None in params:
        return None
    y = b.op("linear", [m["x"], *params])  # type: ignore[list-item]
    y = b.op("reshape", [y], {"shape": [*shape[:3], end - start]})
    return b.op("transpose", [y], {"perm": [0, 2, 1, 3]})


# partial rotary (GPT-NeoX, Phi): the first r columns of each head rotated, the rest passed through
_PARTIAL_ROPE = op("concat", op("rope", op("slice", X, bind="rotated"), Var("positions"), Var("inv_freq"), bind="rope"),
                   op("slice", X, bind="passed"), bind="concat")


def _partial_rope(m: Match, b: Builder) -> Value | None:
    x, rope = m["x"], m.nodes["rope"].attrs
    rank, width = x.type.rank, x.type.shape[-1]
    rotated = m["rotated"].type.shape[-1]
    if (rope.get("rotary_dim", 0) or not width.is_static or not rotated.is_static
            or m.nodes["concat"].attrs["axis"] % rank != rank - 1
            or not _is_slice(m.nodes["rotated"].attrs, rank, 0, rotated.value)
            or not _is_slice(m.nodes["passed"].attrs, rank, rotated.value, width.value)
            or m.nodes["passed"].attrs["start"] != rotated.value):
        return None
    return b.op("rope", [x, m["positions"], m["inv_freq"]],
                {"seq_axis": rope["seq_axis"], "scale": rope.get("scale", 1.0), "rotary_dim": rotated.value})


# eager attention: softmax(scores * scale [-> tanh(. / c) * c] + mask) v, scores = q k^T (Gemma-2)
_SCORES = op("mul", op("matmul", Var("q"), op("transpose", Var("k"), perm=[0, 1, 3, 2])), Const("scale"))
_CAPPED = op("mul", op("tanh", op("div", _SCORES, Const("cap"))), Const("cap_out"))
_EAGER = tuple(op("matmul", op("softmax", op("add", scores, Var("mask")), axis=-1), Var("v"))
               for scores in (_CAPPED, _SCORES))


def _eager_attention(m: Match, b: Builder) -> Value | None:
    q, k, v, mask = m["q"], m["k"], m["v"], m["mask"]
    cap = m.consts.get("cap")
    if q.type.rank != 4 or k.type != v.type or (cap is not None and cap != m.consts["cap_out"]):
        return None
    return b.op("attention", [q, k, v, mask], {"scale": m.consts["scale"], "softcap": cap})


# a mixture of experts in transformers' batched form (Mixtral, Qwen3-MoE): the weighted sum over the
# router's top-k of down[e] (silu(g) * u), (g, u) = gate_up[e] x, the experts' weights gathered by id
_MOE = op("reduce_sum", op("reshape", op("mul", op("reshape", Var("expert_out")), op("reshape", Var("weights")))),
          bind="combined", axes=[1], keepdim=False)
_EXPERT = op("matmul", op("gather", Var("table"), op("reshape", Var("ids")), axis=0), op("reshape", Var("input")))
_GATED = op("mul", op("silu", op("slice", Var("hidden"), bind="gate")), op("slice", Var("hidden"), bind="up"))
_ROUTER = op("topk", op("softmax", op("linear", Var("x"), Var("router")), axis=-1), bind="topk")
_REPEATED_TOKENS = op("expand", op("reshape", Var("x")))  # repeat_interleave(x, k): a copy per chosen expert


def _moe(m: Match, b: Builder) -> Value | None:
    graph = Graph(b.func)
    down = graph.match(_EXPERT, m["expert_out"])
    gated = None if down is None else graph.match(_GATED, down["input"])
    up = None if gated is None else graph.match(op("reshape", _EXPERT), gated["hidden"])
    if up is None or up["ids"] is not down["ids"]:
        return None
    topk = b.func.producers().get(down["ids"].name)
    if topk is None or topk.op != "topk" or down["ids"] is not topk.outputs[1]:
        return None
    router = graph.match(_ROUTER, topk.outputs[0])
    tokens = graph.match(_REPEATED_TOKENS, up["input"])
    if router is None or tokens is None or not _same_rows(graph, tokens["x"], router["x"]):
        return None
    values, weights = topk.outputs[0], m["weights"]
    normalize = weights is not values
    if normalize and graph.match(op("div", Var("v"), op("reduce_sum", Var("v"), axes=[-1], keepdim=True)),
                                 weights) is None:
        return None
    inner = gated["hidden"].type.shape[-1]
    if not (_is_slice(gated.nodes["gate"].attrs, 2, 0, inner.value // 2) and gated.nodes["up"].attrs["start"] ==
            inner.value // 2 and router["x"].type.rank == 2):
        return None
    return b.op("moe", [router["x"], router["router"], up["table"], down["table"]],
                {"top_k": topk.attrs["k"], "normalize": normalize})


def _same_rows(graph: Graph, a: Value, b: Value) -> bool:
    """``a`` and ``b`` are one value, or one is a reshape of the other."""
    return a is b or any((found := graph.match(op("reshape", Var("v")), y)) is not None and found["v"] is x
                         for x, y in ((a, b), (b, a)))


# attention as torch.onnx writes scaled_dot_product_attention: softmax((q * c) (k^T * c) + bias),
# probabilities that are NaN (rows with no key) zeroed, times v; bias = where(keep, 0, lowest) with
# keep the step's causal mask, or its sliding window (causal_mask.py); k^T a transpose, or for
# GQA-expanded keys a reshape to [B*H, S, D], a transpose and a reshape to [B, H, D, S]
_SDPA_PROBS = op("softmax", op("add", op("matmul", Var("qs"), Var("kts")), Var("bias")), bind="probs")
_SDPA = tuple(op("matmul", probs, Var("v"), bind="out") for probs in (
    op("where", op("ne", _SDPA_PROBS, _SDPA_PROBS), Const(value=0.0), _SDPA_PROBS), _SDPA_PROBS))
_BIAS = op("where", Var("keep"), Const(value=0.0), Const("fill"))
_SCALED = op("mul", Var("x"), Const("c"))
_KEYS_T = (op("transpose", Var("k"), perm=[0, 1, 3, 2]),
           op("reshape", op("transpose", op("reshape", Var("k"), bind="flat"), perm=[0, 2, 1])))


def _sdpa(m: Match, b: Builder) -> Value | None:
    graph, v, mask = Graph(b.func), m["v"], contract_mask(b.func)
    (q, q_scale), (kt, k_scale) = (_scaled(graph, m[name]) for name in ("qs", "kts"))
    bias = graph.match(_BIAS, m["bias"])
    if (mask is None or bias is None or q.type.rank != 4 or kt.type.rank != 4 or m.nodes["probs"].attrs["axis"] % 4 != 3
            or mask.type.dtype != q.type.dtype or m["bias"].type.shape != mask.type.shape
            or bias.consts["fill"] not in (-math.inf, float(np.finfo(mask.type.dtype.numpy()).min))):
        return None
    batch, heads, width, keys = kt.type.shape
    k = next((found for p in _KEYS_T if (found := graph.match(p, kt)) is not None), None)
    if (k is None or v.type.shape != (batch, heads, keys, width) or m["out"].type != q.type
            or ("flat" in k.values and k["flat"].type.shape != (batch * heads, keys, width))
            or (window := causal_window(graph, bias["keep"], mask)) is None):
        return None
    if window:
        positions = contract_positions(b.func)
        if positions is None:
            return None
        mask = b.op("sliding_window_mask", [mask, positions], {"window": window})
    keys_value = k["k"] if k["k"].type.shape == v.type.shape else b.op("reshape", [k["k"]], {"shape": list(v.type.shape)})
    scale = _f32_literal(np.float32(q_scale) * np.float32(k_scale))
    return b.op("attention", [q, keys_value, v, mask], {"scale": scale})


def _scaled(graph: Graph, value: Value) -> tuple[Value, float]:
    """``x`` and ``c`` where ``value`` is ``x * c`` by a scalar constant, else ``value`` and 1."""
    found = graph.match(_SCALED, value)
    return (value, 1.0) if found is None else (found["x"], found.consts["c"])


def _reshape_reshape(m: Match, b: Builder) -> Value:
    return b.op("reshape", [m["x"]], {"shape": list(m.nodes["outer"].attrs["shape"])})


FUSIONS = (  # one op per concept, and the canonical forms those patterns are written against
    Rule("reshape_reshape", op("reshape", op("reshape", X), bind="outer"), _reshape_reshape),
    *(Rule("scaled_linear", op("mul", lin, Const("c")), _scaled_linear(lambda c: c)) for lin in _LINEAR),
    *(Rule("scaled_linear", op("div", lin, Const("c")), _scaled_linear(lambda c: 1.0 / c)) for lin in _LINEAR),
    Rule("offset_param", op("add", W, Const("c")), _offset_param),
    *(Rule("rms_norm", op("mul", normed, W), _rms_norm) for normed in _NORMED),
    Rule("silu", op("mul", X, op("sigmoid", X)), _silu),
    Rule("rope", _ROPE, _rope),
    Rule("partial_rope", _PARTIAL_ROPE, _partial_rope),
    Rule("gelu_tanh", _GELU_TANH, _gelu_tanh),
    Rule("sliding_window_mask", _WINDOWED, _sliding_window_mask),
    *(Rule("attention", eager, _eager_attention) for eager in _EAGER),
    *(Rule("attention", sdpa, _sdpa) for sdpa in _SDPA),
    Rule("moe", _MOE, _moe),
)
SPLITS = (  # then fused projections become one layer per operand (after partial RoPE took its slices)
    *(Rule("flat_linear", flattened, _flat_linear) for flattened in _FLATTENED),
    *(Rule("split_linear", op("slice", lin, bind="part"), _split_linear) for lin in _LINEAR),
    *(Rule("split_heads", view, _split_heads) for view in _HEAD_VIEWS),
)
RULES = FUSIONS + SPLITS


def fuse_function(module: Module, func: Function) -> dict[str, int]:
    """Fuse ``func`` of ``module`` in place (:data:`FUSIONS` to a fixpoint, then :data:`SPLITS`);
    how often each rule fired."""
    fired = rewrite(module, func, FUSIONS)
    return {**fired, **rewrite(module, func, SPLITS)}


def fuse_module(module: Module) -> dict[str, int]:
    """Fuse every function of ``module`` in place; how often each rule fired."""
    total = {rule.name: 0 for rule in RULES}
    for func in module.functions.values():
        for name, count in fuse_function(module, func).items():
            total[name] += count
    return total


@register_pass("fuse")
def fuse(module: Module, options: NoOptions, context: PassContext) -> Module:
    """Fuse primitive ops into one op per concept and split fused projections (the import already does)."""
    context.reports["fuse"] = fuse_module(module)
    return prune_params(module)
