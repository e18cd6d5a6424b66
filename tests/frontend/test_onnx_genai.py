"""Models written by onnxruntime-genai's model builder (``python -m onnxruntime_genai.models.builder``;
called here as its command line calls it) import as step models: GroupQueryAttention, whose
``seqlens_k`` and ``total_sequence_length`` the file computes from an ``attention_mask`` of its own
length, becomes the step's attention once that computation is proven, and int4 MatMulNBits weights
stay the file's codes. A prompt and 32 decode steps in the interpreter match onnxruntime driven as
onnxruntime-genai drives the file, with the same greedy tokens; the files compile for the U280."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import onnxruntime_genai as og  # a pinned dependency of the frontend extra: missing, these tests fail
import pytest
from onnx import helper, numpy_helper
from zoo import refused_in_one_line, shared_folder

import llmc
from llmc.cli import main
from llmc.compiler.frontend.onnx_gqa_step import rope_frequencies
from llmc.generate.interpreter import InterpreterDevice
from llmc.sim.ladder import verify_project

PROMPT = [1, 5, 9, 33, 70]
STEPS = 32
CONTEXT = 64
# Random weights; the vocabulary differs from every projection's width, since the builder takes any
# Linear layer as wide as the vocabulary for the LM head
CONFIG = dict(vocab_size=256, max_position_embeddings=128, initializer_range=0.1, hidden_size=64,
              intermediate_size=96, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2)
# int4 with accuracy_level 1: onnxruntime multiplies in float32 (the builder's CPU default, 4, quantizes the
# activations to int8, about 2e-2 from the float product llmc computes)
BUILDS = {"fp32": ("fp32", []), "int4": ("int4", ["accuracy_level=1"])}


def hf_folder(family: str, out: Path) -> None:
    """A transformers checkpoint of ``family`` with random weights (biases too) and a word-level
    tokenizer of its vocabulary, which the builder reads."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedTokenizerFast

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(AutoConfig.for_model(family, **CONFIG))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):  # initialised to zeros, which the builder leaves out
                p.normal_(0, 0.1)
    model.save_pretrained(out)
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, **{f"t{i}": i for i in range(3, CONFIG["vocab_size"])}}
    words = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    words.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=words, unk_token="<unk>", bos_token="<s>",
                            eos_token="</s>").save_pretrained(out)


def build(source: Path, out: Path, build_name: str) -> None:
    """``python -m onnxruntime_genai.models.builder -i source -o out -p PRECISION -e cpu
    --extra_options ...``, in this process (torch and transformers are imported here already; the
    builder, seconds to import, only when a test builds)."""
    from onnxruntime_genai.models import builder

    precision, extra = BUILDS[build_name]
    with contextlib.redirect_stdout(io.StringIO()):
        options = builder.parse_extra_options(None, str(source), str(out), precision, "cpu", str(out / "cache"), extra)
        builder.create_model(None, str(source), str(out), precision, "cpu", str(out / "cache"), **options)
    shutil.rmtree(out / "cache", ignore_errors=True)


