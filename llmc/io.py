"""Files: atomic writes, and ``.llmc`` modules (text IR + safetensors weights beside it)."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

import numpy as np

from llmc.errors import LlmcError
from llmc.ir.graph import Module
from llmc.ir.parser import ParseError, parse_module
from llmc.ir.printer import print_module
from llmc.ir.verify import VerifyError, verify_module


def atomic_write(path: Path, data: bytes | str) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename: never half written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_json_object(path: Path, what: str = "a JSON object") -> dict:
    """A JSON file holding an object; one-line errors name the file."""
    try:
        values = json.loads(Path(path).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise LlmcError(f"{path}: corrupt JSON: {e}") from None
    if not isinstance(values, dict):
        raise LlmcError(f"{path}: expected {what}")
    return values


def weights_path(path: Path) -> Path:
    return Path(path).with_suffix(".safetensors")


def tokenizer_path(path: Path) -> Path:
    return Path(path).with_suffix(".tokenizer.json")


def ir_digest(text: str) -> str:
    """The SHA-256 of a ``.llmc`` file's text, which its ``.safetensors`` records as ``ir_sha256``."""
    return hashlib.sha256(text.encode()).hexdigest()


def weights_bytes(module: Module, text: str) -> bytes:
    """The ``.safetensors`` of ``module``'s parameters, tied to its IR ``text`` by :func:`ir_digest`."""
    from safetensors.numpy import save

    tensors = {name: np.ascontiguousarray(p.data) for name, p in module.params.items()}
    # one metadata key: safetensors writes several in no fixed order, and projects must be byte-identical
    return save(tensors, metadata={"ir_sha256": ir_digest(text)})


def save_module(module: Module, path: Path, tokenizer_json: str | None = None) -> list[Path]:
    """Write ``NAME.llmc`` (text), ``NAME.safetensors`` (weights, if any) and
    ``NAME.tokenizer.json``; returns the paths written. Each file is written atomically; the weights
    record the digest of the text, so a ``.llmc`` never loads with another model's weights."""
    path = Path(path)
    text = print_module(module)
    written = []
    if module.params and module.has_weights:
        atomic_write(weights_path(path), weights_bytes(module, text))
        written.append(weights_path(path))
    if tokenizer_json is not None:
        atomic_write(tokenizer_path(path), tokenizer_json)
        written.append(tokenizer_path(path))
    atomic_write(path, text)  # last: the .llmc file appears only when complete
    return [path, *written]


def load_module(path: Path) -> Module:
    """Read a ``.llmc`` file and its weights (if the ``.safetensors`` beside it exists); verify."""
    path = Path(path)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise LlmcError(f"{path}: cannot read: {e}") from None
    try:
        module = parse_module(text)
    except ParseError as e:
        raise LlmcError(f"{path}: {e}") from None
    weights = weights_path(path)
    if weights.exists():
        _attach_weights(module, weights, ir_digest(text))
    try:
        verify_module(module)
    except VerifyError as e:
        raise LlmcError(f"{path}: {e}") from None
    return module


def _attach_weights(module: Module, path: Path, digest: str) -> None:
    from safetensors import SafetensorError, safe_open
    from safetensors.numpy import load_file

    try:
        with safe_open(str(path), "numpy") as f:
            recorded = (f.metadata() or {}).get("ir_sha256")
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise LlmcError(f"{path}: corrupt weights file: {e}") from None
    if recorded != digest:
        why = "records no IR digest (written by an older llmc)" if recorded is None else "belongs to another .llmc"
        raise LlmcError(f"{path}: {why}: the IR beside it has sha256 {digest[:12]}...; save the model again")
    for name, param in module.params.items():
        if name not in tensors:
            raise LlmcError(f"{path}: no tensor for parameter '{name}'")
        data = tensors[name]
        if data.shape != param.type.static_shape() or data.dtype != param.type.dtype.numpy():
            raise LlmcError(f"{path}: tensor '{name}' is {data.dtype}{list(data.shape)}, the IR says {param.type}")
        param.data = data
