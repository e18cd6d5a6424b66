"""onnxruntime's com.microsoft ops of LLM exports (SkipLayerNormalization,
SkipSimplifiedLayerNormalization, RotaryEmbedding, GroupQueryAttention) one by one: single-op
graphs over random shapes and attributes (GroupQueryAttention: prompts, padded batches, growing
and fixed-buffer caches, rotary, windows, sinks; and as onnxruntime-genai feeds it, from an
attention mask over symbolic dims), imported as plain functions and run through llmc's
interpreter, agree with onnxruntime within 1e-6 of the reference's largest magnitude (float16
results bit for bit); malformed nodes are refused in one line naming the node."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

import onnx  # noqa: E402
from onnx_cases import Case, build, check, data, node  # noqa: E402
from zoo import refused_in_one_line  # noqa: E402

RNG = np.random.default_rng(99)
F32, F16, I64 = np.float32, np.float16, np.int64
MS = "com.microsoft"


def d(dtype: Any, *shape: int) -> np.ndarray:
    return data(RNG, dtype, shape)


def ms(op: str, inputs: list[str], outputs: str | list[str] = "y", **attrs: Any) -> onnx.NodeProto:
    return node(op, inputs, outputs, domain=MS, **attrs)


# -- SkipLayerNormalization, SkipSimplifiedLayerNormalization --------------------------------------
SKIP_OUTPUTS = ["y", "mean", "inv", "sum"]


def skip_cases() -> list[Case]:
    cases = []
    for op in ("SkipLayerNormalization", "SkipSimplifiedLayerNormalization"):
        simple = op.startswith("SkipSimplified")
        vectors = ["gamma", "bias"] if simple else ["gamma", "beta", "bias"]
        for x_shape, skip_shape in (((2, 5, 16), (2, 5, 16)), ((2, 5, 16), (1, 5, 16)), ((3, 5, 24), (5, 24)),
                                    ((7, 8), (7, 8))):
            hidden = x_shape[-1]
            feeds = {"x": d(F32, *x_shape) + 1, "skip": d(F32, *skip_shape)}
            inits = {name: d(F32, hidden) for name in vectors}
            tag = f"{op}/{x_shape}+{skip_shape}"
            cases.append(Case(tag, [ms(op, ["x", "skip", *vectors], SKIP_OUTPUTS, epsilon=1e-5)], feeds,
                              outputs=SKIP_OUTPUTS, inits=inits))
            cases.append(Case(f"{tag}/y-only", [ms(op, ["x", "skip", *vectors], epsilon=1e-6)], feeds, inits=inits))
        feeds = {"x": d(F32, 2, 3, 8), "skip": d(F32, 2, 3, 8), "gamma": d(F32, 8)}
        cases.append(Case(f"{op}/gamma-only/default-eps", [ms(op, ["x", "skip", "gamma"], SKIP_OUTPUTS)], feeds,
                          outputs=SKIP_OUTPUTS))
        cases.append(Case(f"{op}/sum-only", [ms(op, ["x", "skip", "gamma"], ["y", "", "", "sum"])], feeds,
                          outputs=("y", "sum")))
        cases.append(Case(f"{op}/symbolic", [ms(op, ["x", "skip", "gamma"], SKIP_OUTPUTS)], feeds,
                          outputs=SKIP_OUTPUTS, dims={"x": ["B", "S", 8], "skip": ["B", "S", 8]}))
        f16 = {"x": (d(F32, 2, 5, 16) * 3).astype(F16), "skip": (d(F32, 5, 16) * 3).astype(F16)}
        inits16 = {name: d(F16, 16) for name in vectors}
        cases.append(Case(f"{op}/f16", [ms(op, ["x", "skip", *vectors], SKIP_OUTPUTS)], f16, outputs=SKIP_OUTPUTS,
                          inits=inits16))
        cases.append(Case(f"{op}/f16/y-only", [ms(op, ["x", "skip", *vectors], ["y", "", "", "sum"])], f16,
                          outputs=("y", "sum"), inits=inits16))
    return cases


# -- RotaryEmbedding -------------------------------------------------------------------------------
def rotary_case(tag: str, x_shape: tuple[int, ...], half: int, positions: np.ndarray, dtype: Any = F32,
                **attrs: Any) -> Case:
    cache = 16
    angles = np.arange(cache)[:, None] * (0.5 ** np.arange(half))[None, :]
    feeds = {"x": d(dtype, *x_shape), "pos": positions}
    inits = {"cos": np.cos(angles).astype(dtype), "sin": np.sin(angles).astype(dtype)}
    return Case(f"RotaryEmbedding/{tag}", [ms("RotaryEmbedding", ["x", "pos", "cos", "sin"], **attrs)], feeds,
                inits=inits)


def rotary_cases() -> list[Case]:
    cases = []
    b, s, heads, head = 2, 5, 3, 8
    pos = RNG.integers(0, 16, (b, s)).astype(I64)
    for inter in (0, 1):
        cases += [
            rotary_case(f"3d/inter{inter}", (b, s, heads * head), head // 2, pos, interleaved=inter, num_heads=heads),
            rotary_case(f"3d-no-heads/inter{inter}", (b, s, heads * head), head // 2, pos, interleaved=inter),
            rotary_case(f"4d/inter{inter}", (b, heads, s, head), head // 2, pos, interleaved=inter),
            rotary_case(f"start/inter{inter}", (b, s, heads * head), head // 2, np.array([7], I64),
                        interleaved=inter, num_heads=heads),
            rotary_case(f"f16/inter{inter}", (b, heads, s, head), head // 2, pos, F16, interleaved=inter),
        ]
        for rotary in (4, 6):
            cases += [rotary_case(f"partial{rotary}/3d/inter{inter}", (b, s, heads * head), rotary // 2, pos,
                                  interleaved=inter, num_heads=heads, rotary_embedding_dim=rotary),
                      rotary_case(f"partial{rotary}/4d/inter{inter}", (b, heads, s, head), rotary // 2, pos,
                                  interleaved=inter, num_heads=heads, rotary_embedding_dim=rotary)]
    cases.append(rotary_case("scale-unread", (1, 4, 2 * 16), 8, pos[:1, :4], num_heads=2, scale=0.5))
    symbolic = rotary_case("symbolic", (b, s, heads * head), head // 2, pos, num_heads=heads)
    symbolic.dims = {"x": ["B", "S", heads * head], "pos": ["B", "S"]}
    cases.append(symbolic)
    return cases


# -- GroupQueryAttention ---------------------------------------------------------------------------
GQA_INPUTS = ["q", "k", "v", "past_k", "past_v", "seqlens", "total", "cos", "sin", "pos", "bias", "sink"]
GQA_OUTPUTS = ["y", "present_k", "present_v"]


def gqa_case(tag: str, batch: int, seq: int, past: int | None, seqlens: list[int], total: int, heads: int = 4,
             kv_heads: int = 2, head: int = 16, packed: bool = False, rotary: int = 0, dtype: Any = F32,
             extra: dict[str, np.ndarray] | None = None, runtime_total: bool = False, **attrs: Any) -> Case:
    """A GroupQueryAttention node; total_sequence_length an initializer unless ``runtime_total``."""
    feeds = {"q": d(dtype, batch, seq, (heads + 2 * kv_heads if packed else heads) * head)}
    if not packed:
        feeds |= {"k": d(dtype, batch, seq, kv_heads * head), "v": d(dtype, batch, seq, kv_heads * head)}
    if past is not None:
        feeds |= {"past_k": d(dtype, batch, kv_heads, past, head), "past_v": d(dtype, batch, kv_heads, past, head)}
    feeds |= {"seqlens": np.array(seqlens, np.int32)} | (extra or {})
    inits = {} if runtime_total else {"total": np.array(total, np.int32)}
    if runtime_total:
        feeds["total"] = np.array(total, np.int32)
    if rotary:
        angles = np.arange(32)[:, None] * (0.7 ** np.arange(rotary // 2))[None, :]
        inits |= {"cos": np.cos(angles).astype(dtype), "sin": np.sin(angles).astype(dtype)}
        attrs["do_rotary"] = 1
    names = [name if name in feeds or name in inits else "" for name in GQA_INPUTS]
    while not names[-1]:
        names.pop()
    return Case(f"GroupQueryAttention/{tag}", [ms("GroupQueryAttention", names, GQA_OUTPUTS, num_heads=heads,
                                                  kv_num_heads=kv_heads, **attrs)],
                feeds, outputs=GQA_OUTPUTS, inits=inits)


def genai_case(past: int, seq: int, mask: np.ndarray) -> Case:
    """As onnxruntime-genai exports it: symbolic dims, seqlens_k and total_sequence_length computed
    from the attention mask [B, P + S] (total known at import as P + S: a growing cache)."""
    case = gqa_case(f"genai/past{past}", 2, seq, past, [0, 0], 0, rotary=16)
    del case.inits["total"], case.feeds["seqlens"]
    case.feeds["mask"] = mask
    case.inits["one"] = np.array([1], I64)
    case.nodes[:0] = [node("ReduceSum", ["mask", "one"], "count", keepdims=0), node("Sub", ["count", "one"], "last"),
                      node("Cast", ["last"], "seqlens", to=onnx.TensorProto.INT32), node("Shape", ["mask"], "dims"),
                      node("Gather", ["dims", "one"], "width"), node("Cast", ["width"], "total",
                                                                      to=onnx.TensorProto.INT32)]
    case.dims = {"q": ["B", "S", 64], "k": ["B", "S", 32], "v": ["B", "S", 32], "past_k": ["B", 2, "P", 16],
                 "past_v": ["B", 2, "P", 16], "mask": ["B", "P + S"]}
    return case


def gqa_cases() -> list[Case]:
    cases = [
        gqa_case("prompt", 2, 5, None, [4, 4], 5),
        gqa_case("prompt/padded", 2, 5, None, [2, 4], 5, runtime_total=True),
        gqa_case("prompt/packed/mha", 2, 4, None, [3, 1], 4, heads=2, kv_heads=2, packed=True),
        gqa_case("prompt/scale-softcap", 2, 5, None, [4, 3], 5, scale=0.3, softcap=2.0),
        gqa_case("prompt/bidirectional", 2, 5, None, [4, 2], 5, causal=0),
        gqa_case("decode/growing", 2, 1, 6, [6, 3], 7),
        gqa_case("decode/fixed-buffer", 2, 1, 8, [6, 3], 7),
        gqa_case("chunk/growing", 1, 3, 4, [6], 7, heads=6, kv_heads=2),
        gqa_case("chunk/fixed-buffer", 1, 3, 8, [6], 7),
        gqa_case("prompt/fixed-buffer", 2, 5, 8, [4, 2], 5),
        gqa_case("bias", 2, 5, None, [4, 2], 5, softcap=1.0, extra={"bias": d(F32, 2, 1, 5, 5)}),
        gqa_case("bias/fixed-buffer", 2, 1, 8, [6, 3], 7, extra={"bias": d(F32, 1, 4, 1, 7)}),
        gqa_case("sink", 2, 5, None, [4, 2], 5, softcap=1.5, extra={"sink": d(F32, 4)}),
        gqa_case("sink/decode-window", 2, 1, 6, [6, 4], 7, local_window_size=3, extra={"sink": d(F32, 4)}),
        gqa_case("smooth", 2, 1, 6, [6, 3], 7, smooth_softmax=1),
        gqa_case("f16", 2, 5, None, [4, 2], 5, dtype=F16),
        gqa_case("f16/decode-rotary", 2, 1, 6, [6, 3], 7, dtype=F16, rotary=16),
    ]
    for past, seq, mask in ((0, 5, [[1] * 5, [1] * 3 + [0] * 2]), (4, 1, [[1] * 5, [1] * 5])):
        cases.append(genai_case(past, seq, np.array(mask, I64)))
    for window in (1, 2, 3):
        cases += [gqa_case(f"window{window}/prompt", 2, 6, None, [5, 3], 6, local_window_size=window),
                  gqa_case(f"window{window}/decode", 2, 1, 6, [6, 4], 7, local_window_size=window)]
    for inter in (0, 1):
        cases += [gqa_case(f"rotary/prompt/inter{inter}", 2, 5, None, [4, 2], 5, rotary=16, rotary_interleaved=inter),
                  gqa_case(f"rotary/decode/inter{inter}", 2, 1, 6, [6, 3], 7, rotary=16, rotary_interleaved=inter),
                  gqa_case(f"rotary/partial/inter{inter}", 2, 4, None, [3, 3], 4, head=32, rotary=16,
                           rotary_interleaved=inter),
                  gqa_case(f"rotary/packed/inter{inter}", 2, 5, None, [4, 4], 5, packed=True, rotary=16,
                           rotary_interleaved=inter),
                  gqa_case(f"rotary/chunk-fixed/inter{inter}", 1, 3, 8, [5], 6, rotary=16, rotary_interleaved=inter)]
    return cases


CASES = [*skip_cases(), *rotary_cases(), *gqa_cases()]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_contrib_op_matches_onnxruntime(case: Case) -> None:
    check(case)


def test_fused_forms() -> None:
    """Y alone is one rms_norm / layer_norm over the sum (the statistics become primitives); a
    GroupQueryAttention without a sink is one attention."""
    case = next(c for c in CASES if c.id == "SkipSimplifiedLayerNormalization/(2, 5, 16)+(2, 5, 16)/y-only")
    assert "rms_norm" in {n.op for n in check(case).functions["main"].nodes}
    case = next(c for c in CASES if c.id == "SkipLayerNormalization/(2, 5, 16)+(1, 5, 16)")
    assert "layer_norm" not in {n.op for n in check(case).functions["main"].nodes}
    case = next(c for c in CASES if c.id == "GroupQueryAttention/decode/growing")
    assert "attention" in {n.op for n in check(case).functions["main"].nodes}


# -- errors ----------------------------------------------------------------------------------------
def bad_cases() -> dict[str, tuple[Case, str]]:
    x, pos = d(F32, 2, 5, 24), RNG.integers(0, 16, (2, 5)).astype(I64)
    return {
        "skip shape": (Case("bad", [ms("SkipLayerNormalization", ["x", "s", "g"])],
                            {"x": d(F32, 2, 5, 8), "s": d(F32, 2, 1, 8)}, inits={"g": d(F32, 8)}),
                       r"node skiplayernormalization_y \(SkipLayerNormalization\): skip is tensor<2x1x8xf32>, "
                       r"expected f32 of shape \[2, 5, 8\] or its last two dims"),
        "gamma shape": (Case("bad", [ms("SkipSimplifiedLayerNormalization", ["x", "s", "g"])],
                             {"x": d(F32, 2, 5, 8), "s": d(F32, 2, 5, 8)}, inits={"g": d(F32, 1, 8)}),
                        r"\(SkipSimplifiedLayerNormalization\): gamma is tensor<1x8xf32>, expected f32 \[8\]"),
        "rotary without heads": (rotary_case("bad", x.shape, 2, pos, rotary_embedding_dim=4),
                                 r"\(RotaryEmbedding\): rotary_embedding_dim needs num_heads"),
        "cache columns": (rotary_case("bad", x.shape, 3, pos, num_heads=3),
                          r"\(RotaryEmbedding\): cos_cache has 3 columns, expected rotary_embedding_dim / 2 = 4"),
        "gqa total": (gqa_case("bad", 1, 1, 4, [4], 5, runtime_total=True),
                      r"\(GroupQueryAttention\): total_sequence_length \(tensor data\) must be P \+ S "
                      r"\(a growing cache\)"),
        "gqa position_ids": (gqa_case("bad", 1, 2, None, [1], 2, extra={"pos": np.zeros((1, 2), I64)}),
                             r"\(GroupQueryAttention\): input position_ids is not supported"),
        "gqa window": (gqa_case("bad", 1, 2, None, [1], 2, causal=0, local_window_size=1),
                       r"\(GroupQueryAttention\): local_window_size needs causal attention"),
        "stash_type": (Case("bad", [node("SimplifiedLayerNormalization", ["x", "g"], stash_type=11)],
                            {"x": d(F32, 2, 8)}, inits={"g": d(F32, 8)}),
                       r"\(SimplifiedLayerNormalization\): stash_type 11 is not supported"),
    }


@pytest.mark.parametrize("what", list(bad_cases()))
def test_malformed_nodes_refused(what: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    case, message = bad_cases()[what]
    model = build(case)
    for vi in model.graph.output:  # no schema, no inferred type: the input's
        if not vi.type.HasField("tensor_type"):
            vi.type.CopyFrom(model.graph.input[0].type)
    path = tmp_path / "bad.onnx"
    onnx.save(model, path)
    refused_in_one_line(path, message, f"{path}: node ", tmp_path / "out.llmc", capsys)
