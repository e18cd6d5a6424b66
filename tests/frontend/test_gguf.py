"""llama.cpp GGUF files: the import matches transformers, keeps the codes of Q4_0, Q4_1, Q5_0,
Q5_1, Q8_0 and the K-quants bit for bit (those with a per-block minimum read by dequantize_min),
dequantizes other types with one note line, refuses malformed files in one line and rebuilds the
tokenizer."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from gguf_files import (
    Q,
    block_codes,
    gguf_name,
    llama3_rope_factors,
    permute,
    quantize,
    roundtrip,
    train_bpe,
    with_weights,
    write_gguf,
)
from zoo import FAMILIES, SMALL_PROMPT

import llmc
from llmc.cli import main
from llmc.compiler.frontend import hf
from llmc.compiler.frontend.gguf_import import unpermute
from llmc.compiler.frontend.gguf_tokenizer import read_tokenizer
from llmc.errors import LlmcError
from llmc.generate.interpreter import causal_mask
from llmc.ir import parse_module, print_module, run_function
from llmc.ir.registry import OPS, RefContext
from llmc.ir.types import F16, F32, QuantEncoding

LINEARS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj",
           "mlp.up_proj", "mlp.down_proj")
STEPS = 4
KEPT = "llmc keeps Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K and Q6_K codes of linear layers"


def hf_model(arch: str, **extra: object) -> torch.nn.Module:
    return hf.build_model(hf.config_from_dict({"model_type": arch, **FAMILIES[arch], **extra}, arch), seed=0)


@pytest.fixture(scope="module")
def llama() -> torch.nn.Module:
    return hf_model("llama")


@pytest.fixture(scope="module")
def vocab():
    return train_bpe(96)


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("gguf")


def rel_err(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / np.abs(b).max())


def check_logits(model: torch.nn.Module, module: llmc.ir.Module) -> None:
    """Prefill and STEPS greedy decode steps: interpreter logits within 1e-5 of the PyTorch step."""
    shape = hf.cache_shape(model.config)
    step = hf.StepModule(model, shape.layers)
    n, ids = len(SMALL_PROMPT), np.asarray([SMALL_PROMPT])
    ours = run_function(module, "prefill", {"input_ids": ids, "mask": causal_mask(n, 0), "position_ids": np.arange(n)[None]})
    empty = [torch.zeros(1, shape.kv_heads, 0, shape.head_dim)] * (2 * shape.layers)
    with torch.no_grad():
        ref = step(torch.tensor(ids), torch.from_numpy(causal_mask(n, 0)), torch.arange(n)[None], *empty)
    assert rel_err(ours["logits"], ref[0].numpy()) <= 1e-5
    for t in range(STEPS):
        token, past = int(np.argmax(ref[0][0, -1].numpy())), n + t
        inputs = {"input_ids": np.asarray([[token]]), "mask": causal_mask(1, past), "position_ids": np.asarray([[past]])}
        cache = {f"past_{kv}_{i}": ours[f"{kv}_{i}"] for i in range(shape.layers) for kv in "kv"}
        ours = run_function(module, "decode", {**inputs, **cache})
        with torch.no_grad():
            ref = step(*(torch.from_numpy(inputs[k]) for k in ("input_ids", "mask", "position_ids")), *ref[1:])
        assert rel_err(ours["logits"], ref[0].numpy()) <= 1e-5, f"decode step {t}"


def greedy(model: torch.nn.Module, steps: int = 8) -> list[int]:
    ids = torch.tensor([SMALL_PROMPT])
    with torch.no_grad():
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=steps, min_new_tokens=steps,
                             do_sample=False, pad_token_id=0)
    return out[0, len(SMALL_PROMPT):].tolist()


def err_lines(capsys: pytest.CaptureFixture[str]) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if line.strip()]


def test_f32_file_through_the_cli_matches_transformers(llama, vocab, folder, capsys) -> None:
    path = write_gguf(folder / "f32.gguf", llama, vocab=vocab)
    out = folder / "f32.llmc"
    assert main(["import", str(path), "-o", str(out)]) == 0
    assert not [line for line in err_lines(capsys) if line.startswith("note:")]
    model = llmc.load(out)
    assert model.module.attrs["arch"] == "llama" and model.module.attrs["bos_token_id"] == 0
    check_logits(llama, model.module)
    assert model.run(prompt_ids=SMALL_PROMPT, max_new_tokens=8, stop=False).tokens == greedy(llama)
    # the byte-level BPE tokenizer: the ids of a tokenizers BPE of the same vocabulary and merges
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    direct = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(vocab.tokens)},
                                  merges=[tuple(m.split(" ")) for m in vocab.merges]))
    direct.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    direct.decoder = decoders.ByteLevel()
    ours = Tokenizer.from_str(model.tokenizer_json)
    for text in ("the quick brown fox", "we compile  models, fast.", "a dog.the fox", " hardware"):
        ids = ours.encode(text).ids
        assert ids == direct.encode(text).ids
        assert ours.decode(ids) == text
        assert model.encode(text) == [0, *ids]  # add_bos_token
    assert model.decode_text([0, *ours.encode("the dog").ids, 1]) == "the dog"


@pytest.mark.parametrize("qtype", [Q.Q8_0, Q.Q4_0], ids=["Q8_0", "Q4_0"])
def test_q8_0_and_q4_0_codes_are_the_files(llama, vocab, folder, capsys, qtype) -> None:
    types = {"output.weight": Q.Q8_0}  # a Q4_0 file with an int8 head, as llama.cpp writes them
    path = write_gguf(folder / f"{qtype.name}.gguf", llama, types, default=qtype, vocab=vocab)
    model = llmc.load(path, max_length=128)
    assert err_lines(capsys) == [f"note: {path}: 1 {qtype.name} tensor dequantized to float ({KEPT})"]  # the embedding
    params = model.module.params
    state = llama.state_dict()
    weights = [f"model.layers.{i}.{part}.weight" for i in range(2) for part in LINEARS] + ["lm_head.weight"]
    for name in weights:
        file_type = types.get(gguf_name(name), qtype)
        bits = 8 if file_type == Q.Q8_0 else 4
        w = state[name].numpy()
        codes, scales = params[f"{name}.codes"], params[f"{name}.scales"]
        assert name not in params
        assert codes.type.encodings == (QuantEncoding(bits, 32, F16, True, None),)
        assert str(codes.type.dtype) == f"i{bits}" and scales.type.dtype == F16
        want_codes, want_scales = block_codes(w, file_type)
        np.testing.assert_array_equal(codes.data.astype(np.int64), want_codes)
        np.testing.assert_array_equal(scales.data.view(np.uint16), want_scales.view(np.uint16))
        got = OPS["dequantize"].ref([codes.data, scales.data], {"group": 32, "dtype": llmc.ir.types.F32}, RefContext({}))[0]
        np.testing.assert_array_equal(got.view(np.uint32), roundtrip(w, file_type).view(np.uint32))
    reference = with_weights(llama, types, qtype)
    tokens = model.run(prompt_ids=SMALL_PROMPT, max_new_tokens=8, stop=False).tokens
    assert tokens == greedy(reference)


@pytest.mark.parametrize("qtype,flags", [(Q.Q4_0, 2564), pytest.param(Q.Q6_K, 518, marks=pytest.mark.slow),
                                         pytest.param(Q.Q3_K, 515, marks=pytest.mark.slow)],
                         ids=["Q4_0", "Q6_K", "Q3_K"])
def test_a_quantized_file_compiles_for_the_accelerator_with_its_codes(llama, vocab, folder, capsys, qtype,
                                                                      flags) -> None:
    from llmc.sim.ladder import verify_project

    model = llama if qtype == Q.Q4_0 else hf_model("llama", hidden_size=256, intermediate_size=256)
    path = write_gguf(folder / f"compile-{qtype.name}.gguf", model, {"output.weight": Q.Q8_0}, default=qtype,
                      vocab=vocab)
    project = folder / f"{qtype.name}-project"
    assert main(["compile", str(path), "--eval-windows", "1", "-o", str(project)]) == 0
    program = (project / "program.txt").read_text()
    # 3-, 4- or 6-bit signed codes on the DSP engine, the file's groups; Q4_0's f16 scales stored as f16 (bit 11)
    assert f"flags={flags}" in program
    lowered = llmc.load(project).module.params
    source = llmc.load(path, max_length=128).module.params
    name = "model.layers.0.mlp.down_proj.weight"
    np.testing.assert_array_equal(lowered[f"{name}.hw_codes"].data, source[f"{name}.codes"].data)
    results = verify_project(project, SMALL_PROMPT, 4, levels=("interpreter", "iss", "csim"))
    assert [r.mismatches for r in results] == [0, 0, 0]


@pytest.mark.parametrize("qtype,bits,group", [(Q.Q5_0, 5, 32), (Q.Q6_K, 6, 16)], ids=["Q5_0", "Q6_K"])
def test_q5_0_and_q6_k_codes_are_kept_exactly(folder, capsys, qtype, bits, group) -> None:
    """Q5_0's codes with their f16 block scale; Q6_K's 6-bit codes with the f32 scale d * sc of every 16
    weights (exact in f32, not in f16): dequantize gives gguf's values bit for bit."""
    import gguf
    from gguf_files import q6_k_blocks

    wide = hf_model("llama", hidden_size=256, intermediate_size=256)  # Q6_K blocks hold 256 weights
    path = write_gguf(folder / f"{qtype.name}.gguf", wide, default=qtype)
    model = llmc.load(path, max_length=128)
    assert "1 " + qtype.name + " tensor dequantized" in err_lines(capsys)[0]  # the embedding only
    name = "model.layers.1.mlp.down_proj.weight"
    codes, scales = model.module.params[f"{name}.codes"], model.module.params[f"{name}.scales"]
    scale_dtype = llmc.ir.types.F32 if qtype == Q.Q6_K else F16
    assert codes.type.encodings == (QuantEncoding(bits, group, scale_dtype, True, None),)
    assert str(codes.type.dtype) == f"i{bits}" and scales.type.dtype == scale_dtype
    w = wide.state_dict()[name].numpy()
    blocks = q6_k_blocks(w) if qtype == Q.Q6_K else gguf.quants.quantize(w, qtype)
    got = OPS["dequantize"].ref([codes.data, scales.data], {"group": group, "dtype": llmc.ir.types.F32},
                                RefContext({}))[0]
    np.testing.assert_array_equal(got.view(np.uint32), gguf.quants.dequantize(blocks, qtype).view(np.uint32))
    assert int(np.abs(codes.data.astype(np.int64)).max()) <= 1 << (bits - 1)


