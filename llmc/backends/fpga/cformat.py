"""C++ spellings of constants, and the generated header ``llmc_tables.h`` of the HLS library."""

from __future__ import annotations

import math
from decimal import Decimal

import numpy as np

from llmc.ir.ops import hw_math as hm
from llmc.templating import render


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
    def spelled(x: np.float32) -> dict[str, str]:
        return {"literal": float_literal(x), "hex": hexfloat(x)}

    return render("include/llmc_tables.h.j2", exp2=[spelled(v) for v in hm.exp2_table()], log2e=spelled(hm.LOG2E),
                  gelu_2u=spelled(hm.GELU_2U), gelu_cubic=spelled(hm.GELU_CUBIC), erf_p=spelled(hm.ERF_P),
                  erf_a=[spelled(a) for a in hm.ERF_A], inv_sqrt2=spelled(hm.INV_SQRT2), act_frac=hm.ACT_FRAC,
                  qmax8=hm.QMAX8, f32_int32_max=spelled(hm.F32_INT32_MAX))
