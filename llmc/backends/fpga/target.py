"""FPGA boards as data: device resources, memory channels and platform, read from YAML.

The bundled boards live in ``targets/*.yaml`` (``u280.yaml`` documents every field); a user adds a
board by passing the path of a file in the same format to :func:`load_target`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from llmc.errors import LlmcError
from llmc.safe_text import memory_bank, word

TARGETS_DIR = Path(__file__).parent / "targets"
RESOURCE_KINDS = ("lut", "ff", "dsp", "bram36", "uram")
MEMORY_KINDS = ("hbm", "ddr")
DEFAULT_BANKS = {"hbm": "HBM[{}]", "ddr": "DDR[{}]"}  # connectivity names of a kind's channels


@dataclass(frozen=True)
class Resources:
    """A count of each FPGA resource: LUTs, flip-flops, DSP48E2 slices, BRAM36 and URAM blocks."""

    lut: int = 0
    ff: int = 0
    dsp: int = 0
    bram36: int = 0
    uram: int = 0

    def __add__(self, o: Resources) -> Resources:
        return Resources(self.lut + o.lut, self.ff + o.ff, self.dsp + o.dsp, self.bram36 + o.bram36, self.uram + o.uram)

    def __sub__(self, o: Resources) -> Resources:
        return Resources(self.lut - o.lut, self.ff - o.ff, self.dsp - o.dsp, self.bram36 - o.bram36, self.uram - o.uram)

    def __mul__(self, n: int) -> Resources:
        return Resources(self.lut * n, self.ff * n, self.dsp * n, self.bram36 * n, self.uram * n)

    def fractions(self, of: Resources) -> dict[str, float]:
        """Each count as a fraction of the same count in ``of``."""
        return {k: getattr(self, k) / getattr(of, k) for k in RESOURCE_KINDS}


@dataclass(frozen=True)
class Memory:
    """The memory the kernel's m_axi ports reach: HBM pseudo-channels, or DDR seen through a few ports."""

    kind: str  # "hbm" or "ddr"
    channels: int
    channel_bytes: int
    bandwidth_gbs: float  # aggregate peak, GB/s
    efficiency: float  # fraction of a channel's peak one port reads sequentially (measured)
    latency_ns: float  # a read's round trip, request to first word
    port_gbs: float  # the most one AXI port into a channel carries
    ports_per_channel: int  # kernel ports one channel may serve (each at most port_gbs)
    bank: str = ""  # v++ connectivity name of channel {} ("HBM[{}]", "DDR[{}]", "HP{}"); "" for the kind's

    @property
    def total_bytes(self) -> int:
        return self.channels * self.channel_bytes

    @property
    def bank_format(self) -> str:
        """How connectivity names channel ``i``: ``bank_format.format(i)``."""
        return self.bank or DEFAULT_BANKS[self.kind]

    @property
    def channel_gbs(self) -> float:
        """What one channel delivers to sequential reads, GB/s: its peak share at the measured efficiency."""
        return self.bandwidth_gbs * self.efficiency / self.channels

    @property
    def channel_peak_gbs(self) -> float:
        return self.bandwidth_gbs / self.channels


@dataclass(frozen=True)
class Ddr:
    """DDR banks beside the main memory (0 when the board has none)."""

    banks: int
    bandwidth_gbs: float
    bank: str = ""  # v++ connectivity name of bank {} (default "DDR[{}]")

    @property
    def bank_format(self) -> str:
        return self.bank or DEFAULT_BANKS["ddr"]


@dataclass(frozen=True)
class Target:
    """One board: its FPGA part, Vitis platform, default kernel clock, memory and resources."""

    name: str
    description: str
    part: str
    platform: str
    clock_mhz: float
    memory: Memory
    ddr: Ddr
    resources: Resources
    slrs: int
    shell: Resources  # what the platform shell takes (estimates)

    @property
    def memory_bytes(self) -> int:
        """Total capacity of the main memory (HBM, or the DDR share the accelerator may use)."""
        return self.memory.total_bytes

    def to_json(self) -> dict:
        return asdict(self)

    @property
    def usable(self) -> Resources:
        """Resources left to kernels: the device's minus the shell's."""
        return self.resources - self.shell


def list_targets() -> list[str]:
    """Names of the bundled boards."""
    return sorted(p.stem for p in TARGETS_DIR.glob("*.yaml"))


