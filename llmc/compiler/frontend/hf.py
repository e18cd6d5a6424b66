"""Hugging Face causal LMs: load, wrap as one explicit-state step, export, import into the IR.

A model is exported once through ``torch.export`` as a *step*: ``L`` new tokens after a KV cache
of length ``P``, with the additive attention mask [1, 1, L, P+L] and the position ids as graph
inputs and the caches as explicit inputs and outputs. Specialising ``P=0`` gives the prefill
program and ``L=1`` the decode program.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from llmc.compiler.frontend import FAMILIES, causal_lm_types, checkpoint
from llmc.compiler.frontend.replicate import TEMPLATE, NotReplicable, replicate
from llmc.compiler.frontend.torch_export import convert_graph
from llmc.compiler.passes.cleanup import dce, prune_params
from llmc.compiler.passes.fuse import fuse_function
from llmc.compiler.passes.specialize import specialize
from llmc.errors import FrontendError
from llmc.generate.interpreter import causal_mask
from llmc.io import read_json_object
from llmc.ir.graph import Function, Module

SEQ, PAST = "L", "P"


@dataclass(frozen=True)
class CacheShape:
    """Per-layer KV cache geometry: ``layers`` x (k, v) of [1, kv_heads, length, head_dim]."""

    layers: int
    kv_heads: int
    head_dim: int


def cache_shape(config: Any) -> CacheShape:
    """The KV cache a model of ``config`` keeps, read from a forward pass of it on the meta device
    (no memory, no arithmetic), so that no family's names for its head counts need knowing (Falcon
    has ``num_kv_heads`` and ``multi_query``)."""
    return _meta_cache_shape(build_model(copy.deepcopy(config), meta=True))


def _meta_cache_shape(model: torch.nn.Module) -> CacheShape:
    """The KV cache of a model on the meta device, from a two-token forward pass of it."""
    config = model.config
    try:
        with torch.no_grad():
            out = model(input_ids=torch.zeros(1, 2, dtype=torch.long, device="meta"), use_cache=True)
        shapes = {tuple(layer.keys.shape) for layer in out.past_key_values.layers}
        layers = len(out.past_key_values.layers)
    except Exception as e:  # a model that cannot run on the meta device says why in its own words
        raise FrontendError(f"{config.model_type}: cannot read the KV cache shape: {str(e).splitlines()[0]}") from None
    if len(shapes) != 1:
        raise FrontendError(f"{config.model_type}: layers keep KV caches of different shapes ({sorted(shapes)})")
    (_, kv_heads, _, head_dim), = shapes
    return CacheShape(layers, kv_heads, head_dim)


def config_from_dict(values: dict[str, Any], where: str) -> Any:
    """A transformers config from a config.json dict; its ``model_type`` must have a causal-LM
    class in transformers."""
    from transformers import AutoConfig

    arch = values.get("model_type")
    if not isinstance(arch, str) or arch not in causal_lm_types():
        raise FrontendError(f"{where}: '{arch}' is not a causal language model architecture of transformers "
                            f"(tested: {', '.join(FAMILIES)})")
    checkpoint.check_config(values, where)
    rest = {k: v for k, v in values.items() if k != "model_type"}
    try:
        return AutoConfig.for_model(arch, **rest)
    except Exception as e:  # transformers validates with TypeError, ValueError and huggingface_hub's own errors
        raise FrontendError(f"{where}: invalid config: {' '.join(str(e).split())[:300]}") from None


def read_config(model_dir: Path) -> dict[str, Any]:
    path = model_dir / "config.json"
    if not path.is_file():
        raise FrontendError(f"{model_dir}: not a model directory (no config.json)")
    return read_json_object(path)


def build_model(config: Any, *, seed: int = 0, meta: bool = False) -> torch.nn.Module:
    """A randomly initialised model (seeded), or one on the meta device (no memory).

    Attention is PyTorch's SDPA where the model supports it, else the model's eager attention
    (Gemma-2's soft-capping); mixture-of-experts layers run their batched form (the selected
    experts' weights gathered per token), which torch.export traces without data-dependent
    control flow."""
    from transformers import AutoModelForCausalLM

    model_class = _causal_lm_class(config)
    config._attn_implementation = "sdpa" if getattr(model_class, "_supports_sdpa", False) else "eager"
    config._experts_implementation = "batched_mm"
    torch.manual_seed(seed)
    try:
        with torch.device("meta" if meta else "cpu"):
            model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    except Exception as e:  # a config that passed its own validation but describes no buildable model
        raise FrontendError(f"{config.model_type} config: cannot build the model: "
                            f"{' '.join(str(e).split())[:300]}") from None
    return model.eval()


def _causal_lm_class(config: Any) -> type | None:
    from transformers import AutoModelForCausalLM

    try:
        return AutoModelForCausalLM._model_mapping[type(config)]
    except (KeyError, ValueError):
        return None


def load_pretrained(model_dir: Path) -> torch.nn.Module:
    """Load a local model directory (config.json + safetensors) in float32, offline, strictly
    (:mod:`.checkpoint`): no pickles, every tensor present with its shape, none unexpected."""
    config = config_from_dict(read_config(model_dir), str(model_dir / "config.json"))
    files = checkpoint.weight_files(model_dir)
    checkpoint.check_memory(config, str(model_dir))
    tensors = checkpoint.read_tensors(files)
    model = build_model(config)
    checkpoint.load_state(model, tensors, str(model_dir))
    return model.eval()


class StepModule(torch.nn.Module):
    """``(input_ids, mask, position_ids, *past) -> (logits, *present)`` around a HF causal LM.

    ``past`` and ``present`` are flat (k_0, v_0, k_1, v_1, ...) of [1, kv_heads, length, head_dim].
    """

    def __init__(self, model: torch.nn.Module, layers: int) -> None:
        super().__init__()
        self.model = model
        self.layers = layers

    def forward(self, input_ids: torch.Tensor, mask: torch.Tensor, position_ids: torch.Tensor, *past: torch.Tensor) -> tuple[torch.Tensor, ...]:
        from transformers import DynamicCache

        cache = DynamicCache()
        for i in range(self.layers):
            cache.update(past[2 * i], past[2 * i + 1], i)
        out = self.model(input_ids=input_ids, attention_mask=self.layer_masks(mask, position_ids),
                         position_ids=position_ids, past_key_values=cache, use_cache=True)
        present = [t for layer in out.past_key_values.layers for t in (layer.keys, layer.values)]
        return (out.logits, *present)

    def layer_masks(self, mask: torch.Tensor, position_ids: torch.Tensor) -> torch.Tensor | dict[str, torch.Tensor]:
        """The additive mask each attention layer sees: ``mask`` for full attention, and ``mask``
        with the keys at or beyond ``sliding_window`` positions back masked out for sliding-window
        layers (as transformers' own masks: key ``j`` is seen from position ``i`` when ``i - j < window``).
        Models with ``layer_types`` take a dict by layer type; others (Mistral) one mask."""
        config = self.model.config
        window = getattr(config, "sliding_window", None)
        types = getattr(config, "layer_types", None)
        if not window or (types is not None and "sliding_attention" not in types):
            return mask
        keys = torch.arange(mask.shape[-1], device=mask.device)
        outside = (position_ids[:, None, :, None] - keys) >= window
        windowed = mask.masked_fill(outside, torch.finfo(mask.dtype).min)
        return windowed if types is None else {"full_attention": mask, "sliding_attention": windowed}


def step_inputs(model: torch.nn.Module, shape: CacheShape, new: int, past: int, device: str = "cpu") -> tuple:
    vocab = model.config.vocab_size
    ids = (torch.arange(new, device=device) * 7 % vocab)[None]
    positions = torch.arange(past, past + new, device=device)[None]
    kv = [torch.zeros(1, shape.kv_heads, past, shape.head_dim, device=device) for _ in range(2 * shape.layers)]
    return (ids, torch.from_numpy(causal_mask(new, past)).to(device), positions, *kv)


def export_step(model: torch.nn.Module, max_length: int, shape: CacheShape | None = None) -> torch.export.ExportedProgram:
    """``torch.export`` the step with symbolic ``L`` (new tokens) and ``P`` (cache length)."""
    shape = shape or cache_shape(model.config)
    device = "meta" if next(model.parameters()).is_meta else "cpu"
    step = StepModule(model, shape.layers)
    new = torch.export.Dim(SEQ, min=2, max=max_length)
    past = torch.export.Dim(PAST, min=2, max=max_length)
    total = torch.export.Dim("S", min=4, max=2 * max_length)  # torch.export finds S = L + P
    dynamic = {
        "input_ids": {1: new},
        "mask": {2: new, 3: total},
        "position_ids": {1: new},
        "past": tuple({2: past} for _ in range(2 * shape.layers)),
    }
    try:
        with torch.no_grad():
            exported = torch.export.export(step, step_inputs(model, shape, 3, 4, device), dynamic_shapes=dynamic)
            return exported.run_decompositions({})
    except Exception as e:  # torch raises many error types; report the first line with the model
        raise FrontendError(f"torch.export failed for {type(model).__name__}: {str(e).splitlines()[0]}") from None


def import_step(exported: torch.export.ExportedProgram, module: Module, layers: int) -> tuple[Function, list[str]]:
    """The exported step as an IR function ``step`` in ``module`` (params added to it), and the
    ``torch.nn`` module path that traced each of its nodes."""
    user = [s.arg.name for s in exported.graph_signature.input_specs if s.kind.name == "USER_INPUT"]
    names = ["input_ids", "mask", "position_ids"] + [f"past_{kv}_{i}" for i in range(layers) for kv in "kv"]
    symbols = {}
    nodes = {n.name: n for n in exported.graph.nodes}
    for placeholder, axis, symbol in ((user[0], 1, SEQ), (user[3], 2, PAST)):
        size = nodes[placeholder].meta["val"].shape[axis]
        symbols[str(size.node.expr)] = symbol
    func = Function("step")
    outputs = ["logits"] + [f"{kv}_{i}" for i in range(layers) for kv in "kv"]
    origins = convert_graph(exported, module, func, dict(zip(user, names)), symbols, outputs, param_prefix="model.")
    return func, origins


def import_model(model: torch.nn.Module, name: str, max_length: int = 4096) -> Module:
    """Import a HF causal LM (real or meta weights) as a module with ``prefill`` and ``decode``.

    A model on the meta device whose blocks are all alike is traced with two blocks and grown to
    its depth (:mod:`.replicate`): the same IR up to the names of intermediate values, in a
    fraction of the time a deep model takes to trace.
    """
    config = model.config
    shape = _meta_cache_shape(model) if next(model.parameters()).is_meta else cache_shape(config)
    module = Module(name, model_attrs(config, shape))
    step = _two_block_step(config, module, shape.layers, max_length) if _replicable(model, shape) else None
    if step is None:
        step, _ = import_step(export_step(model, max_length, shape), module, shape.layers)
    fuse_function(module, step)
    module.functions["prefill"] = dce(specialize(step, {PAST: 0}, "prefill"))
    module.functions["decode"] = dce(specialize(step, {SEQ: 1}, "decode"))
    return prune_params(module)


def _replicable(model: torch.nn.Module, shape: CacheShape) -> bool:
    """A shapes-only model deeper than two blocks, all of one kind."""
    kinds = set(getattr(model.config, "layer_types", None) or ())
    return shape.layers > TEMPLATE + 1 and next(model.parameters()).is_meta and len(kinds) <= 1


def _two_block_step(config: Any, module: Module, layers: int, max_length: int) -> Function | None:
    """The step of ``config`` traced with two blocks and grown to ``layers`` (parameters into
    ``module``); None when the traced blocks cannot be replicated."""
    two = copy.deepcopy(config)
    two.num_hidden_layers = TEMPLATE + 1
    if getattr(two, "layer_types", None):
        two.layer_types = two.layer_types[:TEMPLATE + 1]
    scratch = Module(module.name)
    traced = build_model(two, meta=True)
    shape = _meta_cache_shape(traced)
    func, origins = import_step(export_step(traced, max_length, shape), scratch, shape.layers)
    try:
        step = replicate(scratch, func, origins, layers)
    except NotReplicable:
        return None
    module.params = scratch.params
    return step


def model_attrs(config: Any, shape: CacheShape) -> dict[str, Any]:
    def token(name: str) -> int:
        value = getattr(config, name, None)
        if isinstance(value, list):
            value = value[0] if value else None
        return -1 if value is None else int(value)

    return {
        "arch": config.model_type,
        "vocab_size": config.vocab_size,
        "layers": shape.layers,
        "kv_heads": shape.kv_heads,
        "head_dim": shape.head_dim,
        "max_position": int(getattr(config, "max_position_embeddings", 0) or 0),
        "bos_token_id": token("bos_token_id"),
        "eos_token_id": token("eos_token_id"),
        "config": json.dumps(config.to_diff_dict(), sort_keys=True, default=str),
    }


def export_onnx(model: torch.nn.Module, path: str | Path, max_length: int = 4096, *, optimize: bool = False) -> Path:
    """Export the step (the same contract as :func:`export_step`) to an ONNX file at ``path``.

    Inputs are named ``input_ids, mask, position_ids, past_k_0, past_v_0, ...`` and outputs
    ``logits, k_0, v_0, ...``; the module attributes of :func:`model_attrs` are stored as JSON
    in the metadata property ``llmc.attrs``. Weights are embedded (external data only past 2 GB).
    ``optimize`` runs the exporter's graph optimiser (it folds weight transposes into new,
    unnamed initializers, so it is off by default to keep parameter names).
    """
    import warnings

    from llmc.compiler.frontend.onnx import ATTRS_KEY

    if next(model.parameters()).is_meta:
        raise FrontendError(f"cannot export {type(model).__name__} to ONNX: it has no weights (shapes-only)")
    shape = cache_shape(model.config)
    step = StepModule(model, shape.layers).eval()
    new = torch.export.Dim(SEQ, min=2, max=max_length)
    past = torch.export.Dim(PAST, min=2, max=max_length)
    total = torch.export.Dim("S", min=4, max=2 * max_length)
    dynamic = {
        "input_ids": {1: new},
        "mask": {2: new, 3: total},
        "position_ids": {1: new},
        "past": tuple({2: past} for _ in range(2 * shape.layers)),
    }
    caches = [f"{t}_{i}" for i in range(shape.layers) for t in "kv"]
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="# The axis name: .* will not be used")  # L names 3 axes
            program = torch.onnx.export(
                step, step_inputs(model, shape, 3, 4), dynamo=True, dynamic_shapes=dynamic,
                input_names=["input_ids", "mask", "position_ids", *(f"past_{c}" for c in caches)],
                output_names=["logits", *caches], opset_version=18, optimize=optimize, verbose=False,
            )
    except Exception as e:  # the exporter raises many error types; report the first line
        raise FrontendError(f"ONNX export failed for {type(model).__name__}: {str(e).splitlines()[0]}") from None
    program.model.metadata_props[ATTRS_KEY] = json.dumps(model_attrs(model.config, shape), sort_keys=True)
    path = Path(path)
    program.save(path)
    return path
