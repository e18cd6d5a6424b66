"""Causal-LM exports of other tools rewritten onto llmc's step contract before conversion.

A graph with inputs ``input_ids``, ``attention_mask``, optionally ``position_ids``, and
``past_key_values.N.key`` / ``.value`` per layer, whose outputs are ``logits`` and
``present.N.key`` / ``.value`` (the layout of ``optimum`` exports, of ``torch.onnx.export`` of a
transformers model with its cache, and of onnxruntime-genai's model builder, which lists the
keys of every layer before the values and may name the head size ``kv_cache_dim``), becomes a
step model: ``attention_mask`` is computed from the contract's additive ``mask`` (a key is
attended where some query's mask is 0), the caches and outputs are renamed and put in the
contract's order, the batch is 1, and the module attributes are read from the shapes. The
converted program is then the file's own graph, checked against onnxruntime in the tests.
"""

from __future__ import annotations

import re

import onnx
from onnx import TensorProto, helper, numpy_helper

from llmc.compiler.frontend.onnx_llm_rope import angles_as_products

PAST = re.compile(r"past_key_values\.(\d+)\.(key|value)")
PRESENT = re.compile(r"present\.(\d+)\.(key|value)")
PRESENT_NAME = "present.{}.{}"


def as_step_contract(model: onnx.ModelProto, max_position: int) -> tuple[onnx.ModelProto, dict] | None:
    """``model`` rewritten onto the step contract and its module attributes, when it has a causal
    LM's layout; else None."""
    g = model.graph
    initializers = {t.name for t in g.initializer}
    inputs = {vi.name: vi for vi in g.input if vi.name not in initializers}
    pasts = sorted((int(m[1]), m[2]) for name in inputs if (m := PAST.fullmatch(name)))
    layers = len(pasts) // 2
    outputs = [vi.name for vi in g.output]
    presents = sorted((int(m[1]), m[2]) for name in outputs[1:] if (m := PRESENT.fullmatch(name)))
    caches = [(i, kv) for i in range(layers) for kv in ("key", "value")]
    if not layers or pasts != caches or outputs[:1] != ["logits"] or presents != caches or len(outputs) != len(caches) + 1 \
            or not {"input_ids", "attention_mask"} <= set(inputs) \
            or set(inputs) - {"input_ids", "attention_mask", "position_ids"} - {f"past_key_values.{i}.{kv}" for i, kv in pasts}:
        return None
    model = onnx.ModelProto.FromString(model.SerializeToString())
    g = model.graph
    ids, mask = _dims(inputs["input_ids"]), _dims(inputs["attention_mask"])
    past = _dims(inputs["past_key_values.0.key"])
    if len(ids) != 2 or len(mask) != 2 or len(past) != 4 or not isinstance(past[1], int):
        return None
    head = past[3] if isinstance(past[3], int) else _head_size(g, past[1])
    if head is None:
        return None
    batch = {d for d in (ids[0], mask[0], past[0]) if isinstance(d, str)}
    seq, total, past_len = ids[1], mask[1], past[2]
    if not all(isinstance(d, str) for d in (seq, total, past_len)):
        return None
    _fix_batch(g, batch)
    _float_constants_as_initializers(g)
    angles_as_products(g)  # transformers 4's RoPE angles (optimum's exports), as transformers 5 writes them
    renames = {f"past_key_values.{i}.{kv}": f"past_{kv[0]}_{i}" for i, kv in pasts}
    for node in g.node:
        node.input[:] = [renames.get(name, name) for name in node.input]
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    nodes = [*_attention_mask_nodes(opset), *g.node]  # attention_mask from the contract's mask first
    del g.node[:]
    g.node.extend(nodes)
    by_name = {vi.name: vi for vi in g.input}
    cache_inputs = [by_name[name] for name in renames]  # the contract's order: k_0, v_0, k_1, ...
    for vi in cache_inputs:
        vi.name = renames[vi.name]
    kept = [vi for vi in g.input if vi.name in initializers]
    del g.input[:]
    g.input.extend([_input("input_ids", inputs["input_ids"], [1, seq]),
                    helper.make_tensor_value_info("mask", TensorProto.FLOAT, [1, 1, seq, total]),
                    helper.make_tensor_value_info("position_ids", TensorProto.INT64, [1, seq]),  # unread without one
                    *cache_inputs, *kept])
    by_name = {vi.name: vi for vi in g.output}
    new_outputs = [by_name["logits"]]
    for i, kv in caches:
        _rename_output(g, PRESENT_NAME.format(i, kv), f"{kv[0]}_{i}")
        new_outputs.append(_renamed(by_name[PRESENT_NAME.format(i, kv)], f"{kv[0]}_{i}"))
    del g.output[:]
    g.output.extend(new_outputs)
    vocab = _dims(g.output[0])[-1]
    attrs = {"arch": "onnx", "layers": layers, "kv_heads": past[1], "head_dim": head, "max_position": max_position,
             "bos_token_id": -1, "eos_token_id": -1, **({"vocab_size": vocab} if isinstance(vocab, int) else {})}
    _bind(g, {seq: "L", past_len: "P", total: "P+L", **({} if isinstance(past[3], int) else {past[3]: head})})
    return model, attrs



