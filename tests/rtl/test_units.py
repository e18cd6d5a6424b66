"""The RTL units under Icarus Verilog and Verilator: 10,000 constrained-random vectors per configuration, random
valid gaps and back-pressure, every result equal to the interpreter's group product; hung simulations fail."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import time

import numpy as np
import pytest
from zoo import matrix

from llmc.backends.fpga import units
from llmc.sim.rtl import SIMULATORS, RtlSimError, bench_sources, check_unit, golden, random_vectors

pytestmark = pytest.mark.rtl

VECTORS = 10_000
CONFIGS = {
    "sparse-2of4-int4": ("sparse_mac", {"n": 2, "m": 4, "bits": 4, "lanes": 2, "group": 32}),
    "dense-int8": ("sparse_mac", {"n": 4, "m": 4, "bits": 8, "lanes": 2, "group": 16}),
    "lut-2bit-zero": ("lut_mac", {"g": 4, "bits": 2, "lanes": 2, "zero": True, "group": 32}),
    "lut-4bit-zero": ("lut_mac", {"g": 4, "bits": 4, "lanes": 1, "zero": True, "group": 24}),
}
# fewer vectors, Icarus only: odd int4 slot counts (a slice with one product), M = 16, 4:8 int8, g = 8 without zero
EDGES = {
    "sparse-1of4-int4-3-lanes": ("sparse_mac", {"n": 1, "m": 4, "bits": 4, "lanes": 3, "group": 24}),
    "sparse-3of16-int4": ("sparse_mac", {"n": 3, "m": 16, "bits": 4, "lanes": 1, "group": 32}),
    "sparse-4of8-int8": ("sparse_mac", {"n": 4, "m": 8, "bits": 8, "lanes": 1, "group": 32}),
    "lut-g8-1bit": ("lut_mac", {"g": 8, "bits": 1, "lanes": 1, "zero": False, "group": 32}),
}
TOOLS = {"icarus": "iverilog", "verilator": "verilator"}


def needs(simulator: str) -> None:
    if shutil.which(TOOLS[simulator]) is None:
        pytest.skip(f"{TOOLS[simulator]} not found on PATH")
    if importlib.util.find_spec("cocotb") is None:
        pytest.skip("cocotb is not installed (pip install llmc[rtl])")


# each configuration on one simulator by default, alternating; the full product under make test-full
DEFAULT = [("sparse-2of4-int4", "verilator"), ("dense-int8", "icarus"), ("lut-2bit-zero", "verilator"),
           ("lut-4bit-zero", "icarus")]


@pytest.mark.parametrize(("name", "simulator"), matrix([list(CONFIGS), SIMULATORS], DEFAULT))
def test_unit_equals_the_interpreter(name: str, simulator: str) -> None:
    needs(simulator)
    unit, config = CONFIGS[name]
    x, w, zeros = random_vectors(unit, config, VECTORS, seed=list(CONFIGS).index(name))
    result = check_unit(unit, config, x, w, zeros, simulator, timeout_s=600, seed=7)
    print(f"{name} on {simulator}: {result.compared} vectors in {result.seconds:.1f} s")
    assert (result.compared, result.mismatches) == (VECTORS, 0)


@pytest.mark.parametrize("name", list(EDGES))
def test_edge_configuration_equals_the_interpreter(name: str) -> None:
    needs("icarus")
    unit, config = EDGES[name]
    x, w, zeros = random_vectors(unit, config, 1000, seed=11)
    result = check_unit(unit, config, x, w, zeros, "icarus", timeout_s=300)
    assert (result.compared, result.mismatches) == (1000, 0)


@pytest.mark.parametrize("name", [*CONFIGS, *EDGES])
def test_rtl_lints_clean(name: str, tmp_path) -> None:
    if shutil.which("verilator") is None:
        pytest.skip("verilator not found on PATH")
    unit = units.make_unit(*{**CONFIGS, **EDGES}[name])
    sources = bench_sources(unit)
    for file, text in sources.items():
        (tmp_path / file).write_text(text)
    for top in (f"{unit.name}_hls", "llmc_bench"):
        result = subprocess.run(["verilator", "--lint-only", "-Wall", "-Wno-DECLFILENAME", "--timing", "--top-module",
                                 top, *sources], cwd=tmp_path, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr[-3000:]


def test_random_vectors_cover_the_corners() -> None:
    x, w, zeros = random_vectors("sparse_mac", {"n": 2, "m": 4, "bits": 4, "lanes": 2}, 100, seed=0)
    assert x.min() == -128 and x.max() == 127 and w.min() == -8 and w.max() == 7 and zeros is None
    blocks = w.reshape(100, -1, 4)
    assert ((blocks != 0).sum(axis=-1) <= 2).all()
    assert not x[0].any() and not w[0].any()
    sums = golden(x, w, zeros)
    assert sums.max() == 32 // 2 * 128 * 8 and sums.min() == -(32 // 2) * 127 * 8  # worst-case accumulation
    x, w, zeros = random_vectors("lut_mac", {"g": 4, "bits": 2, "lanes": 2, "zero": True, "group": 16}, 100, seed=0)
    assert w.min() == 0 and w.max() == 3 and zeros is not None and set(zeros) == {0, 1, 2, 3}
    assert golden(x, w, zeros).max() == 16 * 128 * 3


def test_bad_vectors_are_refused() -> None:
    x, w, _ = random_vectors("sparse_mac", {"n": 2, "m": 4, "bits": 4}, 4, seed=0)
    with pytest.raises(ValueError, match="not 2:4 sparse"):
        check_unit("sparse_mac", {"n": 2, "m": 4, "bits": 4}, x, np.ones_like(w), None, "icarus", 60)
    with pytest.raises(ValueError, match="codes must lie"):
        check_unit("sparse_mac", {"n": 2, "m": 4, "bits": 4}, x, w * 3, None, "icarus", 60)
    with pytest.raises(ValueError, match="zeros must be given"):
        check_unit("lut_mac", {"g": 4, "bits": 2, "zero": True}, x, np.abs(w) % 4, None, "icarus", 60)
    with pytest.raises(ValueError, match="unknown simulator"):
        check_unit("sparse_mac", {"n": 2, "m": 4, "bits": 4}, x, w, None, "xsim", 60)
    with pytest.raises(ValueError, match="unknown RTL unit"):
        random_vectors("dense_mac", {}, 4, seed=0)


def test_stalled_results_fail_at_the_cycle_limit() -> None:
    needs("icarus")
    unit, config = CONFIGS["sparse-2of4-int4"]
    x, w, zeros = random_vectors(unit, config, 50, seed=1)
    with pytest.raises(RtlSimError, match="hung: no progress within"):
        check_unit(unit, config, x, w, zeros, "icarus", timeout_s=120, ready_rate=0.0)


def test_a_hung_simulation_is_killed_at_the_time_limit() -> None:
    needs("icarus")
    unit, config = CONFIGS["sparse-2of4-int4"]
    x, w, zeros = random_vectors(unit, config, 50, seed=1)
    check_unit(unit, config, x[:1], w[:1], zeros, "icarus", timeout_s=120)  # build outside the limit
    start = time.monotonic()
    with pytest.raises(RtlSimError, match=r"timed out \(limit 5 s\), killed"):
        check_unit(unit, config, x, w, zeros, "icarus", timeout_s=5, ready_rate=0.0, max_cycles=10**12)
    assert time.monotonic() - start < 15


def test_the_bench_catches_a_broken_sign_correction(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the borrow bit, int4 pairs with a negative low product come out one too small."""
    needs("icarus")
    render = units.render_verilog

    def broken(unit: units.Unit) -> str:
        text = render(unit)
        assert " + {47'd0, m_reg[12]}" in text
        return text.replace(" + {47'd0, m_reg[12]}", "")

    monkeypatch.setattr(units, "render_verilog", broken)
    unit, config = CONFIGS["sparse-2of4-int4"]
    x, w, zeros = random_vectors(unit, config, 500, seed=2)
    result = check_unit(unit, config, x, w, zeros, "icarus", timeout_s=120)
    assert result.compared == 500 and result.mismatches > 100
