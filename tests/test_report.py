"""llmc.report on small hand-built modules: every number is computed by hand."""

from __future__ import annotations

import json

import pytest

from llmc.ir import F16, F32, I64, Builder, Function, Module, Param, QuantEncoding, TensorType, verify_module
from llmc.ir.types import DType
from llmc.report import analyze, kv_bytes_per_token, op_counts, param_group, param_groups, tensor_bytes


def _module() -> Module:
    """prefill: ids -> embedding -> 2 linear layers -> head; decode: concat of an f16 KV cache."""
    module = Module("toy", {"arch": "toy", "max_position": 64})
    shapes = {
        "model.embed_tokens.weight": ((16, 8), F32),
        "model.layers.0.w": ((8, 8), F32),
        "model.layers.1.w": ((8, 8), F16),
        "lm_head.weight": ((16, 8), F32),
        "model.norm.weight": ((8,), F32),
    }
    for name, (shape, dtype) in shapes.items():
        module.params[name] = Param(name, TensorType.of(shape, dtype))
    prefill = Function("prefill")
    b = Builder(module, prefill)
    x = b.op("embedding", [b.param("model.embed_tokens.weight"), b.input("input_ids", TensorType.of((1, "L"), I64))])
    x = b.op("linear", [x, b.param("model.layers.0.w")])
    x = b.op("add", [x, b.op("cast", [b.op("linear", [b.op("cast", [x], {"dtype": F16}), b.param("model.layers.1.w")])],
                              {"dtype": F32})])
    x = b.op("mul", [x, b.param("model.norm.weight")])
    b.ret(b.op("linear", [x, b.param("lm_head.weight")], name="logits"))
    decode = Function("decode")
    b = Builder(module, decode)
    past = b.input("past_k_0", TensorType.of((1, 2, "P", 4), F16))
    new = b.input("k_new", TensorType.of((1, 2, 1, 4), F16))
    b.ret(b.op("concat", [past, new], {"axis": 2}, name="k_0"))
    module.functions = {"prefill": prefill, "decode": decode}
    verify_module(module)
    return module


def test_param_groups_by_layer() -> None:
    groups = {g.label: g for g in param_groups(_module())}
    assert list(groups) == ["embedding", "layer 0", "layer 1", "head", "other"]
    assert (groups["embedding"].tensors, groups["embedding"].params, groups["embedding"].bytes) == (1, 128, 512)
    assert (groups["layer 0"].params, groups["layer 0"].bytes) == (64, 256)
    assert (groups["layer 1"].params, groups["layer 1"].bytes) == (64, 128)  # f16
    assert (groups["head"].params, groups["other"].params, groups["other"].bytes) == (128, 8, 32)


def test_op_counts_commonest_first() -> None:
    prefill = _module().functions["prefill"]
    counts = op_counts(prefill)
    assert counts == {"param": 5, "linear": 3, "cast": 2, "add": 1, "embedding": 1, "mul": 1}
    assert list(counts) == ["param", "linear", "cast", "add", "embedding", "mul"]
    assert sum(counts.values()) == len(prefill.nodes)


def test_kv_bytes_per_token_counts_only_the_cache() -> None:
    module = _module()
    assert kv_bytes_per_token(module) == 2 * 4 * 2  # past_k_0 grows by 2 heads x 4 dims of f16 per token
    del module.functions["decode"]
    assert kv_bytes_per_token(module) == 0


def test_analyze_totals_and_signatures() -> None:
    report = analyze(_module())
    assert (report.name, report.arch, report.has_weights) == ("toy", "toy", False)
    assert (report.tensors, report.params, report.bytes) == (5, 392, 512 + 256 + 128 + 512 + 32)
    assert (report.kv_bytes_per_token, report.max_position) == (16, 64)
    prefill, decode = report.functions
    assert (prefill.name, prefill.nodes, prefill.symbols) == ("prefill", 13, ["L"])
    assert [(s.name, s.type) for s in prefill.inputs] == [("input_ids", "tensor<1xLxi64>")]
    assert [(s.name, s.type) for s in prefill.outputs] == [("logits", "tensor<1xLx16xf32>")]
    assert decode.symbols == ["P"]
    assert [s.type for s in decode.outputs] == ["tensor<1x2xP+1x4xf16>"]


def test_to_dict_is_json() -> None:
    data = json.loads(json.dumps(analyze(_module()).to_dict()))
    assert data["groups"][1] == {"kind": "layer", "index": 0, "tensors": 1, "params": 64, "bytes": 256}
    assert data["functions"][0]["inputs"] == [{"name": "input_ids", "type": "tensor<1xLxi64>"}]
    assert data["functions"][0]["ops"]["linear"] == 3


@pytest.mark.parametrize(
    ("name", "group"),
    [
        ("model.layers.12.self_attn.q_proj.weight", ("layer", 12)),
        ("transformer.h.3.attn.c_attn.bias", ("layer", 3)),
        ("model.decoder.layers.0.fc1.weight", ("layer", 0)),
        ("model.embed_tokens.weight", ("embedding", None)),
        ("model.decoder.embed_positions.weight", ("embedding", None)),
        ("transformer.wte.weight", ("embedding", None)),
        ("transformer.wpe.weight", ("embedding", None)),
        ("lm_head.weight", ("head", None)),
        ("model.norm.weight", ("other", None)),
        ("model.rotary_emb.inv_freq", ("other", None)),
        ("transformer.ln_f.bias", ("other", None)),
    ],
)
def test_param_group_names(name: str, group: tuple[str, int | None]) -> None:
    assert param_group(name) == group


def test_tensor_bytes_packs_narrow_types() -> None:
    codes = TensorType.of((64, 128), DType("int", 4), (QuantEncoding(bits=4, group=32),))
    assert tensor_bytes(codes) == 64 * 128 // 2
    assert tensor_bytes(TensorType.of((3,), DType("uint", 3))) == 2  # 9 bits round up
    assert tensor_bytes(TensorType.of((), F16)) == 2