def load_target(name_or_path: str) -> Target:
    """Load a bundled board by name (``u280``) or a board file by path (ending in .yaml or .yml)."""
    if name_or_path.endswith((".yaml", ".yml")):
        path, source = Path(name_or_path), name_or_path
        if not path.is_file():
            raise LlmcError(f"{source}: no such target file")
    else:
        path, source = TARGETS_DIR / f"{name_or_path}.yaml", f"{name_or_path}.yaml"
        if not path.is_file():
            raise LlmcError(f"unknown target '{name_or_path}' (known: {', '.join(list_targets())}; or a .yaml path)")
    import yaml

    try:
        data = yaml.safe_load(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError:
        raise LlmcError(f"{source}: not a text file (not UTF-8)") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise LlmcError(f"{source}: not valid YAML{where}") from None
    return _parse(_Fields(source, data, "", _field_names(Target)))


def target_from_json(values: dict, source: str) -> Target:
    """The board a project was compiled for, as :meth:`Target.to_json` recorded it in ``source``."""
    return _parse(_Fields(source, values, "target.", _field_names(Target)))


def _parse(top: _Fields) -> Target:
    memory = top.section("memory", _field_names(Memory))
    ddr = top.section("ddr", _field_names(Ddr))
    target = Target(
        name=top.text("name", safe=word),
        description=top.text("description"),
        part=top.text("part", safe=word),
        platform=top.text("platform", safe=word),
        clock_mhz=top.number("clock_mhz"),
        memory=Memory(
            kind=memory.text("kind", MEMORY_KINDS),
            channels=memory.integer("channels"),
            channel_bytes=memory.integer("channel_bytes"),
            bandwidth_gbs=memory.number("bandwidth_gbs"),
            efficiency=memory.number("efficiency", at_most=1.0),
            latency_ns=memory.number("latency_ns"),
            port_gbs=memory.number("port_gbs"),
            ports_per_channel=memory.integer("ports_per_channel"),
            bank=memory.bank(),
        ),
        ddr=Ddr(
            banks=ddr.integer("banks", allow_zero=True), bandwidth_gbs=ddr.number("bandwidth_gbs", allow_zero=True),
            bank=ddr.bank(),
        ),
        resources=_resources(top.section("resources", RESOURCE_KINDS), allow_zero=False),
        slrs=top.integer("slrs"),
        shell=_resources(top.section("shell", RESOURCE_KINDS), allow_zero=True),
    )
    if target.ddr.banks and not target.ddr.bandwidth_gbs:
        raise ddr.error("bandwidth_gbs", "must be positive when ddr.banks > 0")
    for kind in RESOURCE_KINDS:
        if getattr(target.shell, kind) >= getattr(target.resources, kind):
            raise top.error(f"shell.{kind}", f"must be smaller than resources.{kind}")
    return target


def _resources(section: _Fields, *, allow_zero: bool) -> Resources:
    return Resources(*(section.integer(k, allow_zero=allow_zero) for k in RESOURCE_KINDS))


def _field_names(cls: type) -> tuple[str, ...]:
    return tuple(f.name for f in fields(cls))


class _Fields:
    """Typed reads from one YAML mapping; errors name the file and the dotted field."""

    def __init__(self, source: str, values: Any, prefix: str, known: tuple[str, ...]) -> None:
        self.source, self.prefix = source, prefix
        if not isinstance(values, dict):
            raise LlmcError(f"{source}: {prefix.rstrip('.') or 'the file'} must be a mapping of fields")
        unknown = sorted(str(k) for k in values if k not in known)
        if unknown:
            raise self.error(unknown[0], f"is not a known field (expected: {', '.join(known)})")
        self.values = values

    def error(self, key: str, problem: str) -> LlmcError:
        return LlmcError(f"{self.source}: {self.prefix}{key} {problem}")

    def _get(self, key: str) -> Any:
        if key not in self.values:
            raise self.error(key, "is missing")
        return self.values[key]

    def section(self, key: str, known: tuple[str, ...]) -> _Fields:
        return _Fields(self.source, self._get(key), f"{self.prefix}{key}.", known)

    def text(self, key: str, choices: tuple[str, ...] = (), safe: Callable[[object], str] | None = None) -> str:
        """A string field; ``safe`` (a :mod:`llmc.safe_text` filter) refuses what generated files cannot hold."""
        value = self._get(key)
        if choices and value not in choices:
            raise self.error(key, f"must be one of {', '.join(choices)}")
        if not isinstance(value, str) or not value.strip():
            raise self.error(key, "must be a non-empty string")
        if safe is not None:
            try:
                safe(value)
            except LlmcError:
                raise self.error(key, f"{value!r} may hold only letters, digits and _ . + - /") from None
        return value

    def bank(self) -> str:
        """The optional ``bank`` field: a connectivity name with ``{}`` for the channel number."""
        value = self.values.get("bank", "")
        if value == "":
            return ""
        try:
            memory_bank(str(value).format(0))
        except (LlmcError, ValueError, IndexError, KeyError):
            raise self.error("bank", f"{value!r} must name a memory bank with {{}} for the channel number "
                                     "(e.g. HBM[{}], DDR[{}], HP{})") from None
        return str(value)

    def integer(self, key: str, *, allow_zero: bool = False) -> int:
        value = self._get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < (0 if allow_zero else 1):
            raise self.error(key, f"must be a {'non-negative' if allow_zero else 'positive'} integer")
        return value

    def number(self, key: str, *, allow_zero: bool = False, at_most: float | None = None) -> float:
        value = self._get(key)
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        if not ok or value < 0 or (value == 0 and not allow_zero) or (at_most is not None and value > at_most):
            bound = f" at most {at_most:g}" if at_most is not None else ""
            raise self.error(key, f"must be a {'non-negative' if allow_zero else 'positive'} number{bound}")
        return float(value)
