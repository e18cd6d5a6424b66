"""Frontends: Hugging Face models through torch.export (:mod:`.hf`, :mod:`.torch_export`) and ONNX
files (:mod:`.onnx`). This package module imports nothing heavy, so callers can check an
architecture name without importing torch."""

ARCHITECTURES = ("llama", "qwen2", "mistral", "gpt2", "opt")  # Hugging Face model_type values llmc imports
