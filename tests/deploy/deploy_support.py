"""Helpers of the deployment tests: the recipes, running a deployed run.py and checking its refusals,
folder snapshots."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

from zoo import PROMPT  # noqa: F401  (the deployment tests' prompt)

RECIPES = ("int8", "w4g128")  # of zoo.ENGINE_RECIPES


def run_py(folder: Path, *args: str, python: str = sys.executable, timeout: float = 120) -> subprocess.CompletedProcess:
    """``python FOLDER/run.py ARGS`` from another working directory."""
    return subprocess.run([python, str(folder / "run.py"), *args], capture_output=True, text=True, timeout=timeout,
                          cwd=folder.parent)


def one_error_line(result: subprocess.CompletedProcess, match: str) -> None:
    """run.py failed with exit code 2 and one line on stderr that holds ``match``."""
    assert result.returncode == 2, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("run.py: error: ") and match in lines[0], result.stderr


def snapshot(folder: Path) -> dict[str, str]:
    """Every file and folder below ``folder`` with the SHA-256 of its bytes."""
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(folder.rglob("*"))}


def ids_text(ids: list[int]) -> str:
    return ",".join(map(str, ids))
