"""The sweep spec (a YAML mapping), checked whole before anything runs, and the points it spans.

Axes: ``recipes`` (pass pipelines), ``boards`` (bundled targets), ``cards``, ``context``
(token counts; null is the model's maximum) and ``engines`` (overrides of the design's engine
options: ``max_rows``, ``clock_mhz``). The sweep is their product. A problem is one line naming the key.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmc.errors import LlmcError

AXES = ("recipes", "boards", "cards", "parallel", "context", "engines")
PARALLEL = ("pipeline", "tensor")  # how a point of several cards splits the model
KEYS = ("model", "config", "shapes_only", "seed", *AXES, "eval_windows", "prefill", "decode")
ENGINE_OPTIONS = ("max_rows", "clock_mhz")  # what ``design()`` lets a caller choose of the DSE
EVAL_WINDOWS, PREFILL, DECODE = 4, 128, 256


class SpecError(LlmcError):
    """The spec file is not a valid sweep spec."""


@dataclass(frozen=True)
class Point:
    """One combination of the axes."""

    recipe: str
    board: str
    cards: int
    context: int | None  # None: the model's maximum
    engine: tuple[tuple[str, int], ...] = ()
    parallel: str = "pipeline"  # with cards > 1: the split

    def label(self) -> str:
        cards = [] if self.cards == 1 else [f"{self.cards} cards {self.parallel}"]
        parts = [self.recipe or "(none)", self.board, *cards, f"context {self.context or 'max'}"]
        parts += [f"{k}={v}" for k, v in self.engine]
        return ", ".join(parts)


@dataclass(frozen=True)
class SweepSpec:
    model: str
    config: dict[str, Any] | None
    shapes_only: bool
    seed: int
    recipes: tuple[str, ...]
    boards: tuple[str, ...]
    cards: tuple[int, ...]
    parallel: tuple[str, ...]
    contexts: tuple[int | None, ...]
    engines: tuple[tuple[tuple[str, int], ...], ...]
    eval_windows: int
    prefill: int
    decode: int
    folder: Path  # the spec file's folder: relative model paths start there

    def points(self) -> list[Point]:
        """Every combination; one card has no split, so it is one point whatever ``parallel`` lists."""
        return [Point(r, b, c, n, e, s) for r, b, c, s, n, e in
                itertools.product(self.recipes, self.boards, self.cards, self.parallel, self.contexts, self.engines)
                if c > 1 or s == self.parallel[0]]

    def to_json(self) -> dict[str, Any]:
        return {"model": self.model, "config": self.config, "shapes_only": self.shapes_only, "seed": self.seed,
                "recipes": list(self.recipes), "boards": list(self.boards), "cards": list(self.cards),
                "parallel": list(self.parallel), "context": list(self.contexts), "engines": [dict(e) for e in self.engines],
                "eval_windows": self.eval_windows, "prefill": self.prefill, "decode": self.decode}

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.to_json(), sort_keys=True).encode()).hexdigest()


def load_spec(path: Path) -> SweepSpec:
    """Read and check the spec file ``path``; :class:`SpecError` names the first bad key."""
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_bytes().decode("utf-8"))
    except UnicodeDecodeError:
        raise SpecError(f"{path}: not a text file (not UTF-8)") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        raise SpecError(f"{path}: not valid YAML" + (f" at line {mark.line + 1}" if mark else "")) from None
    return parse_spec(data, path)


def parse_spec(data: object, path: Path) -> SweepSpec:
    def fail(key: str, reason: str) -> SpecError:
        return SpecError(f"{path}: {key}: {reason}")

    if not isinstance(data, dict):
        raise SpecError(f"{path}: expected a mapping of {', '.join(KEYS)}")
    unknown = [str(k) for k in data if k not in KEYS]
    if unknown:
        raise fail(unknown[0], f"unknown key (known: {', '.join(KEYS)})")
    for key in ("model", "recipes", "boards"):
        if key not in data:
            raise fail(key, "missing")
    model = data["model"]
    if not isinstance(model, str) or not model.strip():
        raise fail("model", "expected a path, 'llmc-tiny' or an architecture name")
    config = data.get("config")
    if config is not None and not (isinstance(config, dict) and all(isinstance(k, str) for k in config)):
        raise fail("config", "expected a mapping of config values")
    shapes_only = data.get("shapes_only", False)
    if not isinstance(shapes_only, bool):
        raise fail("shapes_only", "expected true or false")
    spec = SweepSpec(
        model=model, config=config, shapes_only=shapes_only, seed=_integer(data, "seed", 0, 0, fail),
        recipes=_recipes(data["recipes"], fail), boards=_boards(data["boards"], fail),
        cards=_cards(data.get("cards", [1]), fail), parallel=_parallel(data.get("parallel", ["pipeline"]), fail),
        contexts=_contexts(data.get("context"), fail),
        engines=_engines(data.get("engines", [{}]), fail),
        eval_windows=_integer(data, "eval_windows", EVAL_WINDOWS, 0, fail),
        prefill=_integer(data, "prefill", PREFILL, 1, fail), decode=_integer(data, "decode", DECODE, 1, fail),
        folder=Path(path).parent)
    for n in spec.contexts:
        if n is not None and spec.prefill + spec.decode > n:
            raise fail("context", f"{n} tokens cannot hold the modelled run of prefill {spec.prefill} + decode "
                                  f"{spec.decode} tokens")
    return spec


def _integer(data: dict, key: str, default: int, least: int, fail: Any) -> int:
    value = data.get(key, default)
    if not _is_int(value) or value < least:
        raise fail(key, f"expected an integer of at least {least}, got {value!r}")
    return value


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _list(value: object, key: str, fail: Any) -> list:
    if not isinstance(value, list) or not value:
        raise fail(key, "expected a non-empty list")
    return value


def _unique(values: list, shown: list, key: str, fail: Any) -> None:
    for i, v in enumerate(values):
        if v in values[:i]:
            raise fail(key, f"{shown[i]!r} is listed twice")


def _recipes(value: object, fail: Any) -> tuple[str, ...]:
    import llmc.compiler.passes  # noqa: F401  (registers the passes)
    from llmc.compiler.pipeline import parse_pipeline

    items = _list(value, "recipes", fail)
    canonical = []
    for i, text in enumerate(items):
        if text is None:
            text = items[i] = ""
        if not isinstance(text, str):
            raise fail(f"recipes[{i}]", f"expected a pipeline string, got {text!r}")
        try:
            canonical.append(",".join(str(c) for c in parse_pipeline(text)))
        except LlmcError as e:
            raise fail(f"recipes[{i}]", " ".join(str(e).split())) from None
    _unique(canonical, items, "recipes", fail)
    return tuple(s.strip() for s in items)


def _boards(value: object, fail: Any) -> tuple[str, ...]:
    from llmc.backends.fpga.target import list_targets

    items = _list(value, "boards", fail)
    known = list_targets()
    for i, name in enumerate(items):
        if name not in known:
            raise fail(f"boards[{i}]", f"{name!r} is not a bundled board ({', '.join(known)})")
    _unique(items, items, "boards", fail)
    return tuple(items)


def _cards(value: object, fail: Any) -> tuple[int, ...]:
    items = value if isinstance(value, list) else [value]
    for n in _list(items, "cards", fail):
        if not _is_int(n) or n < 1:
            raise fail("cards", f"expected card counts of at least 1, got {n!r}")
    _unique(items, items, "cards", fail)
    return tuple(items)


def _parallel(value: object, fail: Any) -> tuple[str, ...]:
    items = value if isinstance(value, list) else [value]
    for s in _list(items, "parallel", fail):
        if s not in PARALLEL:
            raise fail("parallel", f"expected {' or '.join(PARALLEL)}, got {s!r}")
    _unique(items, items, "parallel", fail)
    return tuple(items)


def _contexts(value: object, fail: Any) -> tuple[int | None, ...]:
    items = value if isinstance(value, list) else [value]
    for n in _list(items, "context", fail):
        if n is not None and (not _is_int(n) or n < 1):
            raise fail("context", f"expected token counts of at least 1 (or null: the model's maximum), got {n!r}")
    _unique(items, items, "context", fail)
    return tuple(items)


def _engines(value: object, fail: Any) -> tuple[tuple[tuple[str, int], ...], ...]:
    out = []
    for i, item in enumerate(_list(value, "engines", fail)):
        if not isinstance(item, dict):
            raise fail(f"engines[{i}]", f"expected a mapping of engine options ({', '.join(ENGINE_OPTIONS)})")
        for key, v in item.items():
            if key not in ENGINE_OPTIONS:
                raise fail(f"engines[{i}]", f"unknown engine option {key!r} (known: {', '.join(ENGINE_OPTIONS)})")
            if not _is_int(v) or v < 1:
                raise fail(f"engines[{i}].{key}", f"expected an integer of at least 1, got {v!r}")
        out.append(tuple(sorted(item.items())))
    _unique(out, value, "engines", fail)  # type: ignore[arg-type]
    return tuple(out)
