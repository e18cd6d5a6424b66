"""Helpers of the deployment tests: the recipes, a prompt, running a deployed run.py, folder snapshots."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

RECIPES = {"int8": "", "w4g128": "quantize{bits=4,group=128}"}
PROMPT = [1, 72, 271, 400, 291, 261, 300, 90, 77, 500, 33, 18, 260, 261, 262, 263, 264, 265, 266, 267]


def run_py(folder: Path, *args: str, python: str = sys.executable, timeout: float = 120) -> subprocess.CompletedProcess:
    """``python FOLDER/run.py ARGS`` from another working directory."""
    return subprocess.run([python, str(folder / "run.py"), *args], capture_output=True, text=True, timeout=timeout,
                          cwd=folder.parent)


def snapshot(folder: Path) -> dict[str, str]:
    """Every file and folder below ``folder`` with the SHA-256 of its bytes."""
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(folder.rglob("*"))}


def ids_text(ids: list[int]) -> str:
    return ",".join(map(str, ids))
