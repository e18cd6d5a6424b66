"""Frontends: Hugging Face models through torch.export (:mod:`.hf`, :mod:`.torch_export`) and ONNX
files (:mod:`.onnx`). This package module imports nothing heavy, so callers can check an
architecture name without importing torch.

Any Hugging Face ``model_type`` with a causal-LM class imports when torch.export traces it and
its ATen ops have converters; :data:`FAMILIES` are the ones the test suite checks against
transformers (docs/models.md).
"""

from __future__ import annotations

import re

FAMILIES = ("llama", "mistral", "qwen2", "qwen3", "gemma2", "gemma3_text", "phi3", "gpt2", "opt", "gpt_neox",
            "olmo2", "granite", "mixtral", "qwen3_moe", "olmoe")
_NAME = re.compile(r"[a-z][a-z0-9_]*")


def causal_lm_types() -> dict[str, str]:
    """``model_type`` -> causal-LM class name, for every architecture transformers has (imports it)."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    return dict(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES)


def is_architecture(name: str) -> bool:
    """Whether ``name`` is a transformers ``model_type`` with a causal-LM class; a name that
    cannot be one is answered without importing transformers."""
    return name in FAMILIES or (_NAME.fullmatch(name) is not None and name in causal_lm_types())
