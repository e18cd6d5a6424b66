"""The ONNX frontend: HF causal LMs exported with ``hf.export_onnx`` import into the IR and agree
with onnxruntime on the same file, with PyTorch, and with the torch.export path; files that are
unreadable or malformed are refused with their name in the message; a file without llmc's
metadata imports as a plain function (tests/frontend/test_onnx_ops.py tests those op by op)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

import onnx  # noqa: E402
from onnx import TensorProto, helper  # noqa: E402

import llmc  # noqa: E402
from llmc.compiler.frontend import hf  # noqa: E402
from llmc.compiler.frontend.onnx import ATTRS_KEY  # noqa: E402
from llmc.errors import FrontendError  # noqa: E402
from llmc.generate.interpreter import InterpreterDevice, causal_mask  # noqa: E402
from llmc.ir.interpreter import run_function  # noqa: E402

_DECODER = dict(vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2, max_position_embeddings=128, initializer_range=0.2)
CONFIGS: dict[str, dict[str, Any]] = {  # large initial weights, so that greedy decoding does not repeat one token
    "llama": _DECODER,
    "qwen2": _DECODER,
    "mistral": _DECODER,
    "gpt2": dict(vocab_size=128, n_embd=64, n_layer=2, n_head=4, n_positions=128, initializer_range=0.2),
    "opt": dict(vocab_size=128, hidden_size=64, ffn_dim=128, num_hidden_layers=2, num_attention_heads=4,
                max_position_embeddings=128, word_embed_proj_dim=64, init_std=0.2),
}
PROMPT = [1, 5, 9, 20, 7]
STEPS = 32
TOLERANCE = 1e-5
# qwen2 and mistral export as llama does (biases, one KV head): under make test-full only
ARCHS = [pytest.param(a, marks=pytest.mark.slow) if a in ("qwen2", "mistral") else a for a in CONFIGS]


def rel_err(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / np.abs(b).max())


class Exported:
    """One architecture's random model, its ONNX file and the imported llmc model."""

    def __init__(self, arch: str, folder: Path, optimize: bool = False) -> None:
        self.config = hf.config_from_dict({"model_type": arch, **CONFIGS[arch]}, arch)
        self.model = hf.build_model(self.config, seed=0)
        self.shape = hf.cache_shape(self.config)
        self.path = hf.export_onnx(self.model, folder / f"{arch}.onnx", max_length=128, optimize=optimize)
        self.llmc = llmc.load(self.path)

    def feeds(self, ids: list[int], past: int, caches: list[np.ndarray] | None = None) -> dict[str, np.ndarray]:
        empty = np.zeros((1, self.shape.kv_heads, 0, self.shape.head_dim), np.float32)
        names = [f"past_{t}_{i}" for i in range(self.shape.layers) for t in "kv"]
        return {"input_ids": np.asarray([ids], np.int64), "mask": causal_mask(len(ids), past),
                "position_ids": np.arange(past, past + len(ids), dtype=np.int64)[None],
                **dict(zip(names, caches or [empty] * len(names), strict=True))}

    def torch_step(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        step = hf.StepModule(self.model, self.shape.layers)
        with torch.no_grad():
            return [t.numpy() for t in step(*(torch.from_numpy(v) for v in feeds.values()))]


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Any:
    cache: dict[tuple[str, bool], Exported] = {}

    def get(arch: str, optimize: bool = False) -> Exported:
        if (arch, optimize) not in cache:
            folder = tmp_path_factory.mktemp(f"{arch}_opt" if optimize else arch)
            cache[arch, optimize] = Exported(arch, folder, optimize)
        return cache[arch, optimize]

    return get


def check_against_onnxruntime(e: Exported) -> None:
    """Prefill, then one decode step on its cache: llmc's IR, onnxruntime and PyTorch agree."""
    session = ort.InferenceSession(str(e.path), providers=["CPUExecutionProvider"])
    feeds = e.feeds(PROMPT, 0)
    ours = run_function(e.llmc.module, "prefill", {k: v for k, v in feeds.items() if not k.startswith("past")})
    theirs = session.run(None, feeds)
    assert rel_err(ours["logits"], theirs[0]) <= TOLERANCE
    assert rel_err(ours["logits"], e.torch_step(feeds)[0]) <= TOLERANCE
    caches = theirs[1:]
    feeds = e.feeds([int(np.argmax(theirs[0][0, -1]))], len(PROMPT), caches)
    ours = run_function(e.llmc.module, "decode", feeds)
    theirs = session.run(None, feeds)
    for name, ref in zip(["logits"] + [f"{t}_{i}" for i in range(e.shape.layers) for t in "kv"], theirs, strict=True):
        assert rel_err(ours[name], ref) <= TOLERANCE, name


@pytest.mark.parametrize("arch", ARCHS)
def test_prefill_and_decode_step_match_onnxruntime_and_torch(exported: Any, arch: str) -> None:
    e = exported(arch)
    assert set(e.llmc.module.functions) == {"prefill", "decode"}
    assert e.llmc.module.attrs == hf.model_attrs(e.config, e.shape)
    check_against_onnxruntime(e)


@pytest.mark.parametrize("arch", ARCHS)
def test_decode_steps_match_torch(exported: Any, arch: str) -> None:
    """32 greedy decode steps through the interpreter, teacher-forcing PyTorch with the same tokens."""
    e = exported(arch)
    device = InterpreterDevice(e.llmc.module)
    logits = device.prefill(PROMPT)
    ref = e.torch_step(e.feeds(PROMPT, 0))
    assert rel_err(logits, ref[0][0, -1]) <= TOLERANCE
    tokens = []
    for step in range(STEPS):
        token = int(np.argmax(logits))
        assert token == int(np.argmax(ref[0][0, -1])), f"step {step}"
        tokens.append(token)
        logits = device.decode(token)
        ref = e.torch_step(e.feeds([token], len(PROMPT) + step, ref[1:]))
        assert rel_err(logits, ref[0][0, -1]) <= TOLERANCE, f"step {step}"
    assert len(set(tokens)) > 3  # the random model does not just repeat a token


@pytest.mark.parametrize("arch", ARCHS)
def test_greedy_tokens_match_torch_export_path(exported: Any, arch: str) -> None:
    e = exported(arch)
    ours = e.llmc.run(prompt_ids=PROMPT, max_new_tokens=STEPS, stop=False).tokens
    theirs = llmc.load(arch, config=CONFIGS[arch], max_length=128).run(
        prompt_ids=PROMPT, max_new_tokens=STEPS, stop=False).tokens
    assert ours == theirs


def test_optimized_export_imports(exported: Any) -> None:
    """The exporter's optimiser folds weight transposes into new initializers, merges equal ones
    and turns SplitToSequence into Split; the import still matches."""
    e = exported("gpt2", optimize=True)
    check_against_onnxruntime(e)
    assert e.llmc.run(prompt_ids=PROMPT, max_new_tokens=8, stop=False).tokens == \
        exported("gpt2").llmc.run(prompt_ids=PROMPT, max_new_tokens=8, stop=False).tokens


def test_parameters_keep_pytorch_names_and_layout(exported: Any) -> None:
    params = exported("llama").llmc.module.params
    assert params["model.layers.0.self_attn.k_proj.weight"].type.static_shape() == (32, 64)
    assert params["model.embed_tokens.weight"].type.static_shape() == (128, 64)
    gpt2 = exported("gpt2").llmc.module.params  # Conv1D weights are stored [in, out]: linear needs [out, in]
    assert gpt2["transformer.h.0.mlp.c_fc.weight"].type.static_shape() == (256, 64)
    for part in ("rows0_64", "rows64_128", "rows128_192"):  # the fused q, k, v projection, split by fuse
        assert gpt2[f"transformer.h.0.attn.c_attn.{part}.weight"].type.static_shape() == (64, 64)


# -- hand-built step graphs --------------------------------------------------------------------------
def const(name: str, dtype: int, values: list[Any], shape: list[int] | None = None) -> onnx.TensorProto:
    return helper.make_tensor(name, dtype, [len(values)] if shape is None else shape, values)


def node(op: str, inputs: list[str], output: str, **attrs: Any) -> onnx.NodeProto:
    return helper.make_node(op, inputs, [output], name=output, **attrs)


def contract_model(extra: list[onnx.NodeProto] = (), attrs: dict[str, Any] | None = None) -> onnx.ModelProto:
    """A one-layer step graph of the contract whose sizes come from shape arithmetic on symbolic dims:
    logits = embed[ids] + (positions < 3), computed from Range(P, P+L); k_0 appends L rows of 0.5
    (ConstantOfShape, then Expand to a shape built from Shape(input_ids)); v_0 appends 2 * embed[ids]
    reshaped to [1, 1, -1, 4]."""
    f, i64 = TensorProto.FLOAT, TensorProto.INT64
    nodes = [
        node("Shape", ["past_k_0"], "p1", start=2, end=3), node("Shape", ["input_ids"], "l1", start=1, end=2),
        node("Squeeze", ["p1"], "p"), node("Squeeze", ["l1"], "l"), node("Add", ["p", "l"], "end"),
        node("Range", ["p", "end", "one"], "pos"), node("Unsqueeze", ["pos", "zero"], "pos2"),
        node("Less", ["pos2", "three"], "early"), node("Where", ["early", "one_f", "zero_f"], "w"),
        node("Unsqueeze", ["w", "minus_one"], "w3"), node("Gather", ["embed", "input_ids"], "emb"),
        node("Add", ["emb", "w3"], "logits"),
        node("ConstantOfShape", ["shape4"], "half", value=const("value", f, [0.5])),
        node("Concat", ["ones2", "l1", "four"], "kshape", axis=0), node("Expand", ["half", "kshape"], "new_k"),
        node("Concat", ["past_k_0", "new_k"], "k_0", axis=2),
        node("Mul", ["emb", "two_f"], "emb2"), node("Reshape", ["emb2", "vshape"], "new_v"),
        node("Concat", ["past_v_0", "new_v"], "v_0", axis=2),
    ]
    initializers = [
        const("embed", f, np.arange(16, dtype=np.float32).tolist(), [4, 4]), const("one", i64, [1], []),
        const("zero", i64, [0]), const("three", i64, [3], []), const("minus_one", i64, [-1]),
        const("one_f", f, [1.0], []), const("zero_f", f, [0.0], []), const("two_f", f, [2.0], []),
        const("shape4", i64, [1, 1, 1, 4]), const("ones2", i64, [1, 1]), const("four", i64, [4]),
        const("vshape", i64, [1, 1, -1, 4]),
    ]
    kv_in, kv_out = [1, 1, "P", 4], [1, 1, "P + L", 4]
    value = helper.make_tensor_value_info
    graph = helper.make_graph(
        [*extra, *nodes], "step",
        [value("input_ids", i64, [1, "L"]), value("mask", f, [1, 1, "L", "S"]),
         value("position_ids", i64, [1, "L"]), value("past_k_0", f, kv_in), value("past_v_0", f, kv_in)],
        [value("logits", f, [1, "L", 4]), value("k_0", f, kv_out), value("v_0", f, kv_out)], initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10)
    if attrs is not None:
        helper.set_model_props(model, {ATTRS_KEY: json.dumps(attrs)})
    return model


ATTRS = {"arch": "llama", "vocab_size": 4, "layers": 1, "kv_heads": 1, "head_dim": 4, "max_position": 16,
         "bos_token_id": -1, "eos_token_id": -1, "config": "{}"}


def test_shape_arithmetic_folds_into_symbolic_ir(tmp_path: Path) -> None:
    path = tmp_path / "toy.onnx"
    onnx.save(contract_model(attrs=ATTRS), path)
    module = llmc.load(path).module
    ops = {n.op for f in module.functions.values() for n in f.nodes}
    assert ops <= {"param", "constant", "iota", "embedding", "lt", "where", "reshape", "add", "mul", "expand",
                   "concat"}, ops
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    for ids, past in (([0, 1, 2, 3, 1], 0), ([2], 5)):
        cache = {name: rng.standard_normal((1, 1, past, 4)).astype(np.float32) for name in ("past_k_0", "past_v_0")}
        feeds = {"input_ids": np.asarray([ids], np.int64), "mask": causal_mask(len(ids), past),
                 "position_ids": np.arange(past, past + len(ids), dtype=np.int64)[None], **cache}
        ours = run_function(module, "decode" if past else "prefill", feeds if past else dict(list(feeds.items())[:3]))
        for name, ref in zip(["logits", "k_0", "v_0"], session.run(None, feeds), strict=True):
            np.testing.assert_array_equal(ours[name], ref, err_msg=name)


def test_truncated_file_is_refused_with_its_name(exported: Any, tmp_path: Path) -> None:
    data = exported("llama").path.read_bytes()
    path = tmp_path / "truncated.onnx"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(FrontendError, match="truncated.onnx"):
        llmc.load(path)


def test_garbage_is_refused_with_its_name(tmp_path: Path) -> None:
    path = tmp_path / "garbage.onnx"
    path.write_bytes(b"\x12\x34 this is not a protobuf \xff\xfe" * 20)
    with pytest.raises(FrontendError, match="garbage.onnx"):
        llmc.load(path)


def test_checker_failure_is_refused_with_its_name(tmp_path: Path) -> None:
    model = contract_model(attrs=ATTRS)
    model.graph.node[-1].input[0] = "undefined"  # an input no node or initializer defines
    path = tmp_path / "broken.onnx"
    onnx.save(model, path)
    with pytest.raises(FrontendError, match=r"broken\.onnx: malformed ONNX model: .*undefined"):
        llmc.load(path)


def test_unsupported_op_names_file_node_and_op(tmp_path: Path) -> None:
    model = contract_model([node("NonMaxSuppression", ["boxes", "scores"], "nms")], ATTRS)
    model.graph.initializer.extend([const("boxes", TensorProto.FLOAT, [0, 0, 1, 1], [1, 1, 4]),
                                    const("scores", TensorProto.FLOAT, [1], [1, 1, 1])])
    path = tmp_path / "nms.onnx"
    onnx.save(model, path)
    with pytest.raises(FrontendError, match=r"nms\.onnx: node nms \(NonMaxSuppression\): unsupported op"):
        llmc.load(path)


def test_foreign_file_without_llmc_metadata_imports_as_a_plain_function(tmp_path: Path) -> None:
    """The same graph without llmc's metadata is no step model: one function @main over its own
    symbols (L, P; S unused), which agrees with onnxruntime."""
    path = tmp_path / "foreign.onnx"
    onnx.save(contract_model(), path)
    module = llmc.load(path).module
    assert list(module.functions) == ["main"]
    main = module.functions["main"]
    assert [v.name for v in main.inputs] == ["input_ids", "mask", "position_ids", "past_k_0", "past_v_0"]
    assert [v.name for v in main.outputs] == ["logits", "k_0", "v_0"]
    assert str(main.outputs[1].type) == "tensor<1x1xL+Px4xf32>"
    rng = np.random.default_rng(0)
    past = 3
    feeds = {"input_ids": np.asarray([[0, 3]], np.int64), "mask": np.zeros((1, 1, 2, 7), np.float32),
             "position_ids": np.asarray([[3, 4]], np.int64),
             **{name: rng.standard_normal((1, 1, past, 4)).astype(np.float32) for name in ("past_k_0", "past_v_0")}}
    ours = run_function(module, "main", feeds)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for name, ref in zip(["logits", "k_0", "v_0"], session.run(None, feeds), strict=True):
        np.testing.assert_array_equal(ours[name], ref, err_msg=name)


def test_graph_outside_the_contract_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "two_layers.onnx"
    onnx.save(contract_model(attrs={**ATTRS, "layers": 2}), path)
    with pytest.raises(FrontendError, match=r"two_layers\.onnx: .*do not follow llmc's StepModule contract"):
        llmc.load(path)
