"""ONNX handlers of normalisation: LayerNormalization, RMSNormalization (opset 23), onnxruntime's
SimplifiedLayerNormalization (its RMSNorm, registered in the default domain) and its
``com.microsoft`` SkipLayerNormalization and SkipSimplifiedLayerNormalization (``input + skip
(+ bias)``, normalised over the last axis).

As onnxruntime's CPU kernels compute them: 16-bit float inputs are normalised in float32 and
rounded once; the Mean and InvStdDev outputs are float32 (``stash_type`` 1, the only stash type
those kernels have); SimplifiedLayerNormalization's Y has the scale's type.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from llmc.compiler.frontend.onnx_registry import CONTRIB_DOMAIN, Attrs, Node, handles
from llmc.compiler.frontend.onnx_values import Operand
from llmc.ir.graph import Value
from llmc.ir.types import F32, F64, Dim, DType

if TYPE_CHECKING:
    from llmc.compiler.frontend.onnx_converter import Converter

STASH_FLOAT = 1  # TensorProto.FLOAT
SKIP_EPSILON = 1e-12  # the Skip ops' default epsilon (onnxruntime's schema)


def cast(c: Converter, x: Value, dtype: DType) -> Value:
    """``x`` as ``dtype`` (x itself when it has that type)."""
    return x if x.type.dtype == dtype else c.op("cast", [x], {"dtype": dtype})


def work_dtype(dtype: DType) -> DType:
    """The type onnxruntime's CPU kernels compute a float type in: float64 itself, others float32."""
    return F64 if dtype == F64 else F32


def _vectors(c: Converter, extras: list[Value], width: Dim) -> list[Value] | None:
    """The scale and bias as [width] vectors when they are ones (up to leading 1s), else None."""
    vectors = []
    for v in extras:
        if v.type.shape[-1:] != (width,) or any(d != Dim.of(1) for d in v.type.shape[:-1]):
            return None
        vectors.append(c.reshape(v, [width]))
    return vectors


def normalize(c: Converter, x: Value, axis: int, eps: float, rms: bool, scale: Value, bias: Value | None,
              dtype: DType, fused: bool) -> tuple[Value, Value | None, Value]:
    """``(x - mean) / sqrt(var + eps) * scale + bias`` over the axes from ``axis`` on (``rms``: no
    mean), of ``dtype``, with the float32 mean (None for ``rms``) and ``1 / sqrt(var + eps)``
    (keepdims). ``fused``: Y may be ``layer_norm`` / ``rms_norm`` when the axis is the last and
    the scale and bias are vectors (the statistics are then left unused, for DCE)."""
    rank, work = x.type.rank, work_dtype(x.type.dtype)
    extras = [scale] if bias is None else [scale, bias]
    xw = cast(c, x, work)
    axes = list(range(axis, rank))
    mean = None if rms else c.op("reduce_mean", [xw], {"axes": axes, "keepdim": True})
    centred = xw if mean is None else c.op("sub", [xw, mean])
    var = c.op("reduce_mean", [c.op("mul", [centred, centred])], {"axes": axes, "keepdim": True})
    std = c.op("sqrt", [c.op("add", [var, c.scalar(eps, work, rank)])])
    inv = cast(c, c.op("reciprocal", [std]), F32)
    mean = None if mean is None else cast(c, mean, F32)
    vectors = _vectors(c, extras, x.type.shape[-1]) if fused and axis == rank - 1 else None
    if vectors is not None:
        same = all(v.type.dtype == x.type.dtype for v in extras) and dtype == x.type.dtype
        ins = [x, *vectors] if same else [xw, *(cast(c, v, work) for v in vectors)]
        y = c.op("rms_norm" if rms else "layer_norm", ins, {"eps": eps})
        return cast(c, y, dtype), mean, inv
    y = c.op("div", [centred, std])
    for v, op in zip(extras, ("mul", "add")):
        y = c.op(op, [y, cast(c, v, work)])
    return cast(c, y, dtype), mean, inv


