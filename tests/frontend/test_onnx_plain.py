"""ONNX files that are not llmc step models import as plain functions: torch modules exported
by both ONNX exporters agree with onnxruntime, old opsets are converted, what llmc cannot import
is refused in one line naming the node, and ``llmc run MODEL --inputs in.npz --outputs out.npz``
runs a plain function."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
torch = pytest.importorskip("torch")

import onnx  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402
from onnx_cases import Case, build, check, compare, node  # noqa: E402

import llmc  # noqa: E402
from llmc.cli import main  # noqa: E402
from llmc.compiler.frontend.onnx import import_model  # noqa: E402
from llmc.errors import FrontendError, LlmcError  # noqa: E402
from llmc.ir import Builder, Function, Module, TensorType  # noqa: E402
from llmc.ir.types import F32  # noqa: E402
from llmc.model import Model  # noqa: E402


class Mlp(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.up, self.norm, self.down = torch.nn.Linear(16, 32), torch.nn.LayerNorm(32), torch.nn.Linear(32, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(torch.nn.functional.gelu(self.norm(self.up(x))))


class Block(torch.nn.Module):
    """A pre-norm transformer block: causal multi-head self-attention and a GELU MLP."""

    def __init__(self, width: int = 32, heads: int = 4) -> None:
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = torch.nn.LayerNorm(width), torch.nn.LayerNorm(width)
        self.qkv, self.out = torch.nn.Linear(width, 3 * width), torch.nn.Linear(width, width)
        self.up, self.down = torch.nn.Linear(width, 4 * width), torch.nn.Linear(4 * width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, width = x.shape
        q, k, v = (z.reshape(b, t, self.heads, -1).transpose(1, 2) for z in self.qkv(self.norm1(x)).split(width, -1))
        scores = q @ k.transpose(-2, -1) / (width // self.heads) ** 0.5
        causal = torch.triu(torch.ones(t, t, dtype=torch.bool), 1)
        y = (scores.masked_fill(causal, float("-inf")).softmax(-1) @ v).transpose(1, 2).reshape(b, t, width)
        x = x + self.out(y)
        return x + self.down(torch.nn.functional.gelu(self.up(self.norm2(x))))


MODULES: dict[str, tuple[type, list[int], dict[int, str], list[tuple[int, ...]]]] = {
    "mlp": (Mlp, [3, 16], {0: "batch"}, [(1, 16), (5, 16)]),
    "block": (Block, [2, 5, 32], {0: "batch", 1: "seq"}, [(1, 5, 32), (3, 7, 32)]),
}


def export(name: str, dynamo: bool, folder: Path) -> tuple[torch.nn.Module, Path]:
    cls, shape, axes, _ = MODULES[name]
    torch.manual_seed(0)
    module = cls().eval()
    path = folder / f"{name}_{'dynamo' if dynamo else 'script'}.onnx"
    example = (torch.randn(*shape),)
    if dynamo:
        dims = {"x": {axis: torch.export.Dim(label) for axis, label in axes.items()}}
        torch.onnx.export(module, example, path, input_names=["x"], output_names=["y"], dynamo=True,
                          dynamic_shapes=dims, verbose=False)
    else:
        torch.onnx.export(module, example, path, input_names=["x"], output_names=["y"], dynamo=False,
                          dynamic_axes={"x": axes})
    return module, path


@pytest.mark.parametrize("dynamo", [False, True], ids=["torchscript", "dynamo"])
@pytest.mark.parametrize("name", list(MODULES))
def test_exported_torch_module_matches_onnxruntime(name: str, dynamo: bool, tmp_path: Path) -> None:
    module, path = export(name, dynamo, tmp_path)
    main_ = llmc.load(path).module.functions["main"]
    axes = MODULES[name][2]
    assert [next(iter(d.symbols), None) for d in main_.inputs[0].type.shape] == \
        [axes[i].upper() if i in axes else None for i in range(len(MODULES[name][1]))]
    model = llmc.load(path)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for shape in MODULES[name][3]:
        x = np.random.default_rng(len(shape)).standard_normal(shape).astype(np.float32)
        ours = model.call({"x": x})["y"]
        compare(ours, session.run(None, {"x": x})[0], 1e-6, f"{path.name} {shape}")
        with torch.no_grad():
            compare(ours, module(torch.from_numpy(x)).numpy(), 1e-5, f"{path.name} {shape} vs torch")


# -- opsets ----------------------------------------------------------------------------------------
def test_opset_11_graph_is_converted_to_13() -> None:
    """Softmax's 2-D coercion, attribute axes of ReduceSum, Squeeze and Unsqueeze, Split's split."""
    x = np.random.default_rng(0).standard_normal((2, 3, 4)).astype(np.float32)
    check(Case("opset11", [node("Softmax", ["x"], "s", axis=1), node("ReduceSum", ["s"], "r", axes=[2]),
                           node("Split", ["r"], ["a", "b"], axis=1, split=[1, 2]), node("Squeeze", ["a"], "q", axes=[1]),
                           node("Unsqueeze", ["q"], "u", axes=[0]), node("Mul", ["u", "u"])], {"x": x}, opset=11))


def test_failed_opset_conversion_is_one_line() -> None:
    graph = helper.make_graph([node("ATen", ["x"])], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 9)])
    with pytest.raises(FrontendError, match=r"^old\.onnx: opset 9 could not be converted to opset 13: [^\n]+$"):
        import_model(model, Path("old.onnx"), "old")


# -- refusals --------------------------------------------------------------------------------------
def save(tmp_path: Path, nodes: list[onnx.NodeProto], inputs: dict[str, tuple[int, list[Any]]],
         outputs: dict[str, tuple[int, list[Any]]], inits: dict[str, np.ndarray] | None = None, name: str = "m") -> Path:
    graph = helper.make_graph(nodes, name, [helper.make_tensor_value_info(k, t, s) for k, (t, s) in inputs.items()],
                              [helper.make_tensor_value_info(k, t, s) for k, (t, s) in outputs.items()],
                              [numpy_helper.from_array(v, k) for k, v in (inits or {}).items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10)
    path = tmp_path / f"{name}.onnx"
    onnx.save(model, path)
    return path


F, INT = TensorProto.FLOAT, TensorProto.INT64


def test_shape_from_tensor_data_is_refused_naming_the_node(tmp_path: Path) -> None:
    path = save(tmp_path, [node("Reshape", ["x", "shape"])], {"x": (F, [2, 3]), "shape": (INT, [2])}, {"y": (F, ["a", "b"])})
    with pytest.raises(FrontendError, match=r"^.*m\.onnx: node reshape_y \(Reshape\): the shape 'shape' depends on "
                                            r"tensor data, not only on shapes"):
        llmc.load(path)


def test_shape_from_computed_values_is_refused(tmp_path: Path) -> None:
    """ArgMax gives data, not a shape: the Range it bounds has a data-dependent length."""
    nodes = [node("ArgMax", ["x"], "n", keepdims=0, axis=0), node("Range", ["zero", "n", "one"])]
    path = save(tmp_path, nodes, {"x": (INT, [4])}, {"y": (INT, ["n"])}, {"zero": np.int64(0), "one": np.int64(1)})
    with pytest.raises(FrontendError, match=r"node range_y \(Range\): the limit 'n' depends on tensor data"):
        llmc.load(path)


def test_undecided_shape_arithmetic_uses_the_files_shapes(tmp_path: Path) -> None:
    """max(N, 1) is not decided at import (N may be 0): the Reshape takes the output shape ONNX
    shape inference gives (here from the file's declaration)."""
    nodes = [node("Shape", ["x"], "n", end=1), node("Max", ["n", "one"], "m"), node("Concat", ["m", "rest"], "s", axis=0),
             node("Reshape", ["x", "s"])]
    path = save(tmp_path, nodes, {"x": (F, ["N", 4, 5])}, {"y": (F, ["N", 20])}, {"one": np.ones(1, np.int64),
                                                                                  "rest": np.asarray([20])})
    x = np.random.default_rng(0).standard_normal((3, 4, 5)).astype(np.float32)
    np.testing.assert_array_equal(llmc.load(path).call({"x": x})["y"], x.reshape(3, 20))


def test_unsupported_op_names_node_op_and_why(tmp_path: Path) -> None:
    unnamed = helper.make_node("NonZero", ["x"], ["y"])
    path = save(tmp_path, [unnamed], {"x": (F, [2, 3])}, {"y": (INT, [2, "n"])})
    with pytest.raises(FrontendError, match=r"m\.onnx: node producing y \(NonZero\): unsupported op$"):
        llmc.load(path)
    nodes = [node("ScatterND", ["x", "i", "u"], reduction="mul")]
    path = save(tmp_path, nodes, {"x": (F, [4]), "i": (INT, [1, 1]), "u": (F, [1])}, {"y": (F, [4])})
    with pytest.raises(FrontendError, match=r"node scatternd_y \(ScatterND\): reduction 'mul' is not supported"):
        llmc.load(path)


def test_onnxruntime_simplified_layer_norm_passes_the_checker(tmp_path: Path) -> None:
    """onnxruntime's SimplifiedLayerNormalization has no ONNX schema: the checker's complaint about
    it alone is let through, and it becomes rms_norm."""
    path = save(tmp_path, [node("SimplifiedLayerNormalization", ["x", "w"], epsilon=1e-5)],
                {"x": (F, ["N", 8])}, {"y": (F, ["N", 8])}, {"w": np.linspace(0.5, 1.5, 8, dtype=np.float32)})
    model = llmc.load(path)
    assert "rms_norm" in {n.op for n in model.module.functions["main"].nodes}
    x = np.random.default_rng(0).standard_normal((3, 8)).astype(np.float32)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    compare(model.call({"x": x})["y"], session.run(None, {"x": x})[0], 1e-6, "SimplifiedLayerNormalization")


def test_unsupported_dtype_is_refused(tmp_path: Path) -> None:
    path = save(tmp_path, [node("Identity", ["x"])], {"x": (TensorProto.UINT64, [2])}, {"y": (TensorProto.UINT64, [2])})
    with pytest.raises(FrontendError, match=r"m\.onnx: input x: unsupported element type UINT64"):
        llmc.load(path)


def test_symbols_and_names_from_the_file(tmp_path: Path) -> None:
    """dim_params become upper-case symbols, unnamed dynamic dims get one named after their input,
    value names keep letters, digits, _ and ."""
    path = save(tmp_path, [node("Add", ["input:0", "input:0"], "out/0"), node("Neg", ["b.1"], "neg")],
                {"input:0": (F, ["batch_size", "seq-len", 4]), "b.1": (F, ["batch_size", "", 4])},
                {"out/0": (F, ["batch_size", "seq-len", 4]), "neg": (F, ["batch_size", "?", 4])})
    func = llmc.load(path).module.functions["main"]
    assert [str(v.type) for v in func.inputs] == ["tensor<BATCH_SIZExSEQ_LENx4xf32>", "tensor<BATCH_SIZExB_1_1x4xf32>"]
    assert [v.name for v in func.inputs] == ["input_0", "b.1"]
    assert [v.name for v in func.outputs] == ["out_0", "neg"]


# -- llmc run --inputs -----------------------------------------------------------------------------
@pytest.fixture
def add_model(tmp_path: Path) -> Path:
    return save(tmp_path, [node("Add", ["x:0", "b"], "y/0"), node("Shape", ["x:0"], "shape")],
                {"x:0": (F, ["N", 3])}, {"y/0": (F, ["N", 3]), "shape": (INT, [2])}, {"b": np.arange(3, dtype=np.float32)}, "add")


def test_cli_runs_a_plain_function(add_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    x = np.random.default_rng(0).standard_normal((2, 3)).astype(np.float32)
    np.savez(tmp_path / "in.npz", **{"x:0": x})
    assert main(["run", str(add_model), "--inputs", str(tmp_path / "in.npz"), "--outputs", str(tmp_path / "out.npz")]) == 0
    assert capsys.readouterr().out.splitlines() == ["y_0: float32[2, 3]", "shape: int64[2]", f"wrote {tmp_path / 'out.npz'}"]
    out = np.load(tmp_path / "out.npz")
    np.testing.assert_array_equal(out["y_0"], x + np.arange(3, dtype=np.float32))
    np.testing.assert_array_equal(out["shape"], [2, 3])
    llmc_file = tmp_path / "add.llmc"  # the imported IR runs the same
    assert main(["import", str(add_model), "-o", str(llmc_file)]) == 0
    np.savez(tmp_path / "in2.npz", x_0=x[:1])
    assert main(["run", str(llmc_file), "--inputs", str(tmp_path / "in2.npz"), "--json"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == \
        '{"outputs": {"y_0": {"shape": [1, 3], "dtype": "float32"}, "shape": {"shape": [2], "dtype": "int64"}}, ' \
        '"written": null}'


def lm_file(tmp_path: Path) -> Path:
    """A stand-in language model: prefill and decode functions (identities)."""
    module = Module("lm", {"arch": "test", "vocab_size": 4})
    for name in ("prefill", "decode"):
        func = Function(name)
        b = Builder(module, func)
        b.ret(b.op("neg", [b.input("x", TensorType.of([2], F32))]))
        module.functions[name] = func
    path = tmp_path / "lm.llmc"
    Model(module).save(path)
    return path


def test_cli_refuses_mixed_or_misplaced_options(add_model: Path, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    np.savez(tmp_path / "in.npz", x=np.zeros((1, 3), np.float32))
    np.savez(tmp_path / "wrong.npz", z=np.zeros((1, 3), np.float32))
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    inputs = ["--inputs", str(tmp_path / "in.npz")]
    nonzero = save(tmp_path, [node("NonZero", ["x"])], {"x": (F, [2, 3])}, {"y": (INT, [2, "n"])}, name="nonzero")
    cases = {
        "unsupported op": ([str(nonzero), "--inputs", str(tmp_path / "in.npz")],
                           "nonzero.onnx: node nonzero_y (NonZero): unsupported op"),
        "mixed": ([str(add_model), *inputs, "--prompt-ids", "1"], "give --prompt/--prompt-ids (a language model) or "
                                                                  "--inputs (a plain function), not both"),
        "prompt for a function": ([str(add_model), "--prompt-ids", "1"], "is a plain function (@main), not a language"),
        "inputs for an LM": ([str(lm_file(tmp_path)), *inputs], "is a language model: generate with --prompt"),
        "outputs alone": ([str(add_model), "--outputs", str(tmp_path / "o.npz")], "--outputs needs --inputs"),
        "tvm": ([str(add_model), *inputs, "--tvm", "cpu"], "--inputs runs on the interpreter"),
        "wrong names": ([str(add_model), "--inputs", str(tmp_path / "wrong.npz")],
                        "@main takes inputs x_0: missing x_0; unknown z"),
        "bad npz": ([str(add_model), "--inputs", str(tmp_path / "bad.npz")], "bad.npz: not a .npz file of arrays"),
        "bad onnx": ([str(tmp_path / "in.npz"), *inputs], "unknown model format"),
    }
    for what, (args, message) in cases.items():
        assert main(["run", *args]) == 2, what
        err = capsys.readouterr().err
        assert err.startswith("llmc: error: ") and message in err and err.count("\n") == 1, (what, err)


def test_call_checks_input_dtypes(add_model: Path) -> None:
    model = llmc.load(add_model)
    with pytest.raises(LlmcError, match=r"input x_0 of @main is tensor<Nx3xf32>, got int64 data"):
        model.call({"x:0": np.zeros((1, 3), np.int64)})
    out = model.call({"x_0": np.ones((1, 3))})  # float64: converted
    assert out["y_0"].dtype == np.float32


def test_plain_function_through_build_helper() -> None:
    """The harness itself: a model whose output dims are symbolic keeps them in the IR."""
    case = Case("harness", [node("Relu", ["x"])], {"x": np.ones((2, 3), np.float32)}, dims={"x": ["N", 3]})
    assert build(case).graph.output[0].type.tensor_type.shape.dim[0].dim_param == "N"
    assert str(check(case).functions["main"].outputs[0].type) == "tensor<Nx3xf32>"


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_hugging_face_lm_exported_by_dynamo_imports_as_a_plain_function(arch: str, tmp_path: Path) -> None:
    """A transformers causal LM (no cache) exported by ``dynamo=True``: logits over a symbolic
    sequence length agree with onnxruntime."""
    transformers = pytest.importorskip("transformers")
    if arch == "llama":
        config = transformers.LlamaConfig(vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                          num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
        lm = transformers.LlamaForCausalLM(config)
    else:
        lm = transformers.GPT2LMHeadModel(transformers.GPT2Config(vocab_size=128, n_embd=64, n_layer=2, n_head=4,
                                                                  n_positions=64))

    class Logits(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lm = lm

        def forward(self, ids: torch.Tensor) -> torch.Tensor:
            return self.lm(input_ids=ids, use_cache=False).logits

    path = tmp_path / f"{arch}.onnx"
    torch.onnx.export(Logits().eval(), (torch.randint(0, 128, (1, 6)),), path, input_names=["ids"],
                      output_names=["logits"], dynamo=True, dynamic_shapes={"ids": {1: torch.export.Dim("seq", max=64)}})
    model = llmc.load(path)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for length in (1, 9):
        ids = np.random.default_rng(length).integers(0, 128, (1, length))
        compare(model.call({"ids": ids})["logits"], session.run(None, {"ids": ids})[0], 1e-6, f"{arch} L={length}")
