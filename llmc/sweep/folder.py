"""A sweep's output folder: ``sweep.json`` (the spec it belongs to), ``cache/KEY.json`` (one file per
finished point, written as it finishes) and the outputs, listed in ``llmc-manifest.json``.

A folder holding a sweep of the same spec is resumed: cached points are read, not recomputed. Any
other existing folder is refused; ``--force`` replaces it when llmc wrote it (the project's rule),
and also discards the cache of a sweep of the same spec.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from llmc.errors import LlmcError
from llmc.folders import check_output, write_folder
from llmc.io import atomic_write
from llmc.manifest import MANIFEST, manifest_text, read_manifest
from llmc.sweep.outputs import PLOTS

KIND = "sweep"
STATE = "sweep.json"
CACHE = "cache"
OUTPUTS = ("points.json", "points.csv", "pareto.json", "report.md", *(p.file for p in PLOTS))
PRODUCTS = (CACHE, *OUTPUTS)  # what a run adds after the folder is made (a killed run leaves some)
CACHED_STATUSES = ("ok", "failed")  # an internal error is tried again


def state(spec: dict[str, Any], digest: str) -> str:
    return json.dumps({"kind": "llmc-sweep", "spec": spec, "spec_digest": digest}, indent=2, sort_keys=True) + "\n"


def is_resumable(out: Path, digest: str) -> bool:
    """Whether ``out`` is a sweep folder llmc wrote for the spec of ``digest``."""
    if not (out / STATE).is_file() or read_manifest(out) is None:
        return False
    try:
        return json.loads((out / STATE).read_text()).get("spec_digest") == digest
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError):
        return False


def check_folder(out: Path, digest: str, force: bool) -> bool:
    """Raise unless ``out`` may be written; True when it is a sweep of this spec to resume."""
    if not force and is_resumable(out, digest):
        return True
    try:
        check_output(out, force=force, products=PRODUCTS)
    except LlmcError as e:
        if force or not (out / STATE).is_file():
            raise
        raise LlmcError(f"{out}: holds a sweep of another spec (use --force to replace it)") from e
    return False


def start(out: Path, spec: dict[str, Any], digest: str, force: bool) -> None:
    """Make (or, with ``force``, replace) ``out`` as an empty sweep folder of ``spec``."""
    write_folder(out, {STATE: state(spec, digest)}, kind=KIND, force=force, products=PRODUCTS)


def read_cached(out: Path, keys: Iterable[str]) -> dict[str, dict[str, Any]]:
    """The cached records among ``keys``; an unreadable or foreign entry counts as missing."""
    found = {}
    for key in keys:
        try:
            record = json.loads((out / CACHE / f"{key}.json").read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            continue
        if isinstance(record, dict) and record.get("key") == key and record.get("status") in CACHED_STATUSES:
            found[key] = record
    return found


def cache(out: Path, record: dict[str, Any]) -> bool:
    """Keep ``record`` unless it is an internal error; whether it was kept."""
    if record["status"] not in CACHED_STATUSES:
        return False
    atomic_write(out / CACHE / f"{record['key']}.json", json.dumps(record, indent=2, sort_keys=True) + "\n")
    return True


def finish(out: Path, outputs: Mapping[str, str], keys: Iterable[str]) -> None:
    """Write the outputs, drop cache entries of no current point, then the manifest of it all."""
    for name, text in outputs.items():
        atomic_write(out / name, text)
    current = {f"{k}.json" for k in keys}
    for entry in sorted((out / CACHE).glob("*")) if (out / CACHE).is_dir() else []:
        if entry.is_file() and entry.name not in current:
            entry.unlink()
    files: dict[str, bytes] = {name: (out / name).read_bytes() for name in (STATE, *outputs)}
    files.update({f"{CACHE}/{name}": (out / CACHE / name).read_bytes() for name in sorted(current)
                  if (out / CACHE / name).is_file()})
    atomic_write(out / MANIFEST, manifest_text(files, KIND))
