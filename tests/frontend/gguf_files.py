"""GGUF files written from a Hugging Face model the way llama.cpp's converter writes them (tensor
names, the llama Q/K row permutation, quantized blocks from ``gguf.quants`` or, for the K-quants it
cannot write, from the writers here), a small byte-level BPE vocabulary for them, and the codes the
tests check llmc's against."""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import torch

from llmc.deploy.tokenizer import merge_pair

Q = gguf.GGMLQuantizationType
PARTS = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
         "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
         "mlp.down_proj": "ffn_down", "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm"}
TOP = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
       "lm_head.weight": "output.weight"}
CORPUS = ("the quick brown fox jumps over the lazy dog. a fine day, then the dog sleeps. "
          "we compile models to hardware, and the hardware runs them fast. the fox and the dog are friends. ") * 3


def gguf_name(hf_name: str) -> str:
    m = re.fullmatch(r"model\.layers\.(\d+)\.(.+)\.(weight|bias)", hf_name)
    return f"blk.{m[1]}.{PARTS[m[2]]}.{m[3]}" if m else TOP[hf_name]


def permute(w: np.ndarray, heads: int) -> np.ndarray:
    """llama.cpp's converter: each head's two RoPE halves interleaved, row by row."""
    return w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


@dataclass
class Vocab:
    """A byte-level BPE vocabulary: ``<s>``, ``</s>``, the characters of :data:`CORPUS`, then merges."""

    tokens: list[str]
    merges: list[str]
    types: list[int] = field(default_factory=list)


def train_bpe(size: int, text: str = CORPUS) -> Vocab:
    """Greedy BPE on ``text`` (most frequent pair first, ties by the pair) to ``size`` tokens."""
    words = Counter(w.replace(" ", "Ġ") for w in re.findall(r" ?[a-z]+| ?[^\sa-z]+|\s+", text))
    split = {w: list(w) for w in words}
    tokens = ["<s>", "</s>", *sorted({c for w in words for c in w})]
    merges = []
    while len(tokens) < size:
        pairs: Counter = Counter()
        for w, n in words.items():
            for a, b in zip(split[w], split[w][1:]):
                pairs[a, b] += n
        (a, b), _ = min(pairs.items(), key=lambda kv: (-kv[1], kv[0]))
        merges.append(f"{a} {b}")
        tokens.append(a + b)
        for w, parts in split.items():
            split[w] = merge_pair(parts, a, b)
    types = [gguf.TokenType.CONTROL] * 2 + [gguf.TokenType.NORMAL] * (len(tokens) - 2)
    return Vocab(tokens, merges, [int(t) for t in types])


