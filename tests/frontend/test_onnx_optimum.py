"""Files written by optimum's own export command import as step models.

``tests/frontend/data/optimum/{llama,qwen2,gpt2,mistral}.onnx`` are the ``model.onnx`` that
``optimum-cli export onnx --task text-generation-with-past`` (optimum-onnx 0.1.0, transformers 4.57.6,
torch 2.13.0; ``scripts/optimum_fixtures.py`` rewrites them byte for byte) writes for random-weight
checkpoints: inputs ``input_ids``, ``attention_mask``, ``position_ids`` and
``past_key_values.N.key/value`` (GPT-2 lists the caches before the mask; Mistral's 16-key sliding
window is in its mask), outputs ``logits`` and
``present.N.key/value``, dims ``batch_size``, ``sequence_length``, ``past_sequence_length`` and
``past_sequence_length + sequence_length``. A prompt and 32 decode steps in the interpreter match
onnxruntime on the same file with the same greedy tokens; fused at import, the programs hold the ops
of llmc's own import of each family (transformers 4's RoPE angles, a MatMul outer product, are proven
the product transformers 5 writes); each compiles for the U280 bit-exact (Llama in the default suite).
"""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from zoo import FAMILIES

import llmc
from llmc.cli import main
from llmc.compiler.frontend.onnx_llm_rope import angles_as_products
from llmc.generate.interpreter import InterpreterDevice
from llmc.sim.ladder import verify_project

DATA = Path(__file__).parent / "data" / "optimum"
FILES = ("llama", "qwen2", "gpt2", "mistral")
WINDOW = 16  # the Mistral file's sliding window (scripts/optimum_fixtures.py): past the prompt, within its steps
PROMPT = [1, 5, 9, 33, 70]
STEPS = 32
CONTEXT = 64


@pytest.fixture(scope="module")
def imported() -> dict[str, llmc.Model]:
    """Each file imported once for this module's tests."""
    return {family: llmc.load(DATA / f"{family}.onnx", max_length=CONTEXT) for family in FILES}


def agreement(path: Path, model: llmc.Model, steps: int) -> tuple[float, list[int], list[int]]:
    """The largest relative error of ``model``'s logits against onnxruntime's on ``path`` over
    :data:`PROMPT` and ``steps`` greedy decode steps, and the greedy tokens of each; onnxruntime is
    fed as optimum's ORTModelForCausalLM feeds the file: empty caches first, then the presents, an
    ``attention_mask`` of ones over the tokens so far and the positions of the new tokens."""
    session = ort.InferenceSession(str(path))
    names = [o.name for o in session.get_outputs()]
    attrs = model.module.attrs
    past = {f"past_key_values.{i}.{kv}": np.zeros((1, attrs["kv_heads"], 0, attrs["head_dim"]), np.float32)
            for i in range(attrs["layers"]) for kv in ("key", "value")}

    def reference(tokens: list[int], position: int) -> np.ndarray:
        nonlocal past
        out = session.run(None, {"input_ids": np.array([tokens], np.int64),
                                 "attention_mask": np.ones((1, position + len(tokens)), np.int64),
                                 "position_ids": np.arange(position, position + len(tokens))[None], **past})
        past = {n.replace("present", "past_key_values"): v for n, v in zip(names, out) if n.startswith("present.")}
        return out[0][0, -1]

    device = InterpreterDevice(model.module)
    want, got = reference(PROMPT, 0), device.prefill(PROMPT)
    errors, tokens = [], ([], [])
    for step in range(steps + 1):
        errors.append(float(np.abs(want - got).max() / np.abs(want).max()))
        tokens[0].append(int(np.argmax(want)))
        tokens[1].append(int(np.argmax(got)))
        if step < steps:
            want, got = reference([tokens[0][-1]], len(PROMPT) + step), device.decode(tokens[0][-1])
    return max(errors), *tokens


@pytest.mark.parametrize("family", FILES)
def test_an_optimum_export_is_a_step_model(family: str, imported: dict) -> None:
    model = imported[family]
    assert model.is_language_model and model.module.attrs["layers"] == 2 and model.module.attrs["vocab_size"] == 256
    error, want, got = agreement(DATA / f"{family}.onnx", model, STEPS)
    assert error < 1e-5 and want == got, (error, want, got)


@pytest.mark.parametrize("family", FILES)
def test_the_fused_optimum_export_has_the_ops_of_llmcs_own_import(family: str, imported: dict) -> None:
    """One ``rms_norm`` / ``layer_norm``, ``silu`` / ``gelu_tanh``, ``rope`` and ``attention`` per use,
    as llmc's torch.export import of the family writes them (RoPE's angles proven the product of
    positions and ``inv_freq``; the mask proven the step's causal mask, Mistral's its last
    :data:`WINDOW` keys: ``sliding_window_mask``, one per layer where llmc's import shares one)."""
    own = llmc.load(family, config=FAMILIES[family], max_length=CONTEXT).module
    for name in ("prefill", "decode"):
        nodes = imported[family].module.functions[name].nodes
        ops = [Counter(n.op for n in m.functions[name].nodes if n.op not in ("param", "sliding_window_mask"))
               for m in (imported[family].module, own)]
        assert ops[0] == ops[1] and ops[0]["attention"] == 2 and ops[0]["softmax"] == 0, ops
        assert ops[0]["rope"] == (0 if family == "gpt2" else 4), ops
        windows = [n.attrs["window"] for n in nodes if n.op == "sliding_window_mask"]
        assert windows == ([WINDOW] * 2 if family == "mistral" else []), windows


