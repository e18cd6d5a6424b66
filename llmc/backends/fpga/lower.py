"""Lowering to the accelerator's ops: a model's decode step becomes one ``step`` function over
T new tokens and a cache of P, in ``hw_*`` ops whose semantics are exactly the hardware's.

The decode function of an imported model, fused (:mod:`llmc.compiler.passes.fuse`: one
``rms_norm``, ``rope`` ... per concept), is walked node by node; each op has one rule. Each
original value maps to what it is on the accelerator: an activation matrix, a per-head view of
one, a KV cache, or a marker (a parameter, a constant, the positions, the mask). A node no rule
accepts is refused with its name and op.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import numpy as np

from llmc.backends.fpga import weights as ew
from llmc.compiler.passes.fuse import fuse_function
from llmc.errors import LlmcError
from llmc.ir.builder import Builder
from llmc.ir.graph import Function, Module, Node, Param, Value
from llmc.ir.types import F16, F32, Dim, DType, SparseEncoding, TensorType

T, P = Dim.sym("T"), Dim.sym("P")
I8, I32 = DType("int", 8), DType("int", 32)


@dataclass(frozen=True)
class Act:
    value: Value  # [T, C] i32


@dataclass(frozen=True)
class Heads:
    value: Value  # [T, H*D] i32 viewed as [1, H, T, D] (transposed=True) or [1, T, H, D]
    heads: int
    head_dim: int
    transposed: bool


@dataclass(frozen=True)
class Cache:
    codes: Value  # [S, KVH*D] i8
    scales: Value  # [S, KVH] i32
    kv_heads: int
    head_dim: int
    expanded: int = 1  # query heads per KV head once expanded for attention


@dataclass(frozen=True)
class Pattern:
    """An intermediate of a recognised pattern: ``kind`` and what it carries."""

    kind: str
    of: Any = None
    extra: Any = None


class Lowering:
    def __init__(self, source: Module, func: Function, positions: int) -> None:
        self.src, self.func, self.positions = source, func, positions
        self.out = Module(source.name + ".hw", dict(source.attrs))
        self.step = Function("step")
        self.out.functions["step"] = self.step
        self.b = Builder(self.out, self.step)
        self.map: dict[str, Any] = {}
        self.producers = func.producers()
        self.rope_tables: dict[str, tuple[Value, Value]] = {}

    # --- helpers -------------------------------------------------------------------------------
    def fail(self, node: Node, why: str) -> LlmcError:
        name = node.outputs[0].name if node.outputs else "?"
        return LlmcError(f"{self.src.name}: func @{self.func.name}, %{name} = {node.op}: {why}")

    def get(self, v: Value) -> Any:
        if v.name not in self.map:
            raise LlmcError(f"{self.src.name}: %{v.name} has no accelerator form")
        return self.map[v.name]

    def add_param(self, name: str, type_: TensorType, data: np.ndarray | None) -> Value:
        if name not in self.out.params:
            self.out.params[name] = Param(name, type_, data)
        return self.b.param(name)

    def param_data(self, v: Value) -> tuple[str, np.ndarray | None, TensorType]:
        node = self.producers.get(v.name)
        if node is None or node.op != "param":
            raise LlmcError(f"{self.src.name}: %{v.name} must be a parameter")
        p = self.src.params[node.attrs["name"]]
        return p.name, p.data, p.type

    # --- the walk ------------------------------------------------------------------------------
    def run(self) -> Module:
        ids = self.b.input("input_ids", TensorType((T,), I32))
        pos = self.b.input("position_ids", TensorType((T,), I32))
        inputs = {v.name: v for v in self.func.inputs}
        self.map[inputs["input_ids"].name] = Pattern("ids", ids)
        self.map[inputs["position_ids"].name] = Pattern("pos", pos)
        self.pos = pos
        self.map[inputs["mask"].name] = Pattern("mask")
        for v in self.func.inputs:
            if v.name.startswith("past_"):
                kvh, d = v.type.shape[1].value, v.type.shape[3].value
                codes = self.b.input(f"{v.name}_codes", TensorType((P, Dim.of(kvh * d)), I8))
                scales = self.b.input(f"{v.name}_scales", TensorType((P, Dim.of(kvh)), I32))
                self.map[v.name] = Cache(codes, scales, kvh, d)
        for node in self.func.nodes:
            rule = getattr(self, f"op_{node.op}", None)
            if rule is None:
                raise self.fail(node, "op not supported by the FPGA accelerator")
            result = rule(node, *node.inputs)
            if result is not None:
                self.map[node.outputs[0].name] = result
        outs: list[Value] = []
        for v in self.func.outputs:
            got = self.get(v)
            if isinstance(got, Act):
                outs.append(self.b.op("hw_to_float", [got.value], name="logits"))
            elif isinstance(got, Pattern) and got.kind == "capped":  # Gemma-2: tanh(logits / c) * c
                outs.append(self.b.op("hw_to_float", [got.of], {"cap": got.extra}, name="logits"))
            elif isinstance(got, Cache):
                outs += [got.codes, got.scales]
            else:
                raise LlmcError(f"{self.src.name}: output %{v.name} has no accelerator form")
        self.step.outputs = outs
        return self.out

    # --- rules ---------------------------------------------------------------------------------
    def op_param(self, node: Node) -> Pattern:
        return Pattern("param", node.outputs[0])

    def op_constant(self, node: Node) -> Pattern:
        return Pattern("const", node.attrs["value"])

    def op_embedding(self, node: Node, table: Value, ids: Value) -> Act:
        """Token embeddings, or learned positions (``pos`` with OPT's offset)."""
        name, data, t = self.param_data(table)
        param = self.add_param(name, TensorType(t.shape, F16), None if data is None else data.astype(np.float16))
        got = self.get(ids)
        if not (isinstance(got, Pattern) and got.kind in ("ids", "pos")):
            raise self.fail(node, "embedding of neither the token ids nor the positions")
        return Act(self.b.op("hw_embed", [param, got.of], {"offset": got.extra or 0}))

    def op_reshape(self, node: Node, x: Value) -> Any:
        got, shape = self.get(x), node.outputs[0].type.shape
        if isinstance(got, Pattern) and got.kind in ("pos", "mask"):
            return got
        if isinstance(got, Act) and len(shape) == 4:
            return Heads(got.value, shape[2].value, shape[3].value, transposed=False)
        if isinstance(got, Heads) and not got.transposed and len(shape) in (2, 3):
            return Act(got.value)
        if isinstance(got, Act) and len(shape) in (2, 3) and shape[-1] == got.value.type.shape[1]:
            return got  # the tokens flattened or not: rows of one activation either way
        if isinstance(got, Cache) and len(shape) == 5:
            return Pattern("gqa", got)
        if isinstance(got, Pattern) and got.kind == "gqa_expanded":
            return Cache(got.of.codes, got.of.scales, got.of.kv_heads, got.of.head_dim, got.extra)
        raise self.fail(node, "reshape not of a supported layout")

    def op_transpose(self, node: Node, x: Value) -> Heads:
        got = self.get(x)
        if isinstance(got, Heads) and node.attrs["perm"] == [0, 2, 1, 3]:
            return Heads(got.value, got.heads, got.head_dim, not got.transposed)
        raise self.fail(node, "transpose not of a head layout")

    def op_expand(self, node: Node, x: Value) -> Pattern:
        got = self.get(x)
        if isinstance(got, Pattern) and got.kind == "gqa":
            return Pattern("gqa_expanded", got.of, node.attrs["shape"][2])
        raise self.fail(node, "expand is only supported for grouped-query KV heads")

    def op_cast(self, node: Node, x: Value) -> Any:
        got = self.get(x)
        if node.attrs["dtype"] in (F32, F16) and node.inputs[0].type.dtype == node.attrs["dtype"]:
            return got
        raise self.fail(node, "casts inside the model are not supported")

    def op_mul(self, node: Node, a: Value, b: Value) -> Any:
        ga, gb = self.get(a), self.get(b)
        if isinstance(ga, Act) and isinstance(gb, Act):
            return Act(self.b.op("hw_mul", [ga.value, gb.value]))
        for x, y in ((ga, gb), (gb, ga)):
            if isinstance(x, Pattern) and x.kind == "tanh" and isinstance(y, Pattern) and y.kind == "const":
                return Pattern("capped", x.of, float(y.of))
            if isinstance(x, Act) and isinstance(y, Pattern) and y.kind == "param" and y.of.type.rank == 1:
                return Act(self.b.op("hw_scale", [x.value, self.f32_vector(y.of)]))
            if isinstance(x, Act) and isinstance(y, Pattern) and y.kind == "const" and not isinstance(y.of, list):
                return self.scalar_scale(x, float(y.of))
            if isinstance(x, Act) and isinstance(y, Pattern) and y.kind == "param" and y.of.type.rank == 0:
                data = self.param_data(y.of)[1]  # Gemma's embedding scale, a buffer
                return self.scalar_scale(x, None if data is None else float(data))
        raise self.fail(node, "multiply of unsupported operands")

    def op_div(self, node: Node, a: Value, b: Value) -> Act:
        ga, gb = self.get(a), self.get(b)
        if isinstance(ga, Act) and isinstance(gb, Pattern) and gb.kind == "const" and not isinstance(gb.of, list):
            return self.scalar_scale(ga, 1.0 / float(gb.of))
        raise self.fail(node, "division other than of an activation by a constant")

    def scalar_scale(self, x: Act, factor: float | None) -> Act:
        """``x * factor`` as ESCALE by a constant vector (Granite's and Gemma's multipliers);
        ``factor`` None: a shapes-only model's."""
        name = f"scale.{len([p for p in self.out.params if p.startswith('scale.')])}"
        return Act(self.b.op("hw_scale", [x.value, self.constant_vector(name, x.value.type.shape[1].value, factor)]))

    def constant_vector(self, name: str, cols: int, value: float | None) -> Value:
        """An f32 [cols] parameter holding ``value`` everywhere (no data for None)."""
        return self.add_param(name, TensorType((Dim.of(cols),), F32),
                              None if value is None else np.full(cols, value, np.float32))

    def f32_vector(self, v: Value, repeat: int = 1) -> Value:
        """The parameter behind ``v`` as an f32 vector, ``repeat`` times over (``<name>.x<repeat>``)."""
        name, data, t = self.param_data(v)
        if repeat > 1:
            name = f"{name}.x{repeat}"
        return self.add_param(name, TensorType((Dim.of(t.shape[0].value * repeat),), F32),
                              None if data is None else np.tile(data.astype(np.float32), repeat))

    def op_add(self, node: Node, a: Value, b: Value) -> Any:
        ga, gb = self.get(a), self.get(b)
        if isinstance(ga, Act) and isinstance(gb, Act):
            return Act(self.b.op("hw_add", [ga.value, gb.value]))
        if isinstance(ga, Pattern) and ga.kind == "pos" and isinstance(gb, Pattern) and gb.kind == "const":
            return Pattern("pos", ga.of, (ga.extra or 0) + int(gb.of))  # OPT's positions start at 2
        raise self.fail(node, "add of unsupported operands")

    def op_layer_norm(self, node: Node, x: Value, w: Value | None = None, b: Value | None = None) -> Act:
        value = self.act(node, x)
        cols = value.type.shape[1].value
        vectors = []
        for v, fill, role in ((w, 1.0, "weight"), (b, 0.0, "bias")):
            if v is None:
                vectors.append(self.constant_vector(f"{node.outputs[0].name}.{role}", cols, fill))
                continue
            if not (isinstance(self.get(v), Pattern) and self.get(v).kind == "param"):
                raise self.fail(node, f"the LayerNorm {role} must be a parameter")
            vectors.append(self.f32_vector(v))
        return Act(self.b.op("hw_layer_norm", [value, *vectors], {"eps": node.attrs["eps"]}))

    def op_rms_norm(self, node: Node, x: Value, w: Value) -> Act | Heads:
        """RMSNorm of an activation, or of each head of a per-head view (QK-norm: the weight of
        one head repeated over the row)."""
        got, weight_of = self.get(x), self.get(w)
        if not (isinstance(weight_of, Pattern) and weight_of.kind == "param"):
            raise self.fail(node, "the RMSNorm weight must be a parameter")
        if isinstance(got, Heads) and w.type.shape == (Dim.of(got.head_dim),):  # either layout: rows are [T, H*D]
            repeat, group = got.heads, got.head_dim
        elif isinstance(got, Act):
            repeat, group = 1, 0
        else:
            raise self.fail(node, "RMSNorm of neither an activation nor its heads")
        y = self.b.op("hw_rms_norm", [got.value, self.f32_vector(w, repeat)], {"eps": node.attrs["eps"], "group": group})
        return Heads(y, got.heads, got.head_dim, got.transposed) if isinstance(got, Heads) else Act(y)

    def op_rope(self, node: Node, x: Value, positions: Value, inv_freq: Value) -> Heads:
        got, pos = self.get(x), self.get(positions)
        if not (isinstance(got, Heads) and isinstance(pos, Pattern) and pos.kind == "pos" and not pos.extra):
            raise self.fail(node, "RoPE must rotate attention heads at the step's positions")
        if node.attrs["seq_axis"] != (-2 if got.transposed else -3):
            raise self.fail(node, "RoPE over an axis other than the tokens")
        if node.attrs["scale"] != 1.0:
            raise self.fail(node, "RoPE attention scaling other than 1 is not supported")
        cos, sin = self.rope(inv_freq)
        y = self.b.op("hw_rope", [got.value, self.pos, cos, sin],
                      {"head_dim": got.head_dim, "rotary_dim": node.attrs.get("rotary_dim", 0) or got.head_dim})
        return Heads(y, got.heads, got.head_dim, got.transposed)

    def op_concat(self, node: Node, *xs: Value) -> Any:
        got = [self.get(x) for x in xs]
        if len(got) == 2 and isinstance(got[0], Cache) and isinstance(got[1], Heads):
            past, new = got
            codes, scales = self.b.op_multi("hw_quant8", [new.value], {"group": new.head_dim})
            name = node.outputs[0].name
            return Cache(self.b.op("concat", [past.codes, codes], {"axis": 0}, name=f"{name}_codes"),
                         self.b.op("concat", [past.scales, scales], {"axis": 0}, name=f"{name}_scales"),
                         past.kv_heads, past.head_dim)
        raise self.fail(node, "concat of unsupported operands")

    def op_silu(self, node: Node, x: Value) -> Act:
        return Act(self.b.op("hw_act", [self.act(node, x)], {"fn": "silu"}))

    def op_relu(self, node: Node, x: Value) -> Act:
        return Act(self.b.op("hw_act", [self.act(node, x)], {"fn": "relu"}))

    def op_gelu(self, node: Node, x: Value) -> Act:
        return Act(self.b.op("hw_act", [self.act(node, x)], {"fn": "gelu"}))

    def op_gelu_tanh(self, node: Node, x: Value) -> Act:
        return Act(self.b.op("hw_act", [self.act(node, x)], {"fn": "gelu_tanh"}))

    def op_tanh(self, node: Node, x: Value) -> Pattern:
        """Only as the logits' soft-cap, ``tanh(v) * c`` on their way out (its 1 / c folded into the weights)."""
        return Pattern("tanh", self.act(node, x))

    def op_moe(self, node: Node, x: Value, router: Value, gate_up: Value, down: Value) -> Act:
        """The router's logits on the matrix engine and its choice on the SFU (``hw_route``); then per
        chosen slot the expert's gated MLP on expert-indexed matrix products, weighted and summed."""
        value, top_k = self.act(node, x), node.attrs["top_k"]
        name, data, t = self.param_data(router)
        if not t.dtype.is_float:
            raise self.fail(node, "the router weight must be a float parameter")
        logits = self.matmul(name, value, ew.from_float(data, *t.static_shape(), None, False)).value
        route = self.b.op("hw_route", [logits], {"top_k": top_k, "normalize": node.attrs["normalize"]})
        inner = down.type.shape[2].value
        stacks = {"gate": self.experts(node, gate_up, slice(0, inner), ".gate"),
                  "up": self.experts(node, gate_up, slice(inner, 2 * inner), ".up"),
                  "down": self.experts(node, down, slice(None), "")}
        total = None
        for slot in range(top_k):
            g, u = (self.expert_matmul(stacks[part], value, route, slot) for part in ("gate", "up"))
            h = self.b.op("hw_mul", [self.b.op("hw_act", [g], {"fn": "silu"}), u])
            y = self.b.op("hw_weigh", [self.expert_matmul(stacks["down"], h, route, slot), route], {"slot": slot})
            total = y if total is None else self.b.op("hw_add", [total, y])
        return Act(total)

    def experts(self, node: Node, v: Value, rows: slice, part: str) -> tuple[list[Value], ew.EngineWeights]:
        """Rows ``rows`` of every expert of a stacked weight [E, N, K] (float, or dequantized codes) as
        engine parameters [E, ...] named ``<weight><part>.hw_*``, and their attributes (one scale
        shift for all experts)."""
        got = self.get(v)
        if isinstance(got, Pattern) and got.kind == "param":
            arrays, t, group = [self.param_data(v)[1]], v.type, 0
        elif isinstance(got, Pattern) and got.kind == "dequant":
            dq: Node = got.of
            a = self.dequant_arrays(dq)
            arrays, t, group = [a["codes"], a["scales"], a["zeros"], a["mins"]], dq.inputs[0].type, dq.attrs["group"]
        else:
            raise self.fail(node, "expert weights are neither a parameter nor dequantized codes")
        e, k = t.shape[0].value, t.shape[2].value
        n = len(range(*rows.indices(t.shape[1].value)))
        flat = [None if a is None else a[:, rows].reshape(e * n, -1) for a in arrays]
        base = self.param_data(v if got.kind == "param" else got.of.inputs[0])[0].removesuffix(".codes")
        if got.kind == "param":
            w = ew.from_float(flat[0], e * n, k, None, False)
        else:
            sparse = next(((c.n, c.m) for c in t.encodings if isinstance(c, SparseEncoding) and c.m), None)
            w = self.engine_weights(
                base + part, codes=flat[0], scales=flat[1], zeros=flat[2], n=e * n, k=k, bits=t.dtype.bits, group=group,
                bias=None, has_bias=False, has_zero=got.of.op == "dequantize" and len(got.of.inputs) == 3, sparse=sparse,
                lut=node.attrs.get("lut_g", 0) > 0, half_scales=got.of.inputs[1].type.dtype == F16, mins=flat[3],
                has_min=got.of.op == "dequantize_min")
        return self.engine_params(base + part, w, e), w

    def expert_matmul(self, stack: tuple[list[Value], ew.EngineWeights], x: Value, route: Value, slot: int) -> Value:
        params, w = stack
        attrs = {"slot": slot, **_matmul_attrs(w)}
        return self.b.op("hw_expert_matmul", [x, route, *params], attrs)

    def op_fake_quant(self, node: Node, x: Value) -> Any:
        if node.attrs["bits"] < 8:
            raise self.fail(node, f"a {node.attrs['bits']}-bit KV cache is not supported (the cache is int8)")
        return self.get(x)

    def op_sliding_window_mask(self, node: Node, mask: Value, positions: Value) -> Pattern:
        got, pos = self.get(mask), self.get(positions)
        if not (isinstance(got, Pattern) and got.kind == "mask" and got.of is None
                and isinstance(pos, Pattern) and pos.kind == "pos"):
            raise self.fail(node, "a sliding window over a mask other than the step's causal mask")
        return Pattern("mask", node.attrs["window"])

    def op_attention(self, node: Node, q: Value, k: Value, v: Value, mask: Value | None = None) -> Heads:
        gq, gk, gv = self.get(q), self.get(k), self.get(v)
        if not (isinstance(gq, Heads) and gq.transposed and isinstance(gk, Cache) and isinstance(gv, Cache)):
            raise self.fail(node, "attention must read the KV cache")
        got = None if mask is None else self.get(mask)
        if got is not None and not (isinstance(got, Pattern) and got.kind == "mask"):
            raise self.fail(node, "only the causal mask, or a sliding window over it, is supported")
        scale = node.attrs["scale"] if node.attrs["scale"] is not None else gq.head_dim ** -0.5
        y = self.b.op("hw_attention", [gq.value, gk.codes, gk.scales, gv.codes, gv.scales],
                      {"heads": gq.heads, "kv_heads": gk.kv_heads, "head_dim": gq.head_dim, "scale": float(scale),
                       "window": (got.of or 0) if got is not None else 0, "softcap": node.attrs.get("softcap") or 0.0})
        return Heads(y, gq.heads, gq.head_dim, transposed=True)

    def act(self, node: Node, x: Value) -> Value:
        got = self.get(x)
        if not isinstance(got, Act):
            raise self.fail(node, "expects an activation")
        return got.value

    # --- linear layers -------------------------------------------------------------------------
    def op_dequantize(self, node: Node, *ins: Value) -> Pattern:
        return Pattern("dequant", node)

    def op_dequantize_min(self, node: Node, *ins: Value) -> Pattern:
        """Codes with a float minimum per group (GGUF Q4_1, Q4_K, ...): read by a linear as ``dequantize``'s are."""
        return Pattern("dequant", node)

    def dequant_arrays(self, dq: Node) -> dict[str, np.ndarray | None]:
        """The codes, scales, zeros and minimums (None when absent) of a ``dequantize`` or ``dequantize_min``."""
        parts = ("codes", "scales", "mins" if dq.op == "dequantize_min" else "zeros")
        arrays = {part: self.param_data(v)[1] for part, v in zip(parts, dq.inputs)}
        return {"zeros": None, "mins": None, **arrays}

    def engine_weights(self, name: str, **args: Any) -> ew.EngineWeights:
        """:func:`weights.from_codes`, refusing in one line naming the layer what the engine cannot hold."""
        try:
            return ew.from_codes(**args)
        except ValueError as e:
            raise LlmcError(f"{self.src.name}: {name.removesuffix('.codes')}: {e}") from None

    def op_quantize_dynamic(self, node: Node, x: Value) -> None:
        self.map[node.outputs[0].name] = Pattern("xq", self.act(node, x))
        self.map[node.outputs[1].name] = Pattern("xs")

    def op_lut_precompute(self, node: Node, x: Value) -> None:
        for i, o in enumerate(node.outputs):
            self.map[o.name] = Pattern("lut_in", self.act(node, x) if i == 0 else None)

    def op_linear(self, node: Node, x: Value, w: Value, bias: Value | None = None) -> Act:
        got = self.get(w)
        b = None if bias is None else self.param_data(bias)[1]
        if isinstance(got, Pattern) and got.kind == "param":
            name, data, t = self.param_data(w)
            n, k = (d.value for d in t.shape)
            return self.matmul(name, self.act(node, x), ew.from_float(data, n, k, b, bias is not None))
        if isinstance(got, Pattern) and got.kind == "dequant":
            dq: Node = got.of
            name, _, ct = self.param_data(dq.inputs[0])
            n, k = (d.value for d in ct.shape)
            sparse = next(((e.n, e.m) for e in ct.encodings if isinstance(e, SparseEncoding) and e.m), None)
            a = self.dequant_arrays(dq)
            weights = self.engine_weights(
                name, codes=a["codes"], scales=a["scales"], zeros=a["zeros"], n=n, k=k, bits=ct.dtype.bits,
                group=dq.attrs["group"], bias=b, has_bias=bias is not None, has_zero=dq.op == "dequantize" and
                len(dq.inputs) == 3, sparse=sparse, half_scales=dq.inputs[1].type.dtype == F16, mins=a["mins"],
                has_min=dq.op == "dequantize_min")
            return self.matmul(name, self.act(node, x), weights)
        raise self.fail(node, "linear weight is neither a parameter nor dequantized codes")

    def op_qlinear(self, node: Node, xq: Value, xs: Value, wq: Value, ws: Value, bias: Value | None = None) -> Act:
        got = self.get(xq)
        if not (isinstance(got, Pattern) and got.kind == "xq"):
            raise self.fail(node, "qlinear input must come from quantize_dynamic")
        name, codes, ct = self.param_data(wq)
        n, k = (d.value for d in ct.shape)
        b = None if bias is None else self.param_data(bias)[1]
        weights = ew.from_codes(codes, self.param_data(ws)[1], None, n, k, ct.dtype.bits, node.attrs["group"], b,
                                bias is not None, False, None, half_scales=ws.type.dtype == F16)
        return self.matmul(name, got.of, weights)

    def op_lut_gemm(self, node: Node, tables: Value, scale: Value, sums: Value, planes: Value, scales: Value,
                    zeros: Value) -> Act:
        got = self.get(tables)
        if not (isinstance(got, Pattern) and got.kind == "lut_in"):
            raise self.fail(node, "lut_gemm tables must come from lut_precompute")
        name, data, pt = self.param_data(planes)
        bits, n = pt.shape[0].value, pt.shape[1].value
        k = got.of.type.shape[1].value
        weights = ew.from_planes(data, self.param_data(scales)[1], self.param_data(zeros)[1], n, k, bits,
                                 node.attrs["g"], node.attrs["group"], half_scales=scales.type.dtype == F16)
        return self.matmul(name.removesuffix(".planes"), got.of, weights)

    def matmul(self, name: str, x: Value, w: ew.EngineWeights) -> Act:
        return Act(self.b.op("hw_matmul", [x, *self.engine_params(name.removesuffix(".codes"), w)], _matmul_attrs(w)))

    def engine_params(self, base: str, w: ew.EngineWeights, experts: int = 0) -> list[Value]:
        """The codes, scales, zeros and bias of ``w`` as parameters ``<base>.hw_*``; with ``experts``,
        its rows split into that many stacked matrices [E, N / E, ...]."""
        lead = (Dim.of(experts), Dim.of(w.n // experts)) if experts else (Dim.of(w.n),)

        def param(suffix: str, cols: tuple[Dim, ...], dtype: DType, data: np.ndarray | None) -> Value:
            shape = tuple(d.value for d in lead + cols)
            return self.add_param(f"{base}.{suffix}", TensorType(lead + cols, dtype),
                                  None if data is None else data.astype(dtype.numpy()).reshape(shape))

        groups = (Dim.of(w.k // w.group),)
        out = [param("hw_codes", (Dim.of(w.k),), w.code_dtype, w.codes), param("hw_scales", groups, I32, w.scales)]
        if w.has_zero:
            out.append(param("hw_zeros", groups, DType("int", 16), w.zeros))
        if w.has_min:
            out.append(param("hw_mins", groups, I32, w.mins))
        if w.has_bias:
            out.append(param("hw_bias", (), I32, w.bias))
        return out

    def rope(self, inv_freq: Value) -> tuple[Value, Value]:
        """The cos and sin tables (Q2.30, every position) of one ``inv_freq``: ``rope.cos`` and
        ``rope.sin`` for the first, ``rope<i>.*`` for a model's others (Gemma-3's local layers)."""
        name, data, _ = self.param_data(inv_freq)
        if name in self.rope_tables:
            return self.rope_tables[name]
        positions = self.positions
        cos = sin = None
        if data is not None:
            angles = np.arange(positions, dtype=np.float64)[:, None] * data.astype(np.float64)[None, :]
            cos = np.rint(np.cos(angles) * 2.0**30).astype(np.int32)
            sin = np.rint(np.sin(angles) * 2.0**30).astype(np.int32)
        shape = TensorType((Dim.of(positions), inv_freq.type.shape[0]), I32)
        prefix = f"rope{len(self.rope_tables) or ''}"
        tables = (self.add_param(f"{prefix}.cos", shape, cos), self.add_param(f"{prefix}.sin", shape, sin))
        self.rope_tables[name] = tables
        return tables


def lower(module: Module, positions: int) -> Module:
    """The accelerator program of ``module`` for contexts of up to ``positions`` tokens (its RoPE
    tables cover as many): a ``step`` function over T new tokens and a cache of P
    (inputs ``input_ids``, ``position_ids``, then codes and scales of each past K and V; outputs
    ``logits`` [T, V] and the grown caches)."""
    if "decode" not in module.functions:
        raise LlmcError(f"{module.name}: the FPGA backend needs a decode function (import with a KV cache)")
    decode = copy.deepcopy(module.functions["decode"])
    fused = Module(module.name, dict(module.attrs), dict(module.params), {"decode": decode})
    fuse_function(fused, decode)  # a module saved before the import fused it (new params stay in the copy)
    return Lowering(fused, decode, positions).run()


def _matmul_attrs(w: ew.EngineWeights) -> dict[str, Any]:
    """The attributes of an ``hw_matmul`` (or an ``hw_expert_matmul``'s but its slot) for ``w``."""
    attrs: dict[str, Any] = {"group": w.group, "shift": w.shift, "scale_bits": w.scale_bits, "engine": w.engine,
                             "has_zero": w.has_zero, "has_bias": w.has_bias}
    if w.has_min:
        attrs["has_min"] = True
    if w.sparse:
        attrs["sparse"] = f"{w.sparse[0]}:{w.sparse[1]}"
    if w.half_scales:
        attrs["half_scales"] = True
    return attrs
