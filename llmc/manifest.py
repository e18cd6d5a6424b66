"""The manifest of a folder llmc writes (a compiled project, a deployed folder): ``llmc-manifest.json``
lists every file with its SHA-256. It marks the folder as llmc's own (``--force`` replaces nothing
else) and ties its files together: readers check the files they use against it and name the one that
does not match. Needs only the standard library (the deployed runtime reads it)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from pathlib import Path

from llmc.errors import LlmcError

MANIFEST = "llmc-manifest.json"
WRITER = "llmc"


def digest_bytes(data: bytes | str | memoryview) -> str:
    return hashlib.sha256(data.encode() if isinstance(data, str) else data).hexdigest()


def digest_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def manifest_text(files: Mapping[str, bytes | str | memoryview], kind: str) -> str:
    """The manifest of a folder of ``kind`` ("project", "deployment") holding ``files``."""
    listing = {name: digest_bytes(data) for name, data in sorted(files.items())}
    return json.dumps({"written_by": WRITER, "kind": kind, "files": listing}, indent=2, sort_keys=True) + "\n"


def read_manifest(folder: Path) -> dict[str, str] | None:
    """Relative path -> SHA-256 of the files llmc wrote in ``folder``; None if it holds no valid manifest."""
    try:
        data = json.loads((Path(folder) / MANIFEST).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(data, dict) or data.get("written_by") != WRITER or not isinstance(data.get("files"), dict):
        return None
    files = data["files"]
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in files.items()):
        return None
    return files


def check_files(folder: Path, names: Iterable[str]) -> None:
    """Each of ``names`` that exists in ``folder`` must be the file llmc wrote there."""
    folder = Path(folder)
    listing = read_manifest(folder)
    if listing is None:
        raise LlmcError(f"{folder / MANIFEST}: missing or corrupt: this folder was not written whole by this "
                        "llmc (compile or deploy it again)")
    for name in names:
        path = folder / name
        if not path.exists():
            continue
        if name not in listing:
            raise LlmcError(f"{path}: not a file llmc wrote in this folder (not in {MANIFEST})")
        if digest_file(path) != listing[name]:
            raise LlmcError(f"{path}: does not match {MANIFEST} (its SHA-256 differs): the file was changed or "
                            "swapped; compile or deploy again")
