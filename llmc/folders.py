"""Folders llmc writes whole (a compiled project, a deployed folder): all or nothing, with a manifest,
and ``--force`` that replaces only llmc's own output.

The files go to a hidden sibling ``.NAME.<hex>.tmp``, the manifest first (so a leftover of a killed
run is recognisably llmc's), then the folder takes the place of the old one in one atomic exchange
(``renameat2(RENAME_EXCHANGE)`` on Linux; elsewhere two renames, between which a kill leaves the old
folder as ``.NAME.<hex>.old``, restored by the next run). Leftovers are removed, or named when they
hold no manifest.
"""

from __future__ import annotations

import ctypes
import errno
import fnmatch
import os
import re
import secrets
import shutil
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePosixPath

from llmc.errors import LlmcError
from llmc.manifest import MANIFEST, manifest_text, read_manifest

FileData = bytes | str | memoryview


def write_folder(out_dir: Path, files: Mapping[str, FileData], *, kind: str, force: bool = False,
                 products: Sequence[str] = ()) -> None:
    """Write ``files`` (relative path -> content) and their manifest as the folder ``out_dir``.

    With ``force`` an existing ``out_dir`` is replaced, but only when it is a folder llmc wrote: its
    manifest is valid and it holds nothing but the files listed there and ``products`` (glob patterns
    of what building the folder makes, matched against relative paths and their first component)."""
    out_dir = Path(out_dir)
    final = out_dir.absolute()
    final.parent.mkdir(parents=True, exist_ok=True)
    _recover(final)
    check_output(out_dir, force=force, products=products)
    tmp = final.with_name(f".{final.name}.{secrets.token_hex(6)}.tmp")
    tmp.mkdir()
    try:
        (tmp / MANIFEST).write_text(manifest_text(files, kind))
        for name in sorted(files):
            relative = PurePosixPath(name)
            if relative.is_absolute() or ".." in relative.parts or not relative.parts or name == MANIFEST:
                raise ValueError(f"folder file {name!r} is not a relative path inside the folder")
            data = files[name]
            path = tmp / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data.encode() if isinstance(data, str) else data)
        if final.exists():
            _replace(tmp, final)
        else:
            os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def check_output(out_dir: Path, *, force: bool, products: Sequence[str] = ()) -> None:
    """Raise if ``out_dir`` exists, unless ``force`` and it is a folder llmc wrote (callers check this
    before any work too, so that a refusal comes first)."""
    if out_dir.exists() or out_dir.is_symlink():
        if not force:
            raise LlmcError(f"{out_dir}: output folder exists (use --force to replace it)")
        check_replaceable(out_dir, products)


def check_replaceable(out_dir: Path, products: Sequence[str] = ()) -> None:
    """Raise unless ``out_dir`` is a folder llmc wrote that ``--force`` may replace."""
    if out_dir.is_symlink():
        raise LlmcError(f"{out_dir}: is a symbolic link; --force replaces only a folder llmc wrote")
    if not out_dir.is_dir():
        raise LlmcError(f"{out_dir}: exists and is not a folder")
    resolved, cwd = out_dir.resolve(), Path.cwd().resolve()
    if resolved == cwd or resolved in cwd.parents:
        raise LlmcError(f"{out_dir}: is the current folder or one above it; --force replaces only a folder llmc wrote")
    if resolved == Path.home().resolve():
        raise LlmcError(f"{out_dir}: is the home folder; --force replaces only a folder llmc wrote")
    listing = read_manifest(out_dir)
    if listing is None:
        raise LlmcError(f"{out_dir}: not written by llmc (no valid {MANIFEST}); --force replaces only llmc's own "
                        "output: remove it yourself or choose another folder")
    for path in sorted(out_dir.rglob("*")):
        relative = path.relative_to(out_dir).as_posix()
        if (path.is_dir() and not path.is_symlink()) or relative == MANIFEST or relative in listing:
            continue
        if not any(fnmatch.fnmatch(relative, p) or fnmatch.fnmatch(relative.split("/")[0], p) for p in products):
            raise LlmcError(f"{out_dir}: holds {relative}, which llmc did not write; move it away first "
                            "(--force replaces only llmc's own output)")


def _leftovers(final: Path) -> list[Path]:
    pattern = re.compile(rf"\.{re.escape(final.name)}\.[0-9a-f]{{12}}\.(tmp|old)")
    return sorted(p for p in final.parent.iterdir()
                  if pattern.fullmatch(p.name) and p.is_dir() and not p.is_symlink())


def _recover(final: Path) -> None:
    """Put back an old folder a killed replacement left aside; remove llmc's other leftovers."""
    for leftover in _leftovers(final):
        if read_manifest(leftover) is None and not (leftover / MANIFEST).exists():
            warnings.warn(f"{leftover}: left by an interrupted run? not removed (it holds no {MANIFEST})",
                          stacklevel=3)
        elif leftover.name.endswith(".old") and not final.exists():
            os.rename(leftover, final)
        else:
            shutil.rmtree(leftover)


def _replace(tmp: Path, final: Path) -> None:
    """``final`` becomes ``tmp``'s content; the old folder is removed after it."""
    if _exchange(tmp, final):
        shutil.rmtree(tmp)  # now the old folder
        return
    old = final.with_name(f".{final.name}.{secrets.token_hex(6)}.old")
    os.replace(final, old)
    try:
        os.replace(tmp, final)
    except BaseException:
        os.replace(old, final)
        raise
    shutil.rmtree(old)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux ``renameat2`` with ``RENAME_EXCHANGE``); False where unsupported."""
    renameat2 = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if renameat2 is None:
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), str(b))