def _stats_used(c: Converter, n: Node, first: int, last: int) -> bool:
    return any(c.uses.get(name) for name in n.output[first:last] if name)


@handles("LayerNormalization", "SimplifiedLayerNormalization", "RMSNormalization")
def _layer_norm(c: Converter, n: Node, attrs: Attrs) -> list[Operand]:
    """``layer_norm`` / ``rms_norm`` over the last axis with [C] scale and bias; any other axis or
    scale, or a use of the Mean / InvStdDev outputs, as primitives."""
    x = c.tensor(n.input[0])
    rank = x.type.rank
    axis = int(attrs.get("axis", -1))
    if not -rank <= axis < rank:
        raise c.error(f"axis {axis} is out of range for rank {rank}")
    stash = int(attrs.get("stash_type", STASH_FLOAT))
    if n.op_type != "RMSNormalization" and stash != STASH_FLOAT:
        raise c.error(f"stash_type {stash} is not supported (onnxruntime's kernels stash float32, stash_type 1)")
    rms = n.op_type != "LayerNormalization"
    scale = c.tensor(n.input[1])
    bias = c.tensor(n.input[2]) if not rms and c.has_input(n, 2) else None
    y, mean, inv = normalize(c, x, axis % rank, float(attrs.get("epsilon", 1e-5)), rms, scale, bias,
                             scale.type.dtype if rms else x.type.dtype, fused=not _stats_used(c, n, 1, 3))
    return [y, inv] if mean is None else [y, mean, inv]


@handles("SkipLayerNormalization", "SkipSimplifiedLayerNormalization", domain=CONTRIB_DOMAIN)
def _skip_layer_norm(c: Converter, n: Node, attrs: Attrs) -> list[Operand]:
    """``s = input + skip (+ bias)`` (output 3, rounded to the input's type) normalised over the
    last axis from float32 ``s``: outputs Y, the mean (float32 zeros for the simplified op, whose
    kernel writes none), 1 / sqrt(var + eps) and ``s``. The skip is [B, S, H], [1, S, H] or [S, H]
    for an input [B, S, H] (as onnxruntime accepts); gamma, beta and bias are [H]."""
    simplified = n.op_type == "SkipSimplifiedLayerNormalization"
    x, skip = c.tensor(n.input[0]), c.tensor(n.input[1])
    dtype, shape = x.type.dtype, x.type.shape
    if not dtype.is_float or x.type.rank not in (2, 3):
        raise c.error(f"input is {x.type}, expected floats [B, S, H] or [S, H]")
    lead = skip.type.shape[:-2]
    if skip.type.dtype != dtype or skip.type.shape[-2:] != shape[-2:] or skip.type.rank > x.type.rank \
            or lead not in ((), (Dim.of(1),), shape[:1]):
        raise c.error(f"skip is {skip.type}, expected {dtype} of shape [{', '.join(map(str, shape))}] "
                      f"or its last two dims")

    def vector(index: int, what: str) -> Value | None:
        if not c.has_input(n, index):
            return None
        v = c.tensor(n.input[index])
        if v.type.dtype != dtype or v.type.shape != shape[-1:]:
            raise c.error(f"{what} is {v.type}, expected {dtype} [{shape[-1]}]")
        return v

    gamma = vector(2, "gamma")
    if gamma is None:
        raise c.error("gamma is required")
    beta = None if simplified else vector(3, "beta")
    bias = vector(3 if simplified else 4, "bias")
    work = work_dtype(dtype)
    total = c.op("add", [cast(c, x, work), cast(c, skip, work)])
    if bias is not None:
        total = c.op("add", [total, cast(c, bias, work)])
    eps = float(attrs.get("epsilon", SKIP_EPSILON))
    y, mean, inv = normalize(c, total, x.type.rank - 1, eps, simplified, gamma, beta, dtype,
                             fused=not _stats_used(c, n, 1, 3))
    if mean is None:
        mean = c.b.constant(0, F32, [*shape[:-1], 1])
    return [y, mean, inv, cast(c, total, dtype)]
