"""RoPE's angles as transformers 4.x computes them, rewritten into the form llmc's ``fuse`` reads.

transformers before 5 (which optimum's exporter requires) computes the rotary angles of
``position_ids`` [B, L] as an outer product by a matrix multiplication::

    freqs = (inv_freq[None, :, None].float().expand(B, -1, 1) @ position_ids[:, None, :].float()).transpose(1, 2)

which ``torch.onnx.export`` writes as ``Transpose(MatMul(Cast(Expand(C)), Cast(Unsqueeze(position_ids,
1))), perm=[0, 2, 1])`` with ``C`` the constant ``inv_freq`` of shape [1, H, 1]. The inner dimension
of that product is 1, so each element is one float32 product ``inv_freq[i] * position[j]`` (no sum
to reorder), the value ``Mul(Cast(Unsqueeze(position_ids, 2)), inv_freq)`` gives at [b, j, i], which
is how transformers 5 and the dynamo exporter write it and what ``fuse`` turns into ``rope``. The
rewrite is made only where that is proven from the graph: the constant is float32 of shape
[1, H, 1] (or [H, 1]) reached only through ``Expand`` (which copies values) and casts to float32,
the other operand is ``position_ids`` (int64) unsqueezed at axis 1 and cast to float32, and the
product's only reader is that ``Transpose``.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def angles_as_products(g: onnx.GraphProto) -> int:
    """Rewrite each proven outer-product angle computation in place; the number rewritten."""
    producers = {out: node for node in g.node for out in node.output}
    consts = {t.name: t for t in g.initializer}
    readers: dict[str, list[onnx.NodeProto]] = {}
    for node in g.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    outputs = {vi.name for vi in g.output}
    rewritten = 0
    for matmul in [n for n in g.node if n.op_type == "MatMul" and n.domain in ("", "ai.onnx")]:
        inv_freq = _inv_freq(matmul.input[0], producers, consts)
        after = readers.get(matmul.output[0], [])
        if inv_freq is None or not _is_positions(matmul.input[1], producers, consts) or len(after) != 1 \
                or matmul.output[0] in outputs or after[0].op_type != "Transpose" or _perm(after[0]) != [0, 2, 1]:
            continue
        transpose, name = after[0], f"{matmul.output[0]}_llmc"
        g.initializer.append(numpy_helper.from_array(inv_freq, f"{name}_inv_freq"))
        g.initializer.append(numpy_helper.from_array(np.array([2], np.int64), f"{name}_axis"))
        at = list(g.node).index(matmul)
        new = [helper.make_node("Unsqueeze", ["position_ids", f"{name}_axis"], [f"{name}_positions"]),
               helper.make_node("Cast", [f"{name}_positions"], [f"{name}_float"], to=TensorProto.FLOAT),
               helper.make_node("Mul", [f"{name}_float", f"{name}_inv_freq"], [transpose.output[0]])]
        g.node.remove(matmul)
        g.node.remove(transpose)
        for offset, node in enumerate(new):
            g.node.insert(at + offset, node)
        rewritten += 1
    return rewritten


def _inv_freq(name: str, producers: dict, consts: dict) -> np.ndarray | None:
    """The float32 vector [H] that ``name`` copies: a float32 constant [1, H, 1] or [H, 1] through
    ``Expand``s and casts to float32 only."""
    while name in producers:
        node = producers[name]
        if not (node.op_type == "Expand" or _is_float_cast(node)):
            return None
        name = node.input[0]
    if name not in consts or consts[name].data_type != TensorProto.FLOAT:
        return None
    value = numpy_helper.to_array(consts[name])
    if value.ndim not in (2, 3) or value.shape[-1] != 1 or any(d != 1 for d in value.shape[:-2]):
        return None
    return value.reshape(-1).astype(np.float32)


def _is_positions(name: str, producers: dict, consts: dict) -> bool:
    """Whether ``name`` is ``position_ids`` unsqueezed at axis 1 and cast to float32 (once or more)."""
    casts = 0
    while name in producers and _is_float_cast(producers[name]):
        name, casts = producers[name].input[0], casts + 1
    node = producers.get(name)
    if casts == 0 or node is None or node.op_type != "Unsqueeze" or node.input[0] != "position_ids" \
            or len(node.input) < 2:
        return False
    axes = producers.get(node.input[1])
    if axes is not None and axes.op_type == "Constant":
        value = next((a.t for a in axes.attribute if a.name == "value"), None)
    else:
        value = consts.get(node.input[1])
    return value is not None and numpy_helper.to_array(value).reshape(-1).tolist() in ([1], [-2])


def _is_float_cast(node: onnx.NodeProto) -> bool:
    return node.op_type == "Cast" and any(a.name == "to" and a.i == TensorProto.FLOAT for a in node.attribute)


def _perm(node: onnx.NodeProto) -> list[int] | None:
    return next((list(a.ints) for a in node.attribute if a.name == "perm"), None)
