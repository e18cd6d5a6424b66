"""The RTL units synthesized with Yosys (``synth_xilinx -family xcup``): one DSP48E2 per multiplier the
RTL intends (two int4 products per slice), and LUT and FF counts within 20% of the resource model's unit
formulas, whose constants were fitted to these syntheses."""

from __future__ import annotations

import shutil

import pytest

from llmc.backends.fpga.resources import rtl_unit
from llmc.backends.fpga.units import make_unit
from llmc.errors import LlmcError
from llmc.sim.synth import cell_resources, synthesize

pytestmark = pytest.mark.skipif(shutil.which("yosys") is None, reason="synthesis needs yosys (scripts/setup.sh)")
UNITS = [  # the int8 chain and the 8-position multiplexer run in make test-full
    pytest.param("sparse_mac", {"n": 2, "m": 4, "bits": 8, "lanes": 2}, marks=pytest.mark.slow, id="sparse-2-4-8-2"),
    pytest.param("sparse_mac", {"n": 2, "m": 4, "bits": 4, "lanes": 2}, id="sparse-2-4-4-2"),
    pytest.param("sparse_mac", {"n": 2, "m": 8, "bits": 4, "lanes": 2}, marks=pytest.mark.slow, id="sparse-2-8-4-2"),
    pytest.param("lut_mac", {"g": 4, "bits": 2, "lanes": 2, "zero": True}, id="lut-4-2-2"),
]


@pytest.mark.parametrize("kind,config", UNITS)
def test_synthesized_unit_matches_the_resource_model(kind: str, config: dict) -> None:
    unit = make_unit(kind, config)
    measured, modelled = synthesize(unit), rtl_unit(unit)
    assert measured.dsp == modelled.dsp  # a 27 x 18 product per DSP48E2, not a wide multiply split over three
    assert measured.bram36 == modelled.bram36 == 0 and measured.uram == 0
    for kind_ in ("lut", "ff"):
        assert abs(getattr(measured, kind_) / getattr(modelled, kind_) - 1) <= 0.2, (kind_, measured, modelled)


def test_cells_count_as_the_resources_they_occupy() -> None:
    got = cell_resources({"LUT6": 3, "RAM32M16": 2, "SRL16E": 1, "CARRY4": 9, "FDRE": 5, "DSP48E2": 2,
                          "RAMB18E2": 3}, "unit")
    assert (got.lut, got.ff, got.dsp, got.bram36) == (20, 5, 2, 2)
    with pytest.raises(LlmcError, match="cell type XYZ"):
        cell_resources({"XYZ": 1}, "unit")
