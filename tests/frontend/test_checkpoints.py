"""Model folders are read strictly: safetensors only (a pickle is never loaded), every tensor the config
needs with its shape and a floating-point dtype, nothing unexpected; configs are checked, and a model
too large for the memory is refused before its weights are allocated."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from zoo import FAMILIES, LLAMA

import llmc
from llmc.compiler.frontend import hf
from llmc.errors import FrontendError


def save_model(folder: Path, arch: str = "llama", **config: object) -> Path:
    values = {"model_type": arch, **(LLAMA if arch == "llama" else FAMILIES[arch]), **config}
    model = hf.build_model(hf.config_from_dict(values, "test"), seed=1)
    model.save_pretrained(folder, safe_serialization=True)
    return folder


def edit_tensors(folder: Path, change) -> None:
    tensors = load_file(str(folder / "model.safetensors"))
    change(tensors)
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})


def test_a_saved_model_loads_with_its_weights(tmp_path: Path) -> None:
    folder = save_model(tmp_path / "m")
    module = llmc.load(folder).module
    saved = load_file(str(folder / "model.safetensors"))
    norm = "model.layers.0.input_layernorm.weight"
    assert np.array_equal(module.params[next(n for n in module.params if "layers.0" in n and "layernorm" in n)].data,
                          saved[norm].numpy())


def test_tied_embeddings_come_once(tmp_path: Path) -> None:
    folder = save_model(tmp_path / "m", "qwen2", tie_word_embeddings=True)
    assert "lm_head.weight" not in load_file(str(folder / "model.safetensors"))
    llmc.load(folder)


@pytest.mark.parametrize(("change", "message"), [
    (lambda t: t.pop("model.layers.1.mlp.up_proj.weight"), "tensor 'model.layers.1.mlp.up_proj.weight' is missing"),
    (lambda t: t.update({"model.layers.0.mlp.down_proj.weight": t["model.layers.0.mlp.down_proj.weight"].to(torch.int32)}),
     "tensor 'model.layers.0.mlp.down_proj.weight' is int32, not a floating-point type"),
    (lambda t: t.update({"model.extra.weight": torch.zeros(2)}), "unexpected tensor 'model.extra.weight'"),
    (lambda t: t.update({"model.norm.weight": torch.zeros(65)}), "tensor 'model.norm.weight' has shape [65]"),
])
def test_a_checkpoint_that_does_not_fit_the_config_is_named(tmp_path: Path, change, message: str) -> None:
    folder = save_model(tmp_path / "m")
    edit_tensors(folder, change)
    with pytest.raises(FrontendError, match=message.replace("[", r"\[").replace("]", r"\]")):
        llmc.load(folder)


def test_a_relabelled_checkpoint_is_refused(tmp_path: Path) -> None:
    folder = save_model(tmp_path / "m")
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "model_type": "qwen2"}))  # qwen2 has q/k/v biases
    with pytest.raises(FrontendError, match=r"tensor 'model\.layers\.0\.self_attn\.q_proj\.bias' is missing"):
        llmc.load(folder)


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # what a malicious pickle does when it is loaded
        return (Path.touch, (self.marker,))


def test_pickled_weights_are_never_loaded(tmp_path: Path) -> None:
    folder = save_model(tmp_path / "m")
    (folder / "model.safetensors").rename(folder / "decoy.safetensors")
    marker = tmp_path / "unpickled"
    (folder / "pytorch_model.bin").write_bytes(pickle.dumps(_Payload(marker)))
    with pytest.raises(FrontendError, match="holds pytorch_model.bin, pickled weights llmc never loads"):
        llmc.load(folder)
    assert not marker.exists()


def test_a_sharded_checkpoint_loads_through_its_index(tmp_path: Path) -> None:
    folder = save_model(tmp_path / "m")
    tensors = load_file(str(folder / "model.safetensors"))
    names = sorted(tensors)
    halves = {"model-00001-of-00002.safetensors": names[::2], "model-00002-of-00002.safetensors": names[1::2]}
    for file, part in halves.items():
        save_file({n: tensors[n] for n in part}, str(folder / file), metadata={"format": "pt"})
    (folder / "model.safetensors").unlink()
    index = {"weight_map": {n: f for f, part in halves.items() for n in part}}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    llmc.load(folder)
    (folder / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(FrontendError, match="model-00002-of-00002.safetensors: listed in model.safetensors.index.json"):
        llmc.load(folder)


@pytest.mark.parametrize(("config", "message"), [
    ({"hidden_size": "64"}, "hidden_size must be a positive integer, got '64'"),
    ({"num_hidden_layers": 1.5}, "num_hidden_layers must be a positive integer"),
    ({"hidden_size": 66}, "hidden size 66 is not divisible by 4 attention heads"),
    ({"num_key_value_heads": 3}, "4 attention heads are not divisible by 3 key-value heads"),
])
def test_bad_config_values_are_named(config: dict, message: str) -> None:
    with pytest.raises(FrontendError, match=message):
        llmc.load("llama", config={**LLAMA, **config})


def test_a_model_too_large_for_the_memory_is_refused_before_allocating() -> None:
    llama_70b = dict(hidden_size=8192, intermediate_size=28672, num_hidden_layers=80, num_attention_heads=64,
                     num_key_value_heads=8, vocab_size=32000)
    with pytest.raises(FrontendError, match=r"68,976,\d+,\d+ parameters need 2\d\d\.\d GiB as float32"):
        llmc.load("llama", config=llama_70b)
    assert llmc.load("llama", config=llama_70b, shapes_only=True).module.attrs["layers"] == 80


def test_a_corrupt_tokenizer_is_named(tmp_path: Path) -> None:
    folder = save_model(tmp_path / "m")
    (folder / "tokenizer.json").write_text(json.dumps({"model": {"type": "nonsense"}}))
    with pytest.raises(FrontendError, match="tokenizer.json: not a tokenizer"):
        llmc.load(folder)
