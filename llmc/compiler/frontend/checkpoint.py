"""Reading a Hugging Face model folder strictly: safetensors only (never a pickle), every parameter the
architecture needs present with its shape and a floating-point dtype, nothing unexpected, and the
model's size checked against the machine's memory before anything is allocated."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import torch

from llmc.errors import FrontendError
from llmc.sizes import human_bytes

INDEX = "model.safetensors.index.json"
SINGLE = "model.safetensors"
PICKLES = ("*.bin", "*.pt", "*.pth", "*.ckpt")
# config fields that must be positive integers when present
INTEGER_FIELDS = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                  "num_key_value_heads", "vocab_size", "max_position_embeddings", "head_dim", "n_embd", "n_layer",
                  "n_head", "n_positions", "n_inner", "ffn_dim", "word_embed_proj_dim")
FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
MEMORY_SHARE = 0.8  # of the memory available, what a model's float32 weights may take


def check_config(values: dict[str, Any], where: str) -> None:
    """Refuse config values that would fail deep inside transformers or build a nonsensical model."""
    for key in INTEGER_FIELDS:
        value = values.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise FrontendError(f"{where}: {key} must be a positive integer, got {value!r}")
    hidden = values.get("hidden_size", values.get("n_embd"))
    heads = values.get("num_attention_heads", values.get("n_head"))
    kv_heads = values.get("num_key_value_heads")
    if hidden and heads and "head_dim" not in values and hidden % heads:
        raise FrontendError(f"{where}: hidden size {hidden} is not divisible by {heads} attention heads")
    if heads and kv_heads and heads % kv_heads:
        raise FrontendError(f"{where}: {heads} attention heads are not divisible by {kv_heads} key-value heads")


def available_memory() -> int:
    """Bytes of memory available now (MemAvailable on Linux, else the physical memory)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def check_memory(config: Any, where: str) -> None:
    """Refuse a model whose float32 weights would not fit the memory available, before allocating them."""
    from llmc.compiler.frontend.hf import build_model

    params = sum(p.numel() for p in build_model(config, meta=True).parameters())
    need, have = 4 * params, available_memory()
    if need > MEMORY_SHARE * have:
        raise FrontendError(f"{where}: {params:,} parameters need {human_bytes(need)} as float32; "
                            f"{human_bytes(have)} of memory is available (use --shapes-only for the structure)")


def weight_files(model_dir: Path) -> list[Path]:
    """The safetensors files of a model folder: those of its index, or ``model.safetensors``."""
    index = model_dir / INDEX
    if index.is_file():
        try:
            names = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as e:
            raise FrontendError(f"{index}: corrupt index ({e})") from None
        for name in names:
            if not isinstance(name, str) or Path(name).name != name:
                raise FrontendError(f"{index}: {name!r} is not a file name in this folder")
            if not (model_dir / name).is_file():
                raise FrontendError(f"{model_dir / name}: listed in {INDEX} but missing")
        return [model_dir / name for name in names]
    if (model_dir / SINGLE).is_file():
        return [model_dir / SINGLE]
    pickles = sorted(p.name for pattern in PICKLES for p in model_dir.glob(pattern))
    if pickles:
        raise FrontendError(f"{model_dir}: holds {pickles[0]}, pickled weights llmc never loads: convert it to "
                            f"{SINGLE} (safetensors.torch.save_file of the state dict) first")
    raise FrontendError(f"{model_dir}: no {SINGLE} or {INDEX} (use --shapes-only for a config alone)")


def read_tensors(files: list[Path]) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    tensors: dict[str, torch.Tensor] = {}
    for path in files:
        try:
            loaded = load_file(str(path))
        except (SafetensorError, OSError, ValueError) as e:
            raise FrontendError(f"{path}: corrupt safetensors file: {e}") from None
        for name, tensor in loaded.items():
            if name in tensors:
                raise FrontendError(f"{path}: tensor '{name}' is also in another file")
            tensors[name] = tensor
    return tensors


def load_state(model: torch.nn.Module, tensors: dict[str, torch.Tensor], where: str) -> None:
    """Fill ``model`` from ``tensors``: every entry of its state dict (tied weights once), no other tensor."""
    expected = model.state_dict()
    ignored = [*(getattr(model, "_keys_to_ignore_on_load_unexpected", None) or []), r"rotary_emb\.inv_freq$"]
    unexpected = sorted(n for n in set(tensors) - set(expected) if not any(re.search(p, n) for p in ignored))
    if unexpected:
        more = f" (and {len(unexpected) - 1} more)" if len(unexpected) > 1 else ""
        raise FrontendError(f"{where}: unexpected tensor '{unexpected[0]}'{more}: the checkpoint is not a "
                            f"{model.config.model_type} model of this config")
    provided = {expected[n].data_ptr() for n in tensors if n in expected}  # a tied weight comes once
    missing = [n for n in expected if n not in tensors and expected[n].data_ptr() not in provided]
    if missing:
        raise FrontendError(f"{where}: tensor '{missing[0]}' is missing ({len(missing)} missing in all)")
    for name, tensor in tensors.items():
        if name not in expected:
            continue
        want = expected[name]
        if tuple(tensor.shape) != tuple(want.shape):
            raise FrontendError(f"{where}: tensor '{name}' has shape {list(tensor.shape)}, the config needs "
                                f"{list(want.shape)}")
        if want.is_floating_point() and tensor.dtype not in FLOAT_DTYPES:
            raise FrontendError(f"{where}: tensor '{name}' is {str(tensor.dtype).removeprefix('torch.')}, "
                                "not a floating-point type")
    with torch.no_grad():
        model.load_state_dict({n: t for n, t in tensors.items() if n in expected}, strict=False)