def test_other_types_are_dequantized_with_one_note(llama, folder, capsys) -> None:
    types = {f"blk.{i}.{part}.weight": t for i in range(2) for part, t in (("ffn_down", Q.MXFP4), ("attn_v", Q.Q4_1))}
    path = write_gguf(folder / "mixed.gguf", llama, types)
    model = llmc.load(path, max_length=128)
    assert err_lines(capsys) == [f"note: {path}: 2 MXFP4 tensors dequantized to float ({KEPT}); no tokenizer: the "
                                 "file has none"]  # the Q4_1 codes are kept
    params = model.module.params
    assert params["model.layers.0.mlp.down_proj.weight"].type.dtype.is_float
    assert "model.layers.1.self_attn.v_proj.weight.mins" in params
    check_logits(with_weights(llama, types), model.module)


# every type with a per-block minimum, and Q3_K; the llama Q / K rows are permuted in the file
MIN_TYPES = {"attn_q": Q.Q4_K, "attn_k": Q.Q5_1, "attn_v": Q.Q2_K, "attn_output": Q.Q3_K, "ffn_gate": Q.Q4_1,
             "ffn_up": Q.Q5_K, "ffn_down": Q.Q4_K}
MIN_FORMS = {Q.Q4_1: (4, 32, F16), Q.Q5_1: (5, 32, F16), Q.Q2_K: (2, 16, F32), Q.Q4_K: (4, 32, F32),
             Q.Q5_K: (5, 32, F32), Q.Q3_K: (3, 16, F32)}