@pytest.fixture(scope="module")
def genai_model(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    """``genai_model(family, build)``: the folder of the builder's files, made once per run."""
    def make(family: str, build_name: str) -> Path:
        source = shared_folder(tmp_path_factory, f"genai/{family}-hf", lambda out: hf_folder(family, out))
        return shared_folder(tmp_path_factory, f"genai/{family}-{build_name}", lambda out: build(source, out, build_name))
    return make


class GenaiSession:
    """onnxruntime on the builder's file, fed as onnxruntime-genai feeds it (its genai_config.json):
    the cache a buffer of the whole context (``past_present_share_buffer``) updated in place, and an
    ``attention_mask`` of ones over the tokens so far."""

    def __init__(self, folder: Path) -> None:
        config = json.loads((folder / "genai_config.json").read_text())
        decoder = config["model"]["decoder"]
        self.session = ort.InferenceSession(str(folder / decoder["filename"]))
        self.inputs, self.outputs = decoder["inputs"], decoder["outputs"]
        assert config["search"]["past_present_share_buffer"]
        layers, heads, head = decoder["num_hidden_layers"], decoder["num_key_value_heads"], decoder["head_size"]
        self.cache = {name % i: np.zeros((1, heads, CONTEXT, head), np.float32)
                      for i in range(layers) for name in (self.inputs["past_key_names"], self.inputs["past_value_names"])}
        self.renames = {self.outputs[out] % i: self.inputs[past] % i for i in range(layers)
                        for out, past in (("present_key_names", "past_key_names"),
                                          ("present_value_names", "past_value_names"))}
        self.length = 0

    def step(self, tokens: list[int]) -> np.ndarray:
        """The logits of the last of ``tokens``, which follow those already given."""
        self.length += len(tokens)
        names = [o.name for o in self.session.get_outputs()]
        out = self.session.run(None, {self.inputs["input_ids"]: np.array([tokens], np.int64),
                                      self.inputs["attention_mask"]: np.ones((1, self.length), np.int64), **self.cache})
        self.cache = {self.renames[name]: value for name, value in zip(names, out) if name in self.renames}
        return out[names.index(self.outputs["logits"])][0, -1]


def agreement(folder: Path, steps: int) -> tuple[float, list[int], list[int]]:
    """The largest relative error of the imported file's logits against onnxruntime's on
    :data:`PROMPT` and ``steps`` greedy decode steps, and the greedy tokens of each."""
    model = llmc.load(folder / "model.onnx", max_length=CONTEXT)
    assert model.is_language_model and model.module.attrs["head_dim"] == 16
    reference, device = GenaiSession(folder), InterpreterDevice(model.module)
    want, got = reference.step(PROMPT), device.prefill(PROMPT)
    errors, tokens = [], ([], [])
    for _ in range(steps + 1):
        errors.append(float(np.abs(want - got).max() / np.abs(want).max()))
        tokens[0].append(int(np.argmax(want)))
        tokens[1].append(int(np.argmax(got)))
        if len(errors) <= steps:
            want, got = reference.step([tokens[0][-1]]), device.decode(tokens[0][-1])
    return max(errors), *tokens


@pytest.mark.parametrize(("family", "build_name"), [
    ("llama", "fp32"), ("llama", "int4"),
    *(pytest.param("qwen2", b, marks=pytest.mark.slow) for b in BUILDS)])
def test_a_genai_model_is_a_step_model(family: str, build_name: str, genai_model) -> None:  # noqa: ANN001
    error, want, got = agreement(genai_model(family, build_name), STEPS)
    assert error < 1e-5 and want == got, (error, want, got)


def test_onnxruntime_genai_generates_the_interpreters_tokens(genai_model) -> None:  # noqa: ANN001
    """onnxruntime-genai's own generator, greedy, on the int4 file: the same tokens."""
    folder = genai_model("llama", "int4")
    genai = og.Model(str(folder))
    params = og.GeneratorParams(genai)
    params.set_search_options(max_length=len(PROMPT) + 9, do_sample=False)
    generator = og.Generator(genai, params)
    generator.append_tokens(np.array([PROMPT], np.int32))
    while not generator.is_done():
        generator.generate_next_token()
    theirs = [int(t) for t in generator.get_sequence(0)][len(PROMPT):]
    device = InterpreterDevice(llmc.load(folder / "model.onnx", max_length=CONTEXT).module)
    ours = [int(np.argmax(device.prefill(PROMPT)))]
    while len(ours) < len(theirs):
        ours.append(int(np.argmax(device.decode(ours[-1]))))
    assert ours == theirs


@pytest.mark.parametrize("build_name", list(BUILDS))
def test_a_genai_model_has_the_step_attention_and_its_codes(build_name: str, genai_model) -> None:  # noqa: ANN001
    """Each GroupQueryAttention is the step's attention, as llmc's imports write it: Q, K and V
    projected separately, ``rope`` at ``position_ids``, the past concatenated with the new rows and
    ``attention`` over the step's ``mask``; nothing computes positions or masks. int4: each
    MatMulNBits is ``dequantize`` of the file's codes, the packed QKV's split by rows."""
    folder = genai_model("llama", build_name)
    module = llmc.load(folder / "model.onnx", max_length=CONTEXT).module
    for name in ("prefill", "decode"):
        func = module.functions[name]
        ops = Counter(n.op for n in func.nodes)
        caches = 4 if name == "decode" else 0  # the prefill's past is empty
        assert (ops["attention"], ops["rope"], ops["concat"], ops["linear"]) == (2, 4, caches, 15), ops
        assert not {"iota", "where", "gather", "slice", "softmax", "cast", "reduce_sum"} & set(ops), ops
        assert ops["dequantize"] == (15 if build_name == "int4" else 0), ops
        mask = next(v for v in func.inputs if v.name == "mask")
        assert all(n.inputs[3] is mask for n in func.nodes if n.op == "attention")
    if build_name == "int4":
        graph = onnx.load(str(folder / "model.onnx")).graph
        packed = numpy_helper.to_array(next(t for t in graph.initializer if t.name == "lm_head.MatMul.weight_Q4"))
        codes = np.stack([packed & 15, packed >> 4], axis=-1).reshape(packed.shape[0], -1)
        np.testing.assert_array_equal(module.params["lm_head.MatMul.weight.codes"].data.astype(np.uint8), codes)
        assert "layers.0.attn.qkv_proj.MatMul.weight.rows64_96.codes" in module.params


@pytest.mark.skipif(shutil.which("g++") is None, reason="C-simulation needs g++")
@pytest.mark.parametrize("build_name", [pytest.param("fp32", marks=pytest.mark.slow), "int4"])
def test_a_genai_model_compiles_for_the_accelerator(build_name: str, genai_model, tmp_path: Path) -> None:  # noqa: ANN001
    """The builder's file compiles for the U280 (the int4 file with its codes), and its
    C-simulation is bit-exact with the interpreter and the ISS."""
    project = tmp_path / "project"
    model = genai_model("llama", build_name) / "model.onnx"
    assert main(["compile", str(model), "--context", str(CONTEXT), "-o", str(project)]) == 0
    results = verify_project(project, PROMPT, 4, levels=("interpreter", "iss", "csim"))
    assert [r.mismatches for r in results] == [0, 0, 0] and all(r.compared > 0 for r in results)


# -- what is proven, and what is refused -----------------------------------------------------------
def _edited(folder: Path, out: Path, edit) -> Path:  # noqa: ANN001
    """The fp32 file with ``edit(graph)`` applied, its weights in the file."""
    model = onnx.load(str(folder / "model.onnx"))
    edit(model.graph)
    onnx.save(model, str(out))
    return out


def _node(graph: onnx.GraphProto, suffix: str) -> onnx.NodeProto:
    return next(n for n in graph.node if n.name.endswith(suffix))


def _minus_two(graph: onnx.GraphProto) -> None:  # seqlens_k = sum - 2
    graph.node.insert(0, helper.make_node("Constant", [], ["two"], value=helper.make_tensor("t", 7, [1], [2])))
    _node(graph, "attn_mask_subgraph/Sub").input[1] = "two"


def _max_not_sum(graph: onnx.GraphProto) -> None:  # seqlens_k = max - 1
    _node(graph, "attn_mask_subgraph/ReduceSum").op_type = "ReduceMax"


def _total_from_ids(graph: onnx.GraphProto) -> None:  # total_sequence_length = the new tokens
    _node(graph, "attn_mask_subgraph/Shape").input[0] = "input_ids"


@pytest.mark.parametrize(("edit", "message"), [
    (_minus_two, r"seqlens_k is not ReduceSum\(attention_mask\) - 1 .*not a count minus 1"),
    (_max_not_sum, r"seqlens_k is not ReduceSum\(attention_mask\) - 1 .*not a ReduceSum"),
    (_total_from_ids, r"total_sequence_length \(L\) is not the step's L\+P \(P \+ L\)"),
])
def test_lengths_not_proven_the_steps_are_refused(edit, message: str, genai_model, tmp_path: Path,  # noqa: ANN001
                                                  capsys: pytest.CaptureFixture) -> None:
    """A GroupQueryAttention whose lengths the graph computes otherwise is refused in one line
    naming the node (onnxruntime would run such a file, attending other keys than the step's)."""
    path = _edited(genai_model("llama", "fp32"), tmp_path / "edited.onnx", edit)
    refused_in_one_line(path, message, f"{path}: node /model/layers.0/attn/GroupQueryAttention (GroupQueryAttention): ",
                        tmp_path / "out.llmc", capsys)


def test_rope_frequencies_reproduce_the_builders_table_only() -> None:
    """The builder's cos / sin caches (as it computes them) give back its float32 ``inv_freq`` and
    their scale; a table with one entry off by more than rounding, or with cos and sin swapped,
    gives none (the handler then gathers the caches' rows, as the file does)."""
    import torch

    inv_freq = 1.0 / (10000 ** (torch.arange(0, 16, 2, dtype=torch.int64).float() / 16))
    angles = torch.outer(torch.arange(128, dtype=torch.int64).type_as(inv_freq), inv_freq)
    cos, sin = angles.cos().numpy(), angles.sin().numpy()
    found = rope_frequencies(cos, sin)  # 128 rows tell the low frequencies to a float32 ulp or two
    assert found is not None and found[1] == 1.0
    np.testing.assert_array_max_ulp(found[0], inv_freq.numpy(), maxulp=2)
    halved = rope_frequencies(cos * np.float32(0.5), sin * np.float32(0.5))
    assert halved is not None and halved[1] == 0.5
    np.testing.assert_array_max_ulp(halved[0], inv_freq.numpy(), maxulp=2)
    off = cos.copy()
    off[100, 3] += 1e-5
    assert rope_frequencies(off, sin) is None
    assert rope_frequencies(sin, cos) is None