def write_gguf(path: Path, model: torch.nn.Module, types: Mapping[str, Q] | None = None, default: Q = Q.F32,
               vocab: Vocab | None = None, arch: str | None = None, meta: Mapping[str, Any] | None = None,
               drop: tuple[str, ...] = (), extra: Mapping[str, np.ndarray] | None = None) -> Path:
    """``model`` as a GGUF file: 2-D weights in ``types[gguf name]`` (else ``default``), 1-D ones in F32.
    ``meta`` overrides config values (``feed_forward_length=...``); ``drop`` leaves tensors out;
    ``extra`` tensors are added in F32."""
    cfg = model.config
    arch = arch or cfg.model_type
    values = dict(context_length=cfg.max_position_embeddings, embedding_length=cfg.hidden_size,
                  block_count=cfg.num_hidden_layers, feed_forward_length=cfg.intermediate_size,
                  head_count=cfg.num_attention_heads, head_count_kv=cfg.num_key_value_heads,
                  layer_norm_rms_eps=cfg.rms_norm_eps, rope_freq_base=cfg.rope_parameters["rope_theta"],
                  rope_dimension_count=cfg.hidden_size // cfg.num_attention_heads)
    values.update(meta or {})
    writer = gguf.GGUFWriter(str(path), arch)
    for key, value in values.items():
        getattr(writer, f"add_{key}")(value)
    if vocab is not None:
        writer.add_tokenizer_model("gpt2")
        writer.add_tokenizer_pre("gpt-2")
        writer.add_token_list(vocab.tokens)
        writer.add_token_merges(vocab.merges)
        writer.add_token_types(vocab.types)
        writer.add_bos_token_id(0)
        writer.add_eos_token_id(1)
        writer.add_add_bos_token(True)
    tied = cfg.tie_word_embeddings
    for hf_name, tensor in model.state_dict().items():
        name = gguf_name(hf_name)
        if name in drop or (tied and hf_name == "lm_head.weight"):
            continue
        w = tensor.detach().numpy().astype(np.float32)
        if arch == "llama" and name.split(".")[2:3] in (["attn_q"], ["attn_k"]):
            w = permute(w, cfg.num_attention_heads if ".attn_q." in name else cfg.num_key_value_heads)
        qtype = (types or {}).get(name, default) if w.ndim == 2 else Q.F32
        if qtype == Q.F32:
            writer.add_tensor(name, np.ascontiguousarray(w))
        else:
            writer.add_tensor(name, quantize(w, qtype).blocks, raw_dtype=qtype)
    for name, w in (extra or {}).items():
        writer.add_tensor(name, np.ascontiguousarray(w, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def llama3_rope_factors(cfg: Any) -> np.ndarray:
    """``rope_freqs.weight`` as llama.cpp's converter computes it from a ``llama3`` RoPE config: the
    divisor of each rotary frequency."""
    rope = cfg.rope_parameters
    dim = cfg.hidden_size // cfg.num_attention_heads
    freqs = 1.0 / rope["rope_theta"] ** (np.arange(0, dim, 2, dtype=np.float64) / dim)
    old, low, high, factor = (rope["original_max_position_embeddings"], rope["low_freq_factor"],
                              rope["high_freq_factor"], rope["factor"])
    out = []
    for wavelen in 2 * math.pi / freqs:
        if wavelen < old / high:
            out.append(1.0)
        elif wavelen > old / low:
            out.append(factor)
        else:
            smooth = (old / wavelen - low) / (high - low)
            out.append(1 / ((1 - smooth) / factor + smooth))
    return np.asarray(out, dtype=np.float32)


def roundtrip(w: np.ndarray, qtype: Q) -> np.ndarray:
    """``w`` as gguf stores it in ``qtype`` and reads it back (rows are independent, so permuting
    rows before or after gives the same values)."""
    return w if qtype == Q.F32 else gguf.quants.dequantize(quantize(w, qtype).blocks, qtype)


def with_weights(model: torch.nn.Module, types: Mapping[str, Q], default: Q = Q.F32) -> torch.nn.Module:
    """A copy of ``model`` holding the weights a GGUF file of these types gives back."""
    import copy

    out = copy.deepcopy(model)
    with torch.no_grad():
        for hf_name, p in out.state_dict().items():
            if p.ndim == 2:
                qtype = types.get(gguf_name(hf_name), default)
                p.copy_(torch.from_numpy(roundtrip(p.numpy().astype(np.float32), qtype)))
    return out


def block_codes(w: np.ndarray, qtype: Q) -> tuple[np.ndarray, np.ndarray]:
    """(codes, f16 scales) of ``w`` quantized by gguf: Q8_0's ``qs``; Q4_0's nibbles minus 8."""
    raw = gguf.quants.quantize(w, qtype)
    rows = w.shape[0]
    blocks = raw.reshape(rows, w.shape[1] // 32, -1)
    d = blocks[..., :2].copy().view(np.float16)[..., 0]
    if qtype == Q.Q8_0:
        return blocks[..., 2:].copy().view(np.int8).reshape(w.shape), d
    qs = blocks[..., 2:].astype(np.int16)
    codes = np.concatenate([qs % 16, qs // 16], axis=-1) - 8
    return codes.reshape(w.shape), d


def q6_k_blocks(w: np.ndarray) -> np.ndarray:
    """Q6_K blocks of ``w`` [N, K] (K a multiple of 256), which the gguf package cannot write: per 16
    weights an int8 scale of the block's f16 ``d``, 6-bit codes ``q - 32``, laid out as gguf reads them
    (low nibbles in ``ql``, the two high bits in ``qh``, then the scales and ``d``)."""
    rows, cols = w.shape
    groups = w.reshape(rows, cols // 256, 16, 16).astype(np.float64)
    amax = np.abs(groups).max(axis=-1)  # [N, B, 16]
    d = (amax.max(axis=-1) / 31 / 127).astype(np.float16)  # the block scale, f16
    d = np.where(d == 0, np.float16(1), d)
    sc = np.clip(np.rint(amax / 31 / d.astype(np.float64)[..., None]), 1, 127).astype(np.int8)
    step = d.astype(np.float32)[..., None] * sc.astype(np.float32)  # [N, B, 16]
    q = np.clip(np.rint(groups / step[..., None]), -32, 31).astype(np.int64) + 32  # [N, B, 16, 16]
    q = q.reshape(rows, cols // 256, 8, 32)  # chunk c, lane l: element c * 32 + l
    ql = np.zeros((rows, cols // 256, 128), dtype=np.uint8)
    qh = np.zeros((rows, cols // 256, 64), dtype=np.uint8)
    for c in range(8):
        half, shift, j = c // 4, (c % 4) // 2, (c % 2) * 32 + np.arange(32)
        ql[..., half * 64 + j] |= ((q[:, :, c] & 0xF) << (4 * shift)).astype(np.uint8)
        qh[..., half * 32 + np.arange(32)] |= ((q[:, :, c] >> 4) << (2 * (c % 4))).astype(np.uint8)
    tail = np.concatenate([sc.view(np.uint8), d[..., None].view(np.uint8)], axis=-1)
    return np.concatenate([ql, qh, tail], axis=-1).reshape(rows, -1)


@dataclass
class Blocks:
    """A tensor [N, K] quantized to GGUF blocks [N, bytes], with the codes the writer chose (in the
    file's own convention: Q4_1 / Q5_1 and Q2_K / Q4_K / Q5_K unsigned, Q3_K signed; None where the
    test does not need them)."""

    blocks: np.ndarray
    codes: np.ndarray | None = None


def quantize(w: np.ndarray, qtype: Q) -> Blocks:
    """``w`` [N, K] as ``qtype`` blocks: gguf's quantizer where it has one, else the writers here."""
    writers = {Q.Q6_K: lambda w: Blocks(q6_k_blocks(w)), Q.Q2_K: q2_k_blocks, Q.Q3_K: q3_k_blocks,
               Q.Q4_K: lambda w: qk_min_blocks(w, 4), Q.Q5_K: lambda w: qk_min_blocks(w, 5)}
    if qtype in writers:
        return writers[qtype](w)
    blocks = gguf.quants.quantize(w, qtype)
    if qtype not in (Q.Q4_1, Q.Q5_1):
        return Blocks(blocks)
    # gguf's Q4_1 / Q5_1 quantizer: q = trunc((x - min) / d + 0.5) with d = (max - min) / (2^b - 1)
    top = 15 if qtype == Q.Q4_1 else 31
    x = w.astype(np.float32).reshape(-1, 32)
    low, high = x.min(axis=-1, keepdims=True), x.max(axis=-1, keepdims=True)
    d = (high - low) / np.float32(top)
    with np.errstate(divide="ignore"):
        inv = np.where(d == 0, np.float32(0), np.float32(1) / d)
    codes = np.trunc((x - low) * inv + np.float32(0.5), dtype=np.float32).astype(np.uint8).clip(0, top)
    return Blocks(blocks, codes.reshape(w.shape))


def _super_blocks(w: np.ndarray, sub: int, top: int, scale_top: int) -> tuple[np.ndarray, ...]:
    """Per 256-weight super-block of ``w``: f16 ``d`` and ``dmin``, per ``sub``-weight sub-block an
    integer scale and minimum (0..scale_top), and codes 0..top with ``d * sc * q - dmin * m`` near
    ``w``. Shapes [N, B], [N, B], [N, B, 256/sub] x2, [N, B, 256/sub, sub]."""
    rows, cols = w.shape
    x = w.reshape(rows, cols // 256, 256 // sub, sub).astype(np.float64)
    low = np.minimum(x.min(axis=-1), 0.0)
    step, floor = (x.max(axis=-1) - low) / top, -low
    d = (step.max(axis=-1) / scale_top).astype(np.float16)
    dmin = (floor.max(axis=-1) / scale_top).astype(np.float16)
    d, dmin = np.where(d == 0, np.float16(1), d), np.where(dmin == 0, np.float16(1), dmin)
    sc = np.clip(np.rint(step / d.astype(np.float64)[..., None]), 1, scale_top).astype(np.uint8)
    m = np.clip(np.rint(floor / dmin.astype(np.float64)[..., None]), 0, scale_top).astype(np.uint8)
    scale = d.astype(np.float32)[..., None] * sc.astype(np.float32)
    minimum = dmin.astype(np.float32)[..., None] * m.astype(np.float32)
    q = np.clip(np.rint((x + minimum[..., None]) / scale[..., None]), 0, top).astype(np.uint8)
    return d, dmin, sc, m, q


def _pack_nibbles(q: np.ndarray) -> np.ndarray:
    """[..., 256] 4-bit values as 128 bytes: in each run of 64, byte j = element j | element j + 32 << 4."""
    runs = q.reshape(*q.shape[:-1], 4, 2, 32)
    return (runs[..., 0, :] | (runs[..., 1, :] << 4)).reshape(*q.shape[:-1], 128)


def _pack_crumbs(q: np.ndarray) -> np.ndarray:
    """[..., 256] 2-bit values as 64 bytes: byte 32 * h + j holds element 128 * h + 32 * s + j at bits 2 * s."""
    runs = q.reshape(*q.shape[:-1], 2, 4, 32).astype(np.uint8)
    packed = runs[..., 0, :] | (runs[..., 1, :] << 2) | (runs[..., 2, :] << 4) | (runs[..., 3, :] << 6)
    return packed.reshape(*q.shape[:-1], 64)


def _pack_planes(bits: np.ndarray) -> np.ndarray:
    """[..., 256] single bits as 32 bytes: bit p of byte j is element 32 * p + j."""
    planes = bits.reshape(*bits.shape[:-1], 8, 32).astype(np.uint8)
    return np.bitwise_or.reduce(planes << np.arange(8, dtype=np.uint8)[:, None], axis=-2)


def _f16_bytes(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x.astype(np.float16))[..., None].view(np.uint8)


def qk_min_blocks(w: np.ndarray, bits: int) -> Blocks:
    """Q4_K / Q5_K blocks of ``w`` [N, K] (K a multiple of 256): 8 sub-blocks of 32 with 6-bit
    scales and minimums packed as gguf's ``Q4_K.get_scale_min`` reads them, then (Q5_K) the fifth
    bits as bit planes and the low nibbles."""
    rows, cols = w.shape
    d, dmin, sc, m, q = _super_blocks(w, 32, (1 << bits) - 1, 63)
    low = sc[..., :4] | ((sc[..., 4:] >> 4) << 6)
    mid = m[..., :4] | ((m[..., 4:] >> 4) << 6)
    top = (sc[..., 4:] & 0x0F) | ((m[..., 4:] & 0x0F) << 4)
    flat = q.reshape(rows, cols // 256, 256)
    parts = [_f16_bytes(d), _f16_bytes(dmin), low, mid, top]
    if bits == 5:
        parts.append(_pack_planes(flat >> 4))
    parts.append(_pack_nibbles(flat & 0x0F))
    return Blocks(np.concatenate(parts, axis=-1).reshape(rows, -1), flat.reshape(rows, cols))


def q2_k_blocks(w: np.ndarray) -> Blocks:
    """Q2_K blocks of ``w`` [N, K]: 16 sub-blocks of 16 with a 4-bit scale (low nibble) and minimum
    (high) per byte, 2-bit codes, then the f16 ``d`` and ``dmin``."""
    rows, cols = w.shape
    d, dmin, sc, m, q = _super_blocks(w, 16, 3, 15)
    flat = q.reshape(rows, cols // 256, 256)
    parts = [sc | (m << 4), _pack_crumbs(flat), _f16_bytes(d), _f16_bytes(dmin)]
    return Blocks(np.concatenate(parts, axis=-1).reshape(rows, -1), flat.reshape(rows, cols))


def q3_k_blocks(w: np.ndarray) -> Blocks:
    """Q3_K blocks of ``w`` [N, K]: signed codes -4..3 (two low bits, and a high bit set where the
    code is not negative) and 6-bit scales ``sc`` (``d * (sc - 32)`` per 16 weights), then ``d``."""
    rows, cols = w.shape
    x = w.reshape(rows, cols // 256, 16, 16).astype(np.float64)
    step = np.abs(x).max(axis=-1) / 4
    d = (step.max(axis=-1) / 31).astype(np.float16)
    d = np.where(d == 0, np.float16(1), d)
    sc = np.clip(np.rint(step / d.astype(np.float64)[..., None]), 1, 31).astype(np.int64) + 32
    scale = d.astype(np.float32)[..., None] * (sc - 32).astype(np.float32)
    q = np.clip(np.rint(x / scale[..., None]), -4, 3).astype(np.int64).reshape(rows, cols // 256, 256)
    u = (q + 4).astype(np.uint8)
    low = ((sc[..., :8] & 0x0F) | ((sc[..., 8:] & 0x0F) << 4)).astype(np.uint8)
    high = sum(((sc[..., 4 * s:4 * s + 4] >> 4) & 3) << (2 * s) for s in range(4)).astype(np.uint8)
    parts = [_pack_planes(u >> 2), _pack_crumbs(u & 3), low, high, _f16_bytes(d)]
    return Blocks(np.concatenate(parts, axis=-1).reshape(rows, -1), q.reshape(rows, cols))