@pytest.fixture(scope="module")
def min_file(folder: Path, vocab) -> tuple[torch.nn.Module, dict, Path]:
    wide = hf_model("llama", hidden_size=256, intermediate_size=256)  # K-quant blocks hold 256 weights
    types = {f"blk.{i}.{part}.weight": t for i in range(2) for part, t in MIN_TYPES.items()}
    types["output.weight"] = Q.Q5_K
    return wide, types, write_gguf(folder / "minimums.gguf", wide, types, vocab=vocab)


def test_codes_with_a_minimum_are_kept_exactly(min_file, capsys) -> None:
    """Q4_1, Q5_1, Q2_K, Q4_K and Q5_K keep their unsigned codes with the file's scale and minimum of
    every group (Q3_K its signed codes and f32 scales): the codes are the ones written, and
    dequantize_min (dequantize) gives gguf's dequantization of the file bit for bit."""
    import gguf

    wide, types, path = min_file
    model = llmc.load(path, max_length=128)
    assert not err_lines(capsys)  # nothing dequantized (the embedding is F32)
    params, state = model.module.params, wide.state_dict()
    tensors = {t.name: t for t in gguf.GGUFReader(path).tensors}
    cfg = wide.config
    for name in [f"model.layers.{i}.{part}.weight" for i in range(2) for part in LINEARS] + ["lm_head.weight"]:
        qtype, file_name = types[gguf_name(name)], gguf_name(name)
        heads = {"attn_q": cfg.num_attention_heads, "attn_k": cfg.num_key_value_heads}.get(file_name.split(".")[2:3][0]
                                                                                          if "blk" in file_name else "")
        bits, group, scale_dtype = MIN_FORMS[qtype]
        codes, scales = params[f"{name}.codes"], params[f"{name}.scales"]
        assert name not in params and scales.type.dtype == scale_dtype
        w = state[name].numpy()
        written = quantize(permute(w, heads) if heads else w, qtype).codes
        np.testing.assert_array_equal(codes.data.astype(np.int64),
                                      (unpermute(written, heads) if heads else written).astype(np.int64))
        file_values = gguf.quants.dequantize(np.asarray(tensors[file_name].data), qtype)
        if qtype == Q.Q3_K:
            assert codes.type.encodings == (QuantEncoding(bits, group, scale_dtype),) and str(codes.type.dtype) == "i3"
            got = OPS["dequantize"].ref([codes.data, scales.data], {"group": group, "dtype": F32}, RefContext({}))[0]
        else:
            mins = params[f"{name}.mins"]
            assert codes.type.encodings == (QuantEncoding(bits, group, scale_dtype, False, None, scale_dtype),)
            assert str(codes.type.dtype) == f"u{bits}" and mins.type.dtype == scale_dtype
            got = OPS["dequantize_min"].ref([codes.data, scales.data, mins.data], {"group": group, "dtype": F32},
                                            RefContext({}))[0]
        want = unpermute(file_values, heads) if heads else file_values
        np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32), err_msg=name)
    text = print_module(model.module)
    assert "dequantize_min(" in text and print_module(parse_module(text)) == text
    check_logits(with_weights(wide, types), model.module)  # against the float model of the file's weights


