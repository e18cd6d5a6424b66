"""Accelerator ops of a mixture-of-experts layer: the router's choice on the SFU, expert-indexed
matrix products and the weighting of each expert's output.

A token's route is one i32 row ``[e_0, w_0, e_1, w_1, ...]``: its ``top_k`` experts, best
first, and their weights in Q15.16. ``hw_expert_matmul`` reads expert ``e_slot`` of every row
and is exactly ``hw_matmul`` of that row against that expert's matrix (activations are
quantized per row), so the hardware may stream each chosen expert once for all its rows.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from llmc.ir.ops import hw_math as hm
from llmc.ir.ops.hw import HwMatmul, check_act
from llmc.ir.registry import AttrSpec, InferError, RefContext, register
from llmc.ir.types import Dim, TensorType


def route_type(route: TensorType, slot: int, what: str) -> None:
    """Check that ``route`` is an i32 route matrix [T, 2 top_k] with column pair ``slot``."""
    check_act(route, what)
    if not route.shape[1].is_static or route.shape[1].value % 2 or not 0 <= slot < route.shape[1].value // 2:
        raise InferError(f"{what}: slot {slot} is not in the route {route}")


@register("hw_route", inputs=1, attrs={"top_k": AttrSpec("int"), "normalize": AttrSpec("bool")})
class HwRoute:
    """The router's choice per row of Q15.16 logits ``x`` [T, E]: the ``top_k`` largest logits,
    ties to the lower expert; ``lf = fixed_to_f32(x)``, ``e_i = exp2_f32((lf_i - lf_max) * log2 e)``;
    the weight of a chosen expert is ``e_i / s`` with ``s`` the float32 sum, in order, of the chosen
    experts' ``e`` (``normalize``) or of every expert's (softmax probabilities), as
    ``rint(w * 2^16)``. Result [T, 2 top_k]: ids and weights interleaved."""

    @staticmethod
    def infer(ins: list[TensorType], attrs: dict[str, Any]) -> list[TensorType]:
        x = ins[0]
        check_act(x, "hw_route")
        if x.shape[1].is_static and not 1 <= attrs["top_k"] <= x.shape[1].value:
            raise InferError(f"hw_route top_k {attrs['top_k']} is outside [1, {x.shape[1]}]")
        return [TensorType((x.shape[0], Dim.of(2 * attrs["top_k"])), x.dtype)]

    @staticmethod
    def ref(ins: list[np.ndarray], attrs: dict[str, Any], ctx: RefContext) -> list[np.ndarray]:
        x, k = ins[0], attrs["top_k"]
        chosen = np.argsort(-x.astype(np.int64), axis=1, kind="stable")[:, :k]
        lf = hm.fixed_to_f32(x)
        peak = np.take_along_axis(lf, chosen[:, :1], axis=1)
        e = hm.exp2_f32(((lf - peak).astype(np.float32) * hm.LOG2E).astype(np.float32))
        picked = np.take_along_axis(e, chosen, axis=1)
        terms = picked if attrs["normalize"] else e
        total = np.zeros(x.shape[0], dtype=np.float32)
        for i in range(terms.shape[1]):  # in order, as the SFU adds them
            total = (total + terms[:, i]).astype(np.float32)
        weights = hm.to_fixed((picked / total[:, None]).astype(np.float32) * np.float32(1 << hm.ACT_FRAC))
        out = np.empty((x.shape[0], 2 * k), dtype=np.int32)
        out[:, 0::2], out[:, 1::2] = chosen, weights
        return [out]


@register("hw_expert_matmul", inputs=(4, 7), attrs={
    "slot": AttrSpec("int"), "group": AttrSpec("int"), "shift": AttrSpec("int"), "scale_bits": AttrSpec("int"),
    "engine": AttrSpec("str", "dsp"), "sparse": AttrSpec("str", ""), "has_zero": AttrSpec("bool", False),
    "has_min": AttrSpec("bool", False), "has_bias": AttrSpec("bool", False), "half_scales": AttrSpec("bool", False)})
class HwExpertMatmul:
    """Row t of ``x`` [T, K] through expert ``e = route[t, 2 slot]`` of stacked weights: codes
    [E, N, K], scales [E, N, K/group], optional zeros and minimums [E, N, K/group] and bias [E, N];
    each row exactly as ``hw_matmul`` with that expert's matrix and the same attributes."""

    @staticmethod
    def infer(ins: list[TensorType], attrs: dict[str, Any]) -> list[TensorType]:
        x, route, codes = ins[:3]
        route_type(route, attrs["slot"], "hw_expert_matmul")
        if route.shape[0] != x.shape[0]:
            raise InferError(f"hw_expert_matmul route {route} does not match the rows of {x}")
        if any(t.rank < 2 or t.shape[0] != codes.shape[0] for t in ins[2:]) or codes.rank != 3:
            raise InferError(f"hw_expert_matmul weights must be stacked per expert [E, ...], got {ins[2:]}")
        return HwMatmul.infer([x, *(_expert(t) for t in ins[2:])], _matmul_attrs(attrs))

    @staticmethod
    def ref(ins: list[np.ndarray], attrs: dict[str, Any], ctx: RefContext) -> list[np.ndarray]:
        x, route, weights = ins[0], ins[1], ins[2:]
        ids = route[:, 2 * attrs["slot"]].astype(np.int64)
        experts = weights[0].shape[0]
        if ids.size and (ids.min() < 0 or ids.max() >= experts):
            raise ValueError(f"hw_expert_matmul: expert {int(ids.max())} outside the {experts} experts")
        out = np.zeros((x.shape[0], weights[0].shape[1]), dtype=np.int32)
        for e in np.unique(ids):
            rows = ids == e
            out[rows] = HwMatmul.ref([x[rows], *(w[e] for w in weights)], _matmul_attrs(attrs), ctx)[0]
        return [out]


def _expert(t: TensorType) -> TensorType:
    """One expert's slice of a stacked weight type."""
    return TensorType(t.shape[1:], t.dtype)


def _matmul_attrs(attrs: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in attrs.items() if k != "slot"}


@register("hw_weigh", inputs=2, attrs={"slot": AttrSpec("int")})
class HwWeigh:
    """Each row of ``x`` [T, C] times its weight ``w = route[t, 2 slot + 1]`` (Q15.16):
    ``(x * w + 2^15) >> 16``, saturated."""

    @staticmethod
    def infer(ins: list[TensorType], attrs: dict[str, Any]) -> list[TensorType]:
        check_act(ins[0], "hw_weigh")
        route_type(ins[1], attrs["slot"], "hw_weigh")
        if ins[1].shape[0] != ins[0].shape[0]:
            raise InferError(f"hw_weigh route {ins[1]} does not match the rows of {ins[0]}")
        return [ins[0]]

    @staticmethod
    def ref(ins: list[np.ndarray], attrs: dict[str, Any], ctx: RefContext) -> list[np.ndarray]:
        w = ins[1][:, 2 * attrs["slot"] + 1].astype(np.int64)[:, None]
        return [hm.saturate(hm.shift_round(ins[0].astype(np.int64) * w, hm.ACT_FRAC))]
