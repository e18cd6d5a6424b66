"""The C++ models of the RTL units, compiled with g++ as C-simulation compiles them, against the interpreter's group
product: the generated black-box functions over the same beats the RTL reads (the kernel's beats from tiles packed
by pack.py are checked end to end by C-simulation, tests/fpga/test_flow.py)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest

import llmc
from llmc.backends.fpga import units
from llmc.sim.rtl import golden, random_vectors

INCLUDE = Path(llmc.__file__).parent / "hls_templates" / "include"
DRIVER = Path(__file__).parent / "cpp" / "model_driver.cpp"
CONFIGS = [
    ("sparse_mac", {"n": 2, "m": 4, "bits": 4, "lanes": 2, "group": 32}),
    ("sparse_mac", {"n": 1, "m": 4, "bits": 4, "lanes": 1, "group": 16}),
    ("sparse_mac", {"n": 3, "m": 8, "bits": 4, "lanes": 1, "group": 32}),
    ("sparse_mac", {"n": 4, "m": 4, "bits": 8, "lanes": 2, "group": 16}),
    ("sparse_mac", {"n": 4, "m": 8, "bits": 8, "lanes": 2, "group": 64}),
    ("lut_mac", {"g": 4, "bits": 2, "lanes": 2, "zero": True, "group": 32}),
    ("lut_mac", {"g": 4, "bits": 4, "lanes": 1, "zero": True, "group": 24}),
    ("lut_mac", {"g": 8, "bits": 3, "lanes": 1, "zero": False, "group": 32}),
]
NAMES = [units.make_unit(kind, config).name for kind, config in CONFIGS]
VECTORS = 2000


@pytest.fixture(scope="module")
def driver(tmp_path_factory: pytest.TempPathFactory, gxx_ap_types: tuple[str, Path]) -> Path:
    gxx, ap_types = gxx_ap_types
    folder = tmp_path_factory.mktemp("unit_models")
    lines, entries = [], []
    for kind, config in CONFIGS:
        unit = units.make_unit(kind, config)
        (folder / f"{unit.name}.cpp").write_text(units.blackbox_cpp(unit))
        lines.append(f'#include "{unit.name}.cpp"')
        entries.append(f"X({unit.name}_hls, {unit.beat_bits})")
    (folder / "units.inc").write_text("\n".join(lines) + f"\n#define LLMC_UNITS(X) {' '.join(entries)}\n")
    command = [gxx, "-std=c++17", "-O1", "-Wall", "-Wextra", "-Werror", "-Wno-unknown-pragmas", "-isystem",
               str(ap_types), "-I", str(folder), "-I", str(INCLUDE), str(DRIVER), "-o", str(folder / "model_driver")]
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-4000:]
    return folder / "model_driver"


def _run(driver: Path, args: list[object], data: bytes, dtype: str) -> np.ndarray:
    result = subprocess.run([str(driver), *map(str, args)], input=data, capture_output=True, timeout=120)
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    return np.frombuffer(result.stdout, dtype=dtype)


@pytest.mark.parametrize(("kind", "config"), CONFIGS, ids=NAMES)
def test_blackbox_models_equal_the_interpreter(driver: Path, kind: str, config: dict) -> None:
    unit = units.make_unit(kind, config)
    x, w, zeros = random_vectors(kind, config, VECTORS, seed=3)
    width = (unit.beat_bits + 7) // 8
    data = b"".join(beat.to_bytes(width, "little") for beat in units.beats(unit, x, w, zeros))
    np.testing.assert_array_equal(_run(driver, ["stream", f"{unit.name}_hls"], data, "<i4"), golden(x, w, zeros))
