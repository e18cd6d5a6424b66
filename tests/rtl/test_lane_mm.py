"""One matrix lane of an MM in RTL with its memory port (``llmc.sim.lane_rtl``): the lane's reader, ping-pong tile
buffer, walk and beat former, and its unit (the LUT unit, the 2:4 int4 chain) against cocotbext-axi's AXI RAM at
the U280 port's rate and round trip, the tiles from the bundled model's compiled weight image (or packed for a wider
layer), every group product checked and the cycles held against the timing model's for the same lane."""

from __future__ import annotations

import shutil
import subprocess
from math import ceil
from pathlib import Path

import pytest

from llmc.backends.fpga import units
from llmc.backends.fpga.isa import MmFlags
from llmc.backends.fpga.timing import TimingModel
from llmc.sim import lane_rtl
from llmc.sim.image import ProjectImage

pytestmark = pytest.mark.rtl

TIMEOUT_S = 300


@pytest.fixture(scope="module")
def lut(engine_projects) -> ProjectImage:
    return ProjectImage.load(engine_projects["w2-lut"])


@pytest.fixture(scope="module")
def sparse(engine_projects) -> ProjectImage:
    return ProjectImage.load(engine_projects["w4-2of4"])


def _matmuls(image: ProjectImage, engine: str) -> list[int]:
    """The decode program's MMs on ``engine``, those whose slowest lane holds the most tiles first, then the widest."""
    program = image.programs[1]
    found = [i for i, ins in enumerate(program)
             if ins.op == "MM" and MmFlags.decode(int(ins.fields["flags"])).engine_name == engine]
    lanes = image.config.mm_lanes
    return sorted(found, key=lambda i: (-ceil(int(program[i].fields["tiles"]) / lanes), -int(program[i].fields["k"]), i))


def _widest(image: ProjectImage, engine: str) -> int:
    program = image.programs[1]
    return max(_matmuls(image, engine), key=lambda i: int(program[i].fields["k"]))


@pytest.mark.parametrize("simulator", ["icarus", "verilator"])
def test_a_lut_lane_is_bit_exact_and_takes_the_modelled_cycles(lut: ProjectImage, simulator: str) -> None:
    job = lane_rtl.image_job(lut, _matmuls(lut, "lut")[0])  # two tiles in the lane: the second loads during the first
    assert len(job.tiles) == 2
    result = lane_rtl.compare(job, TimingModel.for_image(lut), simulator, TIMEOUT_S)
    assert (result.compared, result.mismatches) == (2 * 16 * 2, 0)
    assert result.cycles == pytest.approx(result.modelled, rel=0.1)


def test_a_tile_across_a_4k_page_is_read_in_two_bursts(lut: ProjectImage) -> None:
    """The widest LUT MM's tile (54 words) crosses a 4 KiB boundary on its channel: the reader cuts its burst there
    (the AXI RAM model refuses a burst across one)."""
    job = lane_rtl.image_job(lut, _widest(lut, "lut"))
    tile_bytes = int(job.fields["tile_bytes"])
    assert job.base // 4096 != (job.base + tile_bytes - 1) // 4096
    result = lane_rtl.compare(job, TimingModel.for_image(lut), "icarus", TIMEOUT_S)
    assert result.mismatches == 0
    assert result.cycles == pytest.approx(result.modelled, rel=0.1)


@pytest.mark.parametrize("simulator", ["icarus", pytest.param("verilator", marks=pytest.mark.slow)])
def test_a_sparse_lane_is_bit_exact_and_takes_the_modelled_cycles(sparse: ProjectImage, simulator: str) -> None:
    """The 2:4 int4 chain of 32 DSP48E2 slices returns a group's product 35 cycles after its last beat, which the
    timing model charges once a lane (the last result); on the bundled model's small shares (one tile a lane, 32
    beats) that is a fifth of the lane's time, and the RTL lane takes the modelled cycles to within 2."""
    job = lane_rtl.image_job(sparse, _matmuls(sparse, "sparse")[-1])
    model = TimingModel.for_image(sparse)
    result = lane_rtl.compare(job, model, simulator, TIMEOUT_S)
    assert (result.compared, result.mismatches) == (len(job.tiles) * 16 * 2, 0)
    depth = units.latency(lane_rtl.lane_unit(sparse.config, job.flags))
    assert depth == 35
    assert sparse.config.unit_latency("sparse", 4) == depth  # what the model charges after the lane's last beat
    assert result.cycles == pytest.approx(result.modelled, abs=2)


@pytest.mark.parametrize("simulator", ["icarus", pytest.param("verilator", marks=pytest.mark.slow)])
def test_a_wider_sparse_layer_takes_the_modelled_cycles(sparse: ProjectImage, simulator: str) -> None:
    """Four tiles of 768 codes a lane: the chain's depth is 5% of the lane's time."""
    job = lane_rtl.scaled_job(sparse.config, "sparse", 4, 768, 128, 4)
    result = lane_rtl.compare(job, TimingModel.for_image(sparse), simulator, TIMEOUT_S)
    assert (result.compared, result.mismatches) == (4 * 16 * 6, 0)
    assert result.cycles == pytest.approx(result.modelled, rel=0.1)


def test_a_lut_lane_walks_two_rows_over_six_tiles(lut: ProjectImage) -> None:
    """Packed tiles of a wider LUT layer, two activation rows in one pass: the third tile waits for a free half."""
    job = lane_rtl.scaled_job(lut.config, "lut", 2, 256, 128, 6, rows=2)
    result = lane_rtl.compare(job, TimingModel.for_image(lut), "icarus", TIMEOUT_S)
    assert (result.compared, result.mismatches) == (6 * 16 * 2 * 2, 0)
    assert result.cycles == pytest.approx(result.modelled, rel=0.1)


@pytest.mark.parametrize("simulator", ["icarus", pytest.param("verilator", marks=pytest.mark.slow)])
@pytest.mark.parametrize("mutant", [{"outstanding": 1}, {"stall": True}], ids=["one-read-in-flight", "stalling-beats"])
def test_a_slower_lane_is_caught(lut: ProjectImage, simulator: str, mutant: dict) -> None:
    """A reader with one burst in flight, or a beat former that idles a cycle after every beat, stays bit-exact
    and fails the cycle check."""
    job = lane_rtl.image_job(lut, _matmuls(lut, "lut")[0])
    result = lane_rtl.compare(job, TimingModel.for_image(lut), simulator, TIMEOUT_S, **mutant)
    assert result.mismatches == 0
    assert result.cycles > 1.1 * result.modelled


@pytest.mark.parametrize("engine, stall", [("lut", False), ("lut", True), ("sparse", False)])
def test_the_lane_lints_clean(lut: ProjectImage, sparse: ProjectImage, engine: str, stall: bool,
                              tmp_path: Path) -> None:
    if shutil.which("verilator") is None:
        pytest.skip("verilator not found on PATH")
    image = lut if engine == "lut" else sparse
    files = lane_rtl.sources(lane_rtl.image_job(image, _widest(image, engine)), stall=stall)
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    for top in ("llmc_lane_mm", "llmc_lane_bench"):
        result = subprocess.run(["verilator", "--lint-only", "-Wall", "--timing", "-Wno-DECLFILENAME", "--top-module",
                                 top, *files], cwd=tmp_path, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr[-3000:]
