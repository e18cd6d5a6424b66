"""Which model a spec names, and the content hash that keys each point's cache entry.

A point's key is the SHA-256 of the model's identity (the digest of the files it is read from; for
an architecture name its config and seed), the recipe in its canonical form, the board's
description, the cards, the context, the engine options, the evaluation windows, the modelled run's
lengths and llmc's version: the same key means the same result.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmc.model import BUNDLED, Model
from llmc.sweep.spec import Point, SpecError, SweepSpec
from llmc.version import __version__


@dataclass(frozen=True)
class ModelSource:
    kind: str  # "bundled", "path" or "architecture"
    name: str  # the bundled name, the path as read, or the architecture name


def resolve_model(spec: SweepSpec, spec_path: Path) -> ModelSource:
    """The model ``spec`` names: a bundled name, then a path (relative to the spec's folder), then an
    architecture name; :class:`SpecError` names ``model`` or ``config`` when it cannot be loaded."""
    from llmc.compiler.frontend import is_architecture

    name = spec.model
    path = Path(name).expanduser()
    path = path if path.is_absolute() else spec.folder / path
    if name in BUNDLED:
        source = ModelSource("bundled", name)
    elif path.exists():
        source = ModelSource("path", str(path))
    elif is_architecture(name):
        if spec.config is None and not spec.shapes_only:
            raise SpecError(f"{spec_path}: config: the architecture name {name!r} needs config values for random "
                            "weights (or shapes_only: true for its default sizes)")
        return ModelSource("architecture", name)
    else:
        raise SpecError(f"{spec_path}: model: {name!r} is no file or folder (from {spec.folder}), no bundled model "
                        f"({', '.join(BUNDLED)}) and no transformers causal-LM architecture")
    if spec.config is not None:
        raise SpecError(f"{spec_path}: config: config values apply to an architecture name, not {name!r}")
    return source


def model_identity(spec: SweepSpec, source: ModelSource) -> dict[str, Any]:
    """What decides the imported model: its files' digest, or its architecture, config and seed."""
    if source.kind == "architecture":
        return {"architecture": source.name, "config": spec.config, "seed": spec.seed,
                "shapes_only": spec.shapes_only}
    path = BUNDLED[source.name] if source.kind == "bundled" else Path(source.name)
    return {"files": files_digest(model_files(path, spec.shapes_only)), "shapes_only": spec.shapes_only}


def model_files(path: Path, shapes_only: bool) -> list[tuple[str, Path]]:
    """``(name, file)`` for every file the import reads: a folder's files (only config.json for a
    shapes-only import), or a file with its siblings of the same stem (weights, tokenizer)."""
    if path.is_dir():
        if shapes_only and (path / "config.json").is_file():
            return [("config.json", path / "config.json")]
        return [(p.relative_to(path).as_posix(), p) for p in sorted(path.rglob("*"))
                if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts)]
    siblings = sorted(p for p in path.parent.glob(f"{path.stem}.*") if p.is_file() and p != path)
    tokenizer = path.parent / "tokenizer.json"
    extra = [tokenizer] if tokenizer.is_file() and tokenizer not in siblings else []
    return [(p.name, p) for p in [path, *siblings, *extra]]


def files_digest(files: list[tuple[str, Path]]) -> str:
    h = hashlib.sha256()
    for name, path in files:
        h.update(name.encode() + b"\0")
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        h.update(b"\0")
    return h.hexdigest()


def point_key(identity: dict[str, Any], spec: SweepSpec, point: Point) -> str:
    from llmc.backends.fpga.target import load_target
    from llmc.compiler.pipeline import parse_pipeline

    values = {"model": identity, "recipe": ",".join(str(c) for c in parse_pipeline(point.recipe)),
              "board": load_target(point.board).to_json(), "cards": point.cards, "context": point.context,
              "engine": dict(point.engine), "eval_windows": spec.eval_windows, "prefill": spec.prefill,
              "decode": spec.decode, "llmc": __version__}
    if point.cards > 1:
        values["parallel"] = point.parallel
    return hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()


def load_model(spec: SweepSpec, source: ModelSource) -> Model:
    from llmc.model import load

    return load(source.name, config=spec.config, seed=spec.seed, shapes_only=spec.shapes_only)
