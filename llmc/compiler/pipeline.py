"""Passes by name, pipelines from strings, and the pass manager with verify / print / timing hooks.

A pass is a pure function ``(module, options, context) -> module`` registered with a frozen
dataclass of options::

    @register_pass("quantize", QuantizeOptions)
    def quantize(module, options, context): ...

A pipeline is written ``name{key=value,...},name,...``, e.g.
``smoothquant{alpha=0.5},quantize{bits=4,group=128,method=gptq},sparsify{pattern=2:4}``, or read
from a recipe file (YAML: a list of ``{pass: name, key: value}`` entries, or a ``pipeline:``
string). Options are parsed and checked before any pass runs.
"""

from __future__ import annotations

import dataclasses
import math
import re
import time
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from llmc.compiler.calibrate import CalibrationConfig, LayerStats, collect
from llmc.errors import LlmcError
from llmc.ir.graph import Module
from llmc.ir.printer import print_module
from llmc.ir.verify import VerifyError, verify_module


class PipelineError(LlmcError):
    """A pipeline string, recipe or pass option is not valid."""


@dataclass(frozen=True)
class NoOptions:
    """A pass that takes no options."""


@dataclass
class PassContext:
    """What passes share: the tokenizer and calibration settings, calibration statistics
    (collected on demand from the module as it is when a pass asks), and reports."""

    tokenizer_json: str | None = None
    calibration_config: CalibrationConfig = field(default_factory=CalibrationConfig)
    reports: dict[str, Any] = field(default_factory=dict)
    timings: list[tuple[str, float]] = field(default_factory=list)
    _stats: tuple[Module, dict[str, LayerStats]] | None = None

    def forget_calibration(self) -> None:
        self._stats = None

    def calibration(self, module: Module) -> dict[str, LayerStats]:
        """Input statistics of every linear layer of ``module`` (cached for this module)."""
        if self._stats is None or self._stats[0] is not module:
            self._stats = (module, collect(module, self.tokenizer_json, self.calibration_config))
        return self._stats[1]


PassFn = Callable[[Module, Any, PassContext], Module]
CheckFn = Callable[[Module, Any], None]


@dataclass(frozen=True)
class PassInfo:
    name: str
    options: type
    run: PassFn
    doc: str
    check: CheckFn | None = None  # refuses options that do not fit the module, before any work


PASSES: dict[str, PassInfo] = {}


def register_pass(name: str, options: type = NoOptions, check: CheckFn | None = None) -> Callable[[PassFn], PassFn]:
    if not dataclasses.is_dataclass(options):
        raise TypeError(f"options of pass '{name}' must be a dataclass")

    def wrap(fn: PassFn) -> PassFn:
        if name in PASSES:
            raise ValueError(f"pass '{name}' registered twice")
        doc = (fn.__doc__ or "").strip().splitlines()
        PASSES[name] = PassInfo(name, options, fn, doc[0] if doc else "", check)
        return fn

    return wrap


@dataclass(frozen=True)
class PassCall:
    info: PassInfo
    options: Any

    def __str__(self) -> str:
        fields = [f"{f.name}={_format(getattr(self.options, f.name))}" for f in dataclasses.fields(self.options)]
        return self.info.name + ("{" + ",".join(fields) + "}" if fields else "")