@pytest.mark.skipif(shutil.which("g++") is None, reason="C-simulation needs g++")
@pytest.mark.parametrize("family", ["llama", *(pytest.param(f, marks=pytest.mark.slow) for f in FILES[1:])])
def test_an_optimum_export_compiles_for_the_accelerator(family: str, tmp_path: Path) -> None:
    """Each file compiles for the U280, and its C-simulation is bit-exact with the interpreter and
    the ISS over a prompt and 4 decode steps (Llama in the default suite, the others slow; Mistral
    over 16, past its window of :data:`WINDOW` keys)."""
    project = tmp_path / "project"
    assert main(["compile", str(DATA / f"{family}.onnx"), "--context", str(CONTEXT), "-o", str(project)]) == 0
    steps = 16 if family == "mistral" else 4
    results = verify_project(project, PROMPT, steps, levels=("interpreter", "iss", "csim"))
    assert [r.mismatches for r in results] == [0, 0, 0] and all(r.compared > 0 for r in results)


def rotary_matmul(model: onnx.ModelProto) -> onnx.NodeProto:
    return next(n for n in model.graph.node if n.op_type == "MatMul" and n.name.startswith("/model/rotary_emb/"))


def test_the_rope_angles_are_rewritten_only_where_proven() -> None:
    """transformers 4's ``inv_freq[None, :, None] @ positions[:, None, :]`` (inner dim 1: one product
    per element) becomes ``positions[..., None] * inv_freq``; the angles of a constant that is not
    copied straight to the product (scaled on the way, or cast through float16) or of a product read
    by anything but the transpose are left as they are."""
    source = onnx.load(str(DATA / "llama.onnx"))
    onnx.checker.check_model(source)

    def rewritten(change) -> int:  # noqa: ANN001
        model = onnx.ModelProto.FromString(source.SerializeToString())
        change(model.graph, rotary_matmul(model))
        for node in [n for n in model.graph.node if n.op_type == "Constant" and n.output[0].startswith("onnx::Expand")]:
            model.graph.node.remove(node)  # as_step_contract makes float constants initializers first
            model.graph.initializer.append(numpy_helper.from_array(numpy_helper.to_array(node.attribute[0].t),
                                                                   node.output[0]))
        return angles_as_products(model.graph)

    def through(node_type: str, **attrs: object):  # noqa: ANN202
        def change(g: onnx.GraphProto, matmul: onnx.NodeProto) -> None:
            extra = [] if node_type == "Cast" else ["llmc_test_two"]
            if extra:
                g.initializer.append(numpy_helper.from_array(np.array(2.0, np.float32), "llmc_test_two"))
            g.node.append(helper.make_node(node_type, [matmul.input[0], *extra], ["llmc_test_changed"], **attrs))
            matmul.input[0] = "llmc_test_changed"
        return change

    def read_twice(g: onnx.GraphProto, matmul: onnx.NodeProto) -> None:
        g.node.append(helper.make_node("Identity", [matmul.output[0]], ["llmc_test_copy"]))

    assert rewritten(lambda g, matmul: None) == 1
    assert rewritten(through("Mul")) == 0
    assert rewritten(through("Cast", to=TensorProto.FLOAT16)) == 0
    assert rewritten(read_twice) == 0


def test_unproven_rope_angles_import_unfused_and_exact(tmp_path: Path) -> None:
    """With ``inv_freq`` scaled in the graph before the product, the angles stay a ``matmul`` (no
    ``rope``), and the import still follows onnxruntime on the prompt."""
    model = onnx.load(str(DATA / "llama.onnx"))
    matmul = rotary_matmul(model)
    model.graph.initializer.append(numpy_helper.from_array(np.array(0.5, np.float32), "llmc_test_half"))
    at = list(model.graph.node).index(matmul)
    model.graph.node.insert(at, helper.make_node("Mul", [matmul.input[0], "llmc_test_half"], ["llmc_test_scaled"]))
    matmul.input[0] = "llmc_test_scaled"
    onnx.save(model, str(tmp_path / "scaled.onnx"))
    scaled = llmc.load(tmp_path / "scaled.onnx", max_length=CONTEXT)
    ops = Counter(n.op for n in scaled.module.functions["prefill"].nodes)
    assert ops["rope"] == 0 and ops["matmul"] == 1 and ops["attention"] == 2, ops
    error, want, got = agreement(tmp_path / "scaled.onnx", scaled, 0)
    assert error < 1e-5 and want == got