@pytest.mark.parametrize("qtype,flags", [pytest.param(Q.Q4_K, 2097668, id="Q4_K"),
                                         pytest.param(Q.Q4_1, 2099716, id="Q4_1", marks=pytest.mark.slow)])
def test_codes_with_a_minimum_compile_for_the_accelerator(vocab, folder, capsys, qtype, flags) -> None:
    """Q4_K's and Q4_1's unsigned codes with their minimums run on the matrix engine: stored as signed
    nibbles q - 8 (the offset folded into the integer minimums, flag 21), bit-exact across the
    interpreter, the ISS and C-simulation; Q4_1's f16 scales stored as f16 (flag 11)."""
    from llmc.sim.ladder import verify_project

    wide = hf_model("llama", hidden_size=256, intermediate_size=256)  # K-quant blocks hold 256 weights
    path = write_gguf(folder / f"compile-{qtype.name}.gguf", wide, {"output.weight": Q.Q8_0}, default=qtype,
                      vocab=vocab)
    project = folder / f"{qtype.name}-project"
    assert main(["compile", str(path), "--eval-windows", "1", "-o", str(project)]) == 0
    assert f"flags={flags}" in (project / "program.txt").read_text()
    lowered = llmc.load(project).module.params
    source = llmc.load(path, max_length=128).module.params
    name = "model.layers.0.mlp.down_proj.weight"
    np.testing.assert_array_equal(lowered[f"{name}.hw_codes"].data.astype(np.int64),
                                  source[f"{name}.codes"].data.astype(np.int64) - 8)
    results = verify_project(project, SMALL_PROMPT, 4, levels=("interpreter", "iss", "csim"))
    assert [r.mismatches for r in results] == [0, 0, 0]