def _format(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


# -- parsing ------------------------------------------------------------------------------------
_CALL = re.compile(r"\s*([a-z][a-z0-9_-]*)\s*(?:\{([^{}]*)\})?\s*(,|$)")


def parse_pipeline(text: str) -> list[PassCall]:
    """Parse ``name{k=v,...},...``; unknown passes and bad options raise :class:`PipelineError`."""
    calls, pos = [], 0
    text = text.strip()
    while pos < len(text):
        m = _CALL.match(text, pos)
        if not m or m.end() == pos:
            raise PipelineError(f"pipeline: cannot parse at column {pos + 1}: '{text[pos:pos + 30]}'")
        raw: dict[str, str] = {}
        for item in filter(None, (s.strip() for s in (m[2] or "").split(","))):
            key, sep, value = item.partition("=")
            if not sep:
                raise PipelineError(f"pass {m[1]}: option '{item}' is not key=value")
            if key.strip() in raw:
                raise PipelineError(f"pass {m[1]}: option '{key.strip()}' is given twice")
            raw[key.strip()] = value.strip()
        calls.append(make_call(m[1], raw))
        pos = m.end()
    return calls


def load_recipe(path: Path) -> list[PassCall]:
    """A recipe file: YAML with ``pipeline: "..."`` or ``passes: [{pass: name, key: value}, ...]``."""
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_bytes().decode("utf-8"))
    except UnicodeDecodeError:
        raise PipelineError(f"{path}: not a text file (not UTF-8)") from None
    except (OSError, yaml.YAMLError) as e:
        raise PipelineError(f"{path}: cannot read recipe: {' '.join(str(e).split())}") from None
    if isinstance(data, dict):
        unknown = sorted(str(k) for k in data if k not in ("pipeline", "passes"))
        if unknown:
            raise PipelineError(f"{path}: unknown key '{unknown[0]}' (a recipe has 'pipeline' or 'passes')")
        if "pipeline" in data and "passes" in data:
            raise PipelineError(f"{path}: give 'pipeline' or 'passes', not both")
    if isinstance(data, dict) and isinstance(data.get("pipeline"), str):
        return parse_pipeline(data["pipeline"])
    if isinstance(data, dict) and isinstance(data.get("passes"), list):
        calls = []
        for i, entry in enumerate(data["passes"]):
            if not isinstance(entry, dict) or "pass" not in entry:
                raise PipelineError(f"{path}: passes[{i}] needs a 'pass' key")
            calls.append(make_call(str(entry["pass"]), {k: str(v).lower() if isinstance(v, bool) else str(v)
                                                        for k, v in entry.items() if k != "pass"}))
        return calls
    raise PipelineError(f"{path}: a recipe needs 'pipeline: <string>' or 'passes: [...]'")


def make_call(name: str, raw: dict[str, str]) -> PassCall:
    info = PASSES.get(name)
    if info is None:
        raise PipelineError(f"unknown pass '{name}' (known: {', '.join(sorted(PASSES))})")
    fields = {f.name: f for f in dataclasses.fields(info.options)}
    kwargs = {}
    for key, value in raw.items():
        if key not in fields:
            raise PipelineError(f"pass {name}: unknown option '{key}' (options: {', '.join(fields) or 'none'})")
        kwargs[key] = _convert(name, key, value, typing.get_type_hints(info.options)[key])
    try:
        return PassCall(info, info.options(**kwargs))
    except (ValueError, TypeError) as e:
        raise PipelineError(f"pass {name}: {e}") from None


def _convert(name: str, key: str, value: str, hint: Any) -> Any:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if value.lower() in ("none", "null"):
            return None
        hint = args[0]
    try:
        if hint is bool:
            if value.lower() not in ("true", "false", "1", "0"):
                raise ValueError
            return value.lower() in ("true", "1")
        if hint is float:
            number = float(value)
            if not math.isfinite(number):
                raise PipelineError(f"pass {name}: option {key}={value} is not a finite number")
            return number
        if hint in (int, str):
            return hint(value)
    except ValueError:
        raise PipelineError(f"pass {name}: option {key}={value} is not a {hint.__name__}") from None
    raise PipelineError(f"pass {name}: option {key} has an unsupported type {hint}")


# -- running ------------------------------------------------------------------------------------
def unchanged(before: Module, after: Module) -> bool:
    """True when ``after`` is ``before``: the same program text and the same parameter values."""
    if after is before:
        return True
    if print_module(after) != print_module(before) or before.params.keys() != after.params.keys():
        return False
    for name, p in before.params.items():
        q = after.params[name].data
        if p.data is not q and (p.data is None or q is None or not np.array_equal(p.data, q)):
            return False
    return True



@dataclass
class Hooks:
    """``verify_each`` checks the IR after every pass; ``print_after`` names passes whose output
    is printed through ``printer``; timings always go to the context."""

    verify_each: bool = True
    print_after: frozenset[str] = frozenset()
    printer: Callable[[str, Module], None] | None = None


def run_pipeline(module: Module, calls: list[PassCall], context: PassContext | None = None,
                 hooks: Hooks | None = None) -> Module:
    context = context or PassContext()
    hooks = hooks or Hooks()
    for call in calls:
        if call.info.check is not None:
            call.info.check(module, call.options)
    for call in calls:
        start = time.perf_counter()
        before, module = module, call.info.run(module, call.options, context)
        if unchanged(before, module):
            raise PipelineError(f"pass {call} changes nothing in {before.name} (is the model already in that "
                                "form?)")
        context.forget_calibration()  # a pass may have changed its output after calibrating it
        context.timings.append((str(call), time.perf_counter() - start))
        if hooks.verify_each:
            try:
                verify_module(module)
            except VerifyError as e:
                raise LlmcError(f"after pass {call}: invalid IR: {e}") from None
        if hooks.printer is not None and (call.info.name in hooks.print_after or "all" in hooks.print_after):
            hooks.printer(str(call), module)
    return module
