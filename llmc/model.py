"""The user-facing model: an IR module plus its tokenizer, loaded from any supported source.

``llmc.load(source)`` accepts a Hugging Face model directory, an ``.onnx`` file, a llama.cpp
``.gguf`` file, an ``.llmc`` file, the bundled model's name ``llmc-tiny``, an architecture name with a config (random,
seeded weights), or a ``torch.nn.Module``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmc.errors import FrontendError, LlmcError
from llmc.generate.interpreter import InterpreterDevice
from llmc.generate.loop import Device, Generation, SamplingOptions, generate_stream
from llmc.generate.step import StepDevice
from llmc.ir.graph import Module
from llmc.ir.interpreter import Kernel
from llmc.ir.verify import VerifyError, verify_module

BUNDLED = {"llmc-tiny": Path(__file__).parent / "assets" / "llmc-tiny"}


@dataclass
class Model:
    """An imported model: ``module`` holds the ``prefill`` and ``decode`` programs."""

    module: Module
    tokenizer_json: str | None = None
    source: str = ""

    @property
    def name(self) -> str:
        return self.module.name

    @property
    def is_language_model(self) -> bool:
        """Whether the module holds a causal LM's programs (``prefill`` and ``decode``, or ``step``);
        else its functions are plain ones (an ONNX graph's ``main``), run with :meth:`call`."""
        return bool({"prefill", "decode", "step"} & set(self.module.functions))

    def call(self, inputs: Mapping[str, Any], function: str | None = None) -> dict[str, Any]:
        """Run a plain function (``function``, or the module's only one) through the interpreter on
        NumPy ``inputs`` by name (an ONNX name or the IR name it became); the outputs by IR name.
        Data of another dtype of the same kind is converted (float64 to f32, ...)."""
        import numpy as np

        from llmc.ir.builder import value_name
        from llmc.ir.interpreter import run_function

        if self.is_language_model:
            raise LlmcError(f"model '{self.name}' is a language model: generate with a prompt, not inputs by name")
        names = list(self.module.functions)
        if function is None and len(names) != 1:
            raise LlmcError(f"model '{self.name}' has functions {', '.join('@' + n for n in names)}: name one")
        name = function or names[0]
        if name not in self.module.functions:
            raise LlmcError(f"model '{self.name}' has no function @{name}")
        func = self.module.functions[name]
        expected = {v.name: v for v in func.inputs}
        given = {value_name(k): np.asarray(v) for k, v in inputs.items()}
        unknown = sorted(set(given) - set(expected))
        missing = [n for n in expected if n not in given]
        if unknown or missing:
            parts = ([f"missing {', '.join(missing)}"] if missing else []) + \
                ([f"unknown {', '.join(unknown)}"] if unknown else [])
            raise LlmcError(f"@{name} takes inputs {', '.join(expected) or '(none)'}: {'; '.join(parts)}")
        for key, array in given.items():
            want = expected[key].type.dtype
            kind = "b" if want.kind == "bool" else "f" if want.is_float else "iu"
            if array.dtype.kind not in kind:
                raise LlmcError(f"input {key} of @{name} is {expected[key].type}, got {array.dtype} data")
        return run_function(self.module, name, given)

    def encode(self, text: str) -> list[int]:
        ids = self._tokenizer().encode(text).ids
        bos = int(self.module.attrs.get("bos_token_id", -1))
        return ids if bos < 0 or (ids and ids[0] == bos) else [bos, *ids]

    def decode_text(self, ids: Sequence[int]) -> str:
        return self._tokenizer().decode(list(ids), skip_special_tokens=True)

    def _tokenizer(self) -> Any:
        if self.tokenizer_json is None:
            raise LlmcError(f"model '{self.name}' has no tokenizer: pass token ids (--prompt-ids)")
        from tokenizers import Tokenizer

        return Tokenizer.from_str(self.tokenizer_json)

    def stream(
        self,
        prompt: str | None = None,
        prompt_ids: Sequence[int] | None = None,
        max_new_tokens: int = 32,
        sampling: SamplingOptions | None = None,
        stop: bool = True,
        kernels: Mapping[str, Kernel] | None = None,
        device: Device | None = None,
    ) -> Iterator[tuple[int, float]]:
        """Generate through the reference interpreter, yielding ``(token, seconds)`` as each
        token is sampled; stops after the end-of-sequence token when ``stop``. ``kernels`` run
        chosen ops on compiled kernels (e.g. :func:`llmc.backends.tvm.lut_runtime.lut_kernels`)."""
        if not self.is_language_model:
            raise LlmcError(f"model '{self.name}' is a plain function, not a language model: run it with call()")
        if (prompt is None) == (prompt_ids is None):
            raise LlmcError("give exactly one of a prompt text or prompt ids")
        ids = list(prompt_ids) if prompt_ids is not None else self.encode(prompt or "")
        if not ids:
            raise LlmcError("the prompt is empty")
        vocab = int(self.module.attrs["vocab_size"])
        bad = [i for i in ids if not 0 <= i < vocab]
        if bad:
            raise LlmcError(f"prompt token id {bad[0]} is outside the vocabulary [0, {vocab})")
        eos = int(self.module.attrs.get("eos_token_id", -1))
        stops = [eos] if stop and eos >= 0 else []
        if device is None:
            device = StepDevice(self.module) if "step" in self.module.functions else \
                InterpreterDevice(self.module, kernels)
        return generate_stream(device, ids, max_new_tokens, sampling or SamplingOptions(), stops)

    def run(
        self,
        prompt: str | None = None,
        prompt_ids: Sequence[int] | None = None,
        max_new_tokens: int = 32,
        sampling: SamplingOptions | None = None,
        stop: bool = True,
    ) -> Generation:
        """Generate through the reference interpreter; all tokens at once."""
        return Generation.collect(self.stream(prompt, prompt_ids, max_new_tokens, sampling, stop))

    def save(self, path: str | Path) -> list[Path]:
        from llmc.io import save_module

        return save_module(self.module, Path(path), self.tokenizer_json)


def load(
    source: Any,
    *,
    config: dict[str, Any] | None = None,
    seed: int = 0,
    shapes_only: bool = False,
    max_length: int = 4096,
    name: str | None = None,
) -> Model:
    """Import a model from any supported source; the result is verified."""
    model = _load(source, config, seed, shapes_only, max_length, name)
    try:
        verify_module(model.module)
    except VerifyError as e:
        raise LlmcError(f"imported IR is invalid: {e}") from None
    return model


def _load(source: Any, config: dict[str, Any] | None, seed: int, shapes_only: bool, max_length: int, name: str | None) -> Model:
    text = str(source)
    if isinstance(source, (str, Path)) and (Path(text) / "design.json").is_file():  # a compiled FPGA project
        from llmc.manifest import check_files

        check_files(Path(text), ["model.llmc", "model.safetensors", "model.tokenizer.json"])
        text = str(Path(text) / "model.llmc")
    if isinstance(source, (str, Path)) and text.endswith(".llmc") and text not in BUNDLED:
        from llmc.io import load_module, tokenizer_path

        path = Path(text)
        if not path.exists():
            raise LlmcError(f"{path}: no such file or directory")
        tok = tokenizer_path(path)
        return Model(load_module(path), tok.read_text() if tok.exists() else None, str(path))
    from llmc.compiler.frontend import FAMILIES, is_architecture  # light: no torch import

    if not isinstance(source, (str, Path)):
        import torch

        from llmc.compiler.frontend import hf

        if isinstance(source, torch.nn.Module):
            return Model(hf.import_model(source.eval(), name or type(source).__name__, max_length), None, "nn.Module")
        raise LlmcError(f"cannot import a {type(source).__name__}")
    if not Path(text).exists() and text not in BUNDLED and is_architecture(text):  # an existing path wins
        if config is None and not shapes_only:
            raise LlmcError(f"'{text}' is an architecture name, not a file: random weights need the model's sizes "
                            "(--config FILE), or --shapes-only for the default sizes")
        from llmc.compiler.frontend import hf

        values = {"model_type": text, **(config or {})}
        cfg = hf.config_from_dict(values, f"{text} config")
        if not shapes_only:
            from llmc.compiler.frontend.checkpoint import check_memory

            check_memory(cfg, f"{text} config")
        module = hf.import_model(hf.build_model(cfg, seed=seed, meta=shapes_only), name or text, max_length)
        return Model(module, None, text)
    path = BUNDLED.get(text, Path(text))
    if not path.exists():
        raise LlmcError(f"{text}: no such file or directory, and not a bundled model ({', '.join(BUNDLED)}) or a "
                        f"transformers causal-LM architecture (tested: {', '.join(FAMILIES)})")
    if path.is_dir():
        return _load_hf_dir(path, shapes_only, max_length, name or (text if text in BUNDLED else path.name))
    if path.suffix == ".onnx":
        from llmc.compiler.frontend.onnx import import_onnx

        return Model(import_onnx(path, name or path.stem, max_length), _sibling_tokenizer(path.parent), str(path))
    if path.suffix == ".gguf":
        return _load_gguf(path, shapes_only, max_length, name or path.stem)
    raise LlmcError(f"{path}: unknown model format (expected a model directory, .onnx, .gguf or .llmc)")


def _load_gguf(path: Path, shapes_only: bool, max_length: int, name: str) -> Model:
    """A llama.cpp file; its one note line (types dequantized to float, no tokenizer) goes to stderr."""
    import sys

    from llmc.compiler.frontend.gguf_import import import_gguf

    imported = import_gguf(path, name, max_length, shapes_only)
    if imported.note:
        print(imported.note, file=sys.stderr)
    return Model(imported.module, imported.tokenizer_json, str(path))


def _load_hf_dir(path: Path, shapes_only: bool, max_length: int, name: str) -> Model:
    from llmc.compiler.frontend import hf

    if shapes_only:
        cfg = hf.config_from_dict(hf.read_config(path), str(path / "config.json"))
        module = hf.import_model(hf.build_model(cfg, meta=True), name, max_length)
    else:
        module = hf.import_model(hf.load_pretrained(path), name, max_length)
    return Model(module, _sibling_tokenizer(path), str(path))


def _sibling_tokenizer(folder: Path) -> str | None:
    tok = folder / "tokenizer.json"
    if not tok.exists():
        return None
    text = tok.read_text()
    try:
        json.loads(text)
    except json.JSONDecodeError as e:
        raise FrontendError(f"{tok}: corrupt JSON: {e}") from None
    from tokenizers import Tokenizer

    try:
        Tokenizer.from_str(text)
    except Exception as e:  # tokenizers raises its own exception types for a malformed tokenizer
        raise FrontendError(f"{tok}: not a tokenizer: {' '.join(str(e).split())[:200]}") from None
    return text
