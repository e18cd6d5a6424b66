"""Builds of generated sources (C-simulation executables, Verilator and Icarus benches) cached by the
hash of everything that goes into them, so the same sources are compiled once per machine.

An entry is a folder ``<root>/<kind>-<digest>`` holding the build and a ``built`` mark written
last; builders of the same entry in other processes wait on its lock. The root is
``$LLMC_BUILD_CACHE`` or ``llmc-build-<uid>`` in the temporary folder.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path


def cache_root() -> Path:
    configured = os.environ.get("LLMC_BUILD_CACHE")
    return Path(configured) if configured else Path(tempfile.gettempdir()) / f"llmc-build-{os.getuid()}"


def digest_of(key: object) -> str:
    """A short SHA-256 of ``key`` (JSON: strings, numbers, lists and dicts)."""
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]


def cached_build(kind: str, key: object, build: Callable[[Path], None]) -> Path:
    """The entry folder for ``key``; ``build(folder)`` fills it unless an earlier build did. A failed
    build leaves no mark, so the next call builds again."""
    folder = cache_root() / f"{kind}-{digest_of(key)}"
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (folder / "built").exists():
            build(folder)
            (folder / "built").touch()
    return folder
