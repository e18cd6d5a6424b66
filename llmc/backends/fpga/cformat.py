"""C++ spellings of constants, and the generated header ``llmc_tables.h`` of the HLS library."""

from __future__ import annotations

import math
from decimal import Decimal
from pathlib import Path

import numpy as np
from jinja2 import Environment, FileSystemLoader, StrictUndefined

import llmc
from llmc.ir.ops import hw_math as hm


def _finite(x: np.float32) -> float:
    value = float(np.float32(x))
    if not math.isfinite(value):
        raise ValueError(f"{value} has no C++ literal")
    return value


def hexfloat(x: np.float32) -> str:
    """The exact C99 / C++17 hexadecimal literal of a float32 (``0x1.8p+1f``)."""
    mantissa, exponent = _finite(x).hex().split("p")
    return f"{mantissa.rstrip('0').rstrip('.')}p{exponent}f"


def float_literal(x: np.float32) -> str:
    """The exact decimal literal of a float32 (``3.0f``): every digit of its value, so C++14 (which has no
    hexadecimal floating literals) reads back the same bits."""
    text = str(Decimal(_finite(x)))
    if not any(mark in text for mark in ".E"):
        text += ".0"
    return text + "f"


def render_tables() -> str:
    """``llmc_tables.h``: the constants of :mod:`llmc.ir.ops.hw_math` that ``llmc_math.h`` reads."""
    env = Environment(
        loader=FileSystemLoader(Path(llmc.__file__).parent / "hls_templates"),
        undefined=StrictUndefined,
        keep_trailing_newline=True,
    )
    env.filters["cfloat"] = float_literal
    env.filters["hexfloat"] = hexfloat
    return env.get_template("include/llmc_tables.h.j2").render(exp2=list(hm.exp2_table()), log2e=hm.LOG2E)