def _head_size(g: onnx.GraphProto, kv_heads: int) -> int | None:
    """The head size of a cache whose last dim is named, not a number (onnxruntime-genai's
    ``kv_cache_dim``): read from the first GroupQueryAttention's output, ``num_heads`` heads wide,
    or its packed or separate query's width, as the file's value_info or the projection gives it."""
    gqa = next((n for n in g.node if n.op_type == "GroupQueryAttention"), None)
    if gqa is None:
        return None
    attrs = {a.name: helper.get_attribute_value(a) for a in gqa.attribute}
    heads = int(attrs.get("num_heads", 0))
    packed = len(gqa.input) < 2 or not gqa.input[1]
    for name, count in ((gqa.output[0], heads), (gqa.input[0], heads + 2 * kv_heads if packed else heads)):
        width = _width(g, name)
        if width is not None and count > 0 and width % count == 0:
            return width // count
    return None


def _width(g: onnx.GraphProto, name: str) -> int | None:
    """The last dim of value ``name``: from value_info, or from the weight of the MatMul /
    MatMulNBits (through a bias Add) computing it."""
    for vi in g.value_info:
        if vi.name == name and (dims := _dims(vi)) and isinstance(dims[-1], int) and dims[-1] > 0:
            return dims[-1]
    node = next((n for n in g.node if name in n.output), None)
    if node is None:
        return None
    if node.op_type == "MatMulNBits":
        return next((int(helper.get_attribute_value(a)) for a in node.attribute if a.name == "N"), None)
    weights = {t.name: t for t in g.initializer}
    if node.op_type == "MatMul" and node.input[1] in weights and len(weights[node.input[1]].dims) == 2:
        return int(weights[node.input[1]].dims[1])
    if node.op_type == "Add":
        return next((w for operand in node.input if operand not in weights and (w := _width(g, operand))), None)
    return None


def _float_constants_as_initializers(g: onnx.GraphProto) -> None:
    """Float ``Constant`` nodes of more than one element become initializers of that name: the
    TorchScript exporter folds buffers such as RoPE's ``inv_freq`` into constants, which then
    import as parameters, as the dynamo exporter's initializers do."""
    for node in [n for n in g.node if n.op_type == "Constant" and n.domain in ("", "ai.onnx")]:
        value = next((a.t for a in node.attribute if a.name == "value"), None)
        if value is None or value.data_type not in _FLOATS or numpy_helper.to_array(value).size < 2:
            continue
        g.node.remove(node)
        g.initializer.append(numpy_helper.from_array(numpy_helper.to_array(value), node.output[0]))


_FLOATS = (TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.BFLOAT16, TensorProto.DOUBLE)


def _dims(vi: onnx.ValueInfoProto) -> list[int | str]:
    return [d.dim_value if d.HasField("dim_value") else d.dim_param for d in vi.type.tensor_type.shape.dim]


def _fix_batch(g: onnx.GraphProto, names: set[str]) -> None:
    """Every dim named like the batch becomes 1."""
    for vi in [*g.input, *g.output, *g.value_info]:
        for d in vi.type.tensor_type.shape.dim:
            if d.dim_param in names:
                d.dim_value = 1


def _bind(g: onnx.GraphProto, names: dict[str, str | int]) -> None:
    """The export's dim names replaced by the contract's symbols (or by numbers)."""
    for vi in [*g.input, *g.output, *g.value_info]:
        for d in vi.type.tensor_type.shape.dim:
            if d.dim_param in names:
                bound = names[d.dim_param]
                if isinstance(bound, int):
                    d.dim_value = bound
                else:
                    d.dim_param = bound


def _rename_output(g: onnx.GraphProto, old: str, new: str) -> None:
    """The node computing graph output ``old`` computes ``new`` instead (an Identity to ``new`` where
    no node computes ``old`` or ``new`` names another value), so that the cache outputs are the
    values themselves, not copies of them."""
    taken = {name for node in g.node for name in (*node.input, *node.output)} | {vi.name for vi in g.input} \
        | {t.name for t in g.initializer}
    if new in taken or not any(old in node.output for node in g.node):
        g.node.append(helper.make_node("Identity", [old], [new]))
        return
    for node in g.node:
        node.input[:] = [new if name == old else name for name in node.input]
        node.output[:] = [new if name == old else name for name in node.output]
    for vi in g.value_info:
        if vi.name == old:
            vi.name = new


def _input(name: str, like: onnx.ValueInfoProto, shape: list[int | str]) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, like.type.tensor_type.elem_type, shape)


def _renamed(vi: onnx.ValueInfoProto, name: str) -> onnx.ValueInfoProto:
    out = onnx.ValueInfoProto.FromString(vi.SerializeToString())
    out.name = name
    return out


def _attention_mask_nodes(opset: int) -> list[onnx.NodeProto]:
    """``attention_mask`` [1, P+L] (int64) = 1 where any row of ``mask`` [1, 1, L, P+L] is 0."""
    zero = helper.make_node("Constant", [], ["llmc_mask_zero"], value=helper.make_tensor("z", TensorProto.FLOAT, [], [0.0]))
    seen = helper.make_node("Equal", ["mask", "llmc_mask_zero"], ["llmc_mask_seen"])
    as_int = helper.make_node("Cast", ["llmc_mask_seen"], ["llmc_mask_int"], to=TensorProto.INT64)
    if opset >= 18:
        axes = helper.make_node("Constant", [], ["llmc_mask_axes"],
                                value=helper.make_tensor("a", TensorProto.INT64, [2], [1, 2]))
        reduce = helper.make_node("ReduceMax", ["llmc_mask_int", "llmc_mask_axes"], ["attention_mask"], keepdims=0)
        return [zero, seen, as_int, axes, reduce]
    reduce = helper.make_node("ReduceMax", ["llmc_mask_int"], ["attention_mask"], axes=[1, 2], keepdims=0)
    return [zero, seen, as_int, reduce]
