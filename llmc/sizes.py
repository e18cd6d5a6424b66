"""Byte counts as people read them, in messages and reports of every layer."""

from __future__ import annotations


def human_bytes(n: float) -> str:
    """``512 B``, ``1.5 KiB``, ... up to GiB."""
    size, unit = float(n), "B"
    for bigger in ("KiB", "MiB", "GiB"):
        if size < 1024:
            break
        size, unit = size / 1024, bigger
    return f"{int(n)} B" if unit == "B" else f"{size:.1f} {unit}"
