"""llama.cpp GGUF files: the metadata becomes a transformers config, the tensors its weights, and
linear weights of the block types llmc keeps (``gguf_blocks.KEPT``) keep the file's codes exactly.

Every tensor is dequantized with ``gguf.quants.dequantize`` into the Hugging Face model, which is
traced as any other (:func:`.hf.import_model`). Then each kept linear weight is swapped for its
codes and block scales: signed codes (Q8_0, Q4_0, Q5_0, Q3_K, Q6_K) through the quantize pass's
:func:`install`, read by ``dequantize``; unsigned codes with a per-block minimum (Q4_1, Q5_1,
Q2_K, Q4_K, Q5_K) as ``W.codes``, ``W.scales`` and ``W.mins``, read by ``dequantize_min``. Either
way the IR's weights are bit for bit what gguf computes. llama.cpp permutes the rows of the llama
architecture's Q and K projections (interleaved RoPE pairs); the rows are put back in Hugging
Face's order, which keeps the blocks (they run along K) intact.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from llmc.compiler.frontend import hf
from llmc.compiler.frontend.gguf_blocks import KEPT, Form
from llmc.compiler.frontend.gguf_reader import GgufFile
from llmc.compiler.frontend.gguf_tokenizer import PREFIX, read_tokenizer
from llmc.compiler.passes.linear import LinearLayer, linear_layers, replace_param
from llmc.compiler.passes.quantize import install
from llmc.compiler.quant.grid import Grid, Quantized
from llmc.errors import FrontendError
from llmc.ir.builder import Builder
from llmc.ir.graph import Module, Param, Value
from llmc.ir.ops.common import as_dtype
from llmc.ir.types import DType, TensorType

ARCHITECTURES = ("llama", "qwen2")
GLOBAL = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
          "lm_head.weight": "output.weight"}
BLOCK = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
         "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
         "mlp.down_proj": "ffn_down", "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm"}
_LAYER = re.compile(r"model\.layers\.(\d+)\.(.+)\.(weight|bias)")
ROPE_FREQS = "rope_freqs.weight"  # Llama 3's per-frequency divisors of the RoPE angle
KEPT_NAMES = ", ".join(t.name for t in sorted(KEPT)[:-1]) + " and " + max(KEPT).name


@dataclass
class GgufImport:
    """The imported module, its tokenizer JSON (or None) and the one note line for stderr (or None)."""

    module: Module
    tokenizer_json: str | None
    note: str | None


def import_gguf(path: Path, name: str, max_length: int = 4096, shapes_only: bool = False) -> GgufImport:
    """Import the GGUF file at ``path`` (``shapes_only``: structure and quantized types, no weights)."""
    from llmc.compiler.frontend.checkpoint import check_memory

    file = GgufFile.open(path)
    arch = file.string("general.architecture")
    if arch not in ARCHITECTURES:
        raise FrontendError(f"{path}: GGUF architecture '{arch}' is not supported (llmc imports {', '.join(ARCHITECTURES)})")
    tokenizer = read_tokenizer({k: file.value(k) for k in file.keys() if k.startswith(PREFIX)})
    cfg = hf.config_from_dict(config_values(file, arch, tokenizer.add_bos), str(path))
    if not shapes_only:
        check_memory(cfg, str(path))
    model = hf.build_model(cfg, meta=shapes_only)
    names = gguf_names(model)
    state = model.state_dict()
    file.check_inventory({g: tuple(state[h].shape) for h, g in names.items()},
                         extra={ROPE_FREQS} if arch == "llama" else set())
    heads = row_heads(cfg, arch)
    if not shapes_only:
        load_weights(model, file, names, heads)
    module = hf.import_model(model, name, max_length)
    kept = keep_codes(module, file, names, heads, shapes_only)
    lost = [file.type_name(n) for n in names.values() if not file.is_float(n) and n not in kept]
    return GgufImport(module, tokenizer.json, note_line(path, lost, tokenizer.reason))


def config_values(file: GgufFile, arch: str, add_bos: bool) -> dict[str, Any]:
    """The transformers config (as a config.json dict) the metadata describes."""
    p = f"{arch}."
    hidden, heads = file.integer(p + "embedding_length"), file.integer(p + "attention.head_count")
    tokens = file.value(PREFIX + "tokens", None)
    vocab = len(tokens) if tokens else file.integer(p + "vocab_size", None) or file.shape("token_embd.weight")[0]
    values: dict[str, Any] = {
        "model_type": arch,
        "hidden_size": hidden,
        "num_hidden_layers": file.integer(p + "block_count"),
        "intermediate_size": file.integer(p + "feed_forward_length"),
        "num_attention_heads": heads,
        "num_key_value_heads": file.integer(p + "attention.head_count_kv", heads),
        "rms_norm_eps": file.number(p + "attention.layer_norm_rms_epsilon"),
        "max_position_embeddings": file.integer(p + "context_length"),
        "vocab_size": vocab,
        "rope_theta": file.number(p + "rope.freq_base", 10000.0),
        "tie_word_embeddings": not file.has_tensor("output.weight"),
        "bos_token_id": file.integer(PREFIX + "bos_token_id", None, minimum=0) if add_bos else None,
        "eos_token_id": file.integer(PREFIX + "eos_token_id", None, minimum=0),
    }
    head_dim = file.integer(p + "attention.key_length", hidden // heads)
    if head_dim % 2:
        raise FrontendError(f"{file.path}: RoPE needs an even head width, got {head_dim}")
    if head_dim != hidden // heads:
        values["head_dim"] = head_dim
    if file.integer(p + "attention.value_length", head_dim) != head_dim:
        raise FrontendError(f"{file.path}: key and value heads of different widths are not supported")
    rotary = file.integer(p + "rope.dimension_count", head_dim)
    if rotary != head_dim:
        raise FrontendError(f"{file.path}: RoPE over {rotary} of {head_dim} head dimensions is not supported for {arch}")
    scaling = file.value(p + "rope.scaling.type", "none")
    if scaling == "linear":
        values["rope_scaling"] = {"rope_type": "linear", "factor": file.number(p + "rope.scaling.factor")}
    elif scaling != "none":
        raise FrontendError(f"{file.path}: RoPE scaling '{scaling}' is not supported (none and linear are)")
    if arch == "llama":
        values["attention_bias"] = file.has_tensor("blk.0.attn_q.bias")
    return values


def gguf_names(model: Any) -> dict[str, str]:
    """Hugging Face parameter name -> GGUF tensor name, for every weight the model needs (a tied
    output head comes with the embedding)."""
    names = {}
    for hf_name in model.state_dict():
        if hf_name == "lm_head.weight" and model.config.tie_word_embeddings:
            continue
        m = _LAYER.fullmatch(hf_name)
        found = f"blk.{m[1]}.{BLOCK[m[2]]}.{m[3]}" if m and m[2] in BLOCK else GLOBAL.get(hf_name)
        if found is None:
            raise FrontendError(f"{model.config.model_type}: no GGUF tensor is known for '{hf_name}'")
        names[hf_name] = found
    return names


def row_heads(cfg: Any, arch: str) -> dict[str, int]:
    """GGUF block part -> the head count llama.cpp permuted its rows by (llama's Q and K only)."""
    if arch != "llama":
        return {}
    return {"attn_q": cfg.num_attention_heads, "attn_k": cfg.num_key_value_heads}


def unpermute(rows: np.ndarray, heads: int) -> np.ndarray:
    """Undo llama.cpp's permutation of Q / K rows (per head: the two halves interleaved)."""
    n = rows.shape[0]
    return rows.reshape(heads, n // heads // 2, 2, *rows.shape[1:]).swapaxes(1, 2).reshape(rows.shape)


def _heads_of(gguf_name: str, heads: dict[str, int]) -> int | None:
    parts = gguf_name.split(".")
    return heads.get(parts[2]) if len(parts) == 4 and parts[0] == "blk" else None


def load_weights(model: Any, file: GgufFile, names: dict[str, str], heads: dict[str, int]) -> None:
    """Fill ``model`` with the dequantized tensors (Q / K rows unpermuted) and Llama 3's RoPE factors."""
    import torch

    from llmc.compiler.frontend.checkpoint import load_state

    tensors = {}
    for hf_name, gguf_name in names.items():
        w = file.floats(gguf_name)
        h = _heads_of(gguf_name, heads)
        tensors[hf_name] = torch.from_numpy(unpermute(w, h) if h else w)
    load_state(model, tensors, str(file.path))
    if file.has_tensor(ROPE_FREQS):
        rotary = model.model.rotary_emb
        factors = file.floats(ROPE_FREQS)
        if factors.shape != tuple(rotary.inv_freq.shape):
            raise FrontendError(f"{file.path}: tensor '{ROPE_FREQS}' has shape {list(factors.shape)}, the config "
                                f"needs {list(rotary.inv_freq.shape)}")
        rotary.inv_freq = rotary.inv_freq / torch.from_numpy(factors)
        rotary.original_inv_freq = rotary.inv_freq


def keep_codes(module: Module, file: GgufFile, names: dict[str, str], heads: dict[str, int], shapes_only: bool) -> set[str]:
    """Swap every linear weight of ``module`` stored in a kept block type for the file's codes,
    scales (and minimums); returns the GGUF names of the tensors whose codes were kept."""
    kept = set()
    for layer in linear_layers(module, exclude_head=False):
        gguf_name = names.get(layer.weight)
        if gguf_name is None or gguf_name == GLOBAL["model.embed_tokens.weight"]:
            continue  # the embedding (also a tied head) stays float: a gather reads it
        form = file.kept(gguf_name)
        if form is None:
            continue
        arrays = None
        if not shapes_only:
            arrays = file.codes(gguf_name)
            h = _heads_of(gguf_name, heads)
            if h:
                arrays = tuple(None if a is None else unpermute(a, h) for a in arrays)
        if form.min_dtype is None:
            grid = Grid(form.bits, form.group, True)
            q = None if arrays is None else Quantized(arrays[0], arrays[1], None, grid)
            install(module, layer, grid, q, scale_dtype=form.scale_dtype)
        else:
            install_min(module, layer, form, arrays)
        kept.add(gguf_name)
    return kept


def install_min(module: Module, layer: LinearLayer, form: Form,
                arrays: tuple[np.ndarray, np.ndarray, np.ndarray | None] | None) -> None:
    """Replace ``layer``'s float weight by unsigned codes ``W.codes`` (encoded ``form``), ``W.scales``
    and ``W.mins`` (one per group) read by ``dequantize_min``; ``arrays`` None: shapes only."""
    shape = layer.shape
    grouped = [*shape[:-1], layer.in_features // form.group]
    parts = (("codes", DType("uint", form.bits), shape, (form.encoding,)),
             ("scales", form.scale_dtype, grouped, ()), ("mins", form.min_dtype, grouped, ()))
    params = [Param(f"{layer.weight}.{part}", TensorType.of(dims, dtype, enc),
                    None if arrays is None else as_dtype(arrays[i].reshape(dims), dtype))
              for i, (part, dtype, dims, enc) in enumerate(parts)]

    def expand(b: Builder, values: dict[str, Value]) -> Value:
        return b.op("dequantize_min", [values[p.name] for p in params], {"group": form.group})

    replace_param(module, layer.weight, params, expand)


def note_line(path: Path, lost_types: list[str], tokenizer_reason: str) -> str | None:
    """One line: the quantized tensors dequantized to float, by type, and a missing tokenizer."""
    parts = []
    if lost_types:
        counts = {t: lost_types.count(t) for t in sorted(set(lost_types))}
        listed = ", ".join(f"{n} {t}" for t, n in counts.items())
        noun = "tensor" if len(lost_types) == 1 else "tensors"
        parts.append(f"{listed} {noun} dequantized to float (llmc keeps {KEPT_NAMES} codes of linear layers)")
    if tokenizer_reason:
        parts.append(f"no tokenizer: {tokenizer_reason}")
    return f"note: {path}: {'; '.join(parts)}" if parts else None