@pytest.mark.slow
def test_every_type_with_a_minimum_compiles_bit_exact(min_file, capsys) -> None:
    """Q4_1, Q5_1, Q2_K, Q4_K, Q5_K (and Q3_K) layers side by side, a Q5_K head: 2-, 4- and 5-bit codes with
    minimums on the DSP engine, bit-exact across the interpreter, the ISS and C-simulation."""
    from llmc.sim.ladder import verify_project

    _, _, path = min_file
    project = path.parent / "minimums-project"
    assert main(["compile", str(path), "--eval-windows", "1", "-o", str(project)]) == 0
    flags = {int(f) for f in re.findall(r"flags=(\d+)", (project / "program.txt").read_text())}
    assert {f & 0xF for f in flags if f >> 21 & 1} == {2, 4, 5} and any(not f >> 21 & 1 for f in flags)  # Q3_K
    results = verify_project(project, SMALL_PROMPT, 4, levels=("interpreter", "iss", "csim"))
    assert [r.mismatches for r in results] == [0, 0, 0]


def test_minimums_beyond_one_integer_shift_are_refused_in_one_line(vocab, folder, capsys) -> None:
    """A layer whose scales and minimums span more than the engine's integer scales hold at one shift (a
    row 10^7 times its neighbours': its neighbours' scales would round to 0) stops the compile with one
    line naming the layer."""
    wide = hf_model("llama", hidden_size=256, intermediate_size=256)
    with torch.no_grad():
        wide.model.layers[1].mlp.up_proj.weight[0] *= 1e7
    path = write_gguf(folder / "wide-range.gguf", wide, {"output.weight": Q.Q8_0, "token_embd.weight": Q.F32},
                      default=Q.Q4_K, vocab=vocab)
    assert main(["compile", str(path), "-o", str(folder / "wide-range")]) == 2
    lines = err_lines(capsys)
    assert len(lines) == 1 and lines[0].startswith("llmc: error: ")
    assert "model.layers.1.mlp.up_proj.weight: its scales and minimums span more than" in lines[0]
    assert not (folder / "wide-range").exists()


@pytest.mark.slow
def test_codes_with_a_minimum_run_on_tvm(min_file) -> None:
    """The TVM backend's fused dequantize_min GEMV against the interpreter, prefill and decode."""
    pytest.importorskip("tvm")
    from llmc.backends.tvm.compile import compile_model
    from llmc.generate.interpreter import InterpreterDevice

    module = llmc.load(min_file[2], max_length=128).module
    ref, device = InterpreterDevice(module), compile_model(module, "cpu")
    pairs = [(ref.prefill(SMALL_PROMPT), device.prefill(SMALL_PROMPT))]
    pairs += [(ref.decode(token), device.decode(token)) for token in (5, 9, 12)]
    assert max(float(np.abs(a - b).max() / np.abs(a).max()) for a, b in pairs) <= 2e-5


def test_qwen2_file_with_biases_and_a_tied_head(folder, capsys) -> None:
    qwen = hf_model("qwen2", tie_word_embeddings=True)
    path = write_gguf(folder / "qwen2.gguf", qwen, default=Q.Q8_0)
    model = llmc.load(path, max_length=128)
    assert "1 Q8_0 tensor dequantized" in err_lines(capsys)[0]
    params = model.module.params
    assert "model.layers.0.self_attn.q_proj.bias" in params and "model.layers.1.mlp.up_proj.weight.codes" in params
    assert not any(name.startswith("lm_head") for name in params)
    check_logits(with_weights(qwen, {}, Q.Q8_0), model.module)


def test_llama3_rope_factors(folder) -> None:
    rope = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
            "original_max_position_embeddings": 64}  # frequencies kept, smoothed and divided by 8
    model = hf_model("llama", rope_scaling=rope)
    path = write_gguf(folder / "llama3.gguf", model, extra={"rope_freqs.weight": llama3_rope_factors(model.config)})
    check_logits(model, llmc.load(path, max_length=128).module)


