"""``llmc calibrate``: the generated HBM read benchmark on the design's own weight ports, C-simulated
with its checksums checked against the pattern's; its Vitis sources; the card path refused in one
line without a card; and the board file a measurement would write."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from llmc.backends.fpga.design import READ_BURST, READS_OUTSTANDING
from llmc.backends.fpga.target import load_target
from llmc.cli import main
from llmc.deploy.calibrate import WORD_BITS, bench_ports, calibrated_target, expected_sums
from llmc.sim.image import ProjectImage


def test_expected_sums_are_the_patterns() -> None:
    for ports, beats in ((3, 1), (2, 5), (1, 64)):
        want = []
        for p in range(ports):
            acc = 0
            for i in range(beats):
                for j in range(WORD_BITS // 64):
                    acc ^= (p << 48) ^ (i << 8) ^ j
            want.append(acc)
        assert expected_sums(ports, beats) == want


def test_the_benchmark_c_simulates_on_every_weight_port(engine_projects, tmp_path: Path, capsys) -> None:
    project = engine_projects["w4g128"]
    sources = tmp_path / "bench"
    assert main(["calibrate", str(project), "--beats", "300", "--sources", str(sources), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    image = ProjectImage.load(project, weights=False)
    assert result == {"device": "sim", "ports": len(image.config.weight_channels), "beats": 300, "checksums": "match",
                      "sources": ["Makefile", "bench_main.cpp", "connectivity.cfg", "hbm_bench.cpp"]}
    links = [line for line in (sources / "connectivity.cfg").read_text().splitlines() if line.startswith("sp=")]
    assert links[:-1] == [f"sp=llmc_hbm_bench_1.w{i}:HBM[{c}]" for i, c in enumerate(image.config.weight_channels)]
    assert f"max_read_burst_length = {READ_BURST} num_read_outstanding = {READS_OUTSTANDING}" in (sources / "hbm_bench.cpp").read_text()
    assert (sources / "llmc-manifest.json").is_file()


def test_the_card_path_fails_in_one_line_without_a_card(engine_projects, tmp_path: Path, capsys) -> None:
    project = engine_projects["w4g128"]
    assert main(["calibrate", str(project), "--device", "pynq", "--xclbin", str(tmp_path / "b.xclbin"),
                 "-o", str(tmp_path / "board.yaml")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("llmc: error: pynq: ") and "\n" not in err and not (tmp_path / "board.yaml").exists()
    assert main(["calibrate", str(project), "--device", "pynq"]) == 2
    assert "needs --xclbin" in capsys.readouterr().err


def test_a_measurement_becomes_a_board_file(engine_projects, tmp_path: Path) -> None:
    image = ProjectImage.load(engine_projects["w4g128"], weights=False)
    ports = len(bench_ports(image))
    peak = ports * image.target.memory.bandwidth_gbs / image.target.memory.channels * 1e9
    target = calibrated_target(image.target, 0.91 * peak, ports)
    assert target.memory.efficiency == pytest.approx(0.91)
    path = tmp_path / "u280-measured.yaml"
    path.write_text(yaml.safe_dump(target.to_json(), sort_keys=False))
    assert load_target(str(path)) == target