def test_shapes_only_keeps_the_quantized_types(llama, folder) -> None:
    path = write_gguf(folder / "shapes.gguf", llama, {"output.weight": Q.Q8_0, "blk.0.ffn_up.weight": Q.Q4_1},
                      default=Q.Q4_0)
    model = llmc.load(path, shapes_only=True, max_length=128)
    params = model.module.params
    codes = params["model.layers.1.mlp.down_proj.weight.codes"]
    assert codes.data is None and str(codes.type) == "tensor<64x96xi4 #quant<bits=4,group=32,scale=f16,sym>>"
    assert str(params["lm_head.weight.codes"].type.dtype) == "i8"
    up = "model.layers.0.mlp.up_proj.weight"
    assert str(params[f"{up}.codes"].type) == "tensor<96x64xu4 #quant<bits=4,group=32,scale=f16,min=f16>>"
    assert params[f"{up}.mins"].data is None and str(params[f"{up}.mins"].type) == "tensor<96x2xf16>"


@pytest.mark.parametrize("case, expected", [
    ("truncated", r"tensor 'output\.weight' is truncated"),
    ("header", r"not a readable GGUF file"),
    ("text", r"not a readable GGUF file"),
    ("shape", r"tensor 'blk\.0\.ffn_gate\.weight' has shape \[96, 64\], the metadata needs \[128, 64\]"),
    ("missing", r"tensor 'blk\.1\.ffn_up\.weight' is missing"),
    ("arch", r"GGUF architecture 'falcon' is not supported"),
])
def test_malformed_files_give_one_line(llama, tmp_path, capsys, case, expected) -> None:
    path = tmp_path / f"{case}.gguf"
    if case in ("truncated", "header"):
        data = write_gguf(path, llama).read_bytes()
        path.write_bytes(data[:-200] if case == "truncated" else data[:40])
    elif case == "text":
        path.write_text("not a model\n")
    else:
        write_gguf(path, llama, meta={"feed_forward_length": 128} if case == "shape" else None,
                   drop=("blk.1.ffn_up.weight",) if case == "missing" else (), arch="falcon" if case == "arch" else None)
    with pytest.raises(LlmcError, match=expected) as info:
        llmc.load(path)
    message = str(info.value)
    assert message.startswith(f"{path}: ") and "\n" not in message
    capsys.readouterr()
    assert main(["import", str(path), "-o", str(tmp_path / "out.llmc")]) == 2
    lines = err_lines(capsys)
    assert len(lines) == 1 and lines[0].startswith("llmc: error: ") and re.search(expected, lines[0])


def test_sentencepiece_vocabulary() -> None:
    from tokenizers import Tokenizer

    pieces = ["<unk>", "<s>", "</s>", *(f"<0x{b:02X}>" for b in range(256)), "▁", "h", "e", "l", "o", "w", "r", "d",
              "he", "ll", "▁he", "▁hell", "▁hello", "or", "▁w", "▁wor", "ld", "▁world", "lo", "llo"]
    types = [2, 3, 3, *[6] * 256, *[1] * (len(pieces) - 259)]
    scores = [0.0, 0.0, 0.0, *[0.0] * 256, *(-float(i) for i in range(len(pieces) - 259))]
    fields = {"tokenizer.ggml.model": "llama", "tokenizer.ggml.tokens": pieces, "tokenizer.ggml.scores": scores,
              "tokenizer.ggml.token_type": types, "tokenizer.ggml.unknown_token_id": 0}
    spm = read_tokenizer(fields)
    assert spm.add_bos and spm.reason == ""
    tok = Tokenizer.from_str(spm.json)
    ids = tok.encode("hello world").ids
    assert [pieces[i] for i in ids] == ["▁hello", "▁world"]
    for text in ("hello world", "held  word", "héllo\n"):  # é and \n through byte fallback
        assert tok.decode(tok.encode(text).ids) == text
    assert "<0xC3>" in [pieces[i] for i in tok.encode("é").ids]
    other = read_tokenizer({"tokenizer.ggml.model": "bert", "tokenizer.ggml.tokens": ["a"]})
    assert other.json is None and "'bert' is not handled" in other.reason
