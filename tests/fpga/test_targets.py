"""Boards as data: the bundled targets' figures, user board files and one-line errors for bad ones."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from llmc.backends.fpga.target import TARGETS_DIR, Resources, list_targets, load_target
from llmc.errors import LlmcError

GIB = 2**30


def test_bundled_targets_are_listed():
    assert list_targets() == ["kv260", "u280", "u55c", "v80"]


@pytest.mark.parametrize(
    "name, part, platform, clock, kind, channels, gib, resources, slrs",
    [
        (
            "u280",
            "xcu280-fsvh2892-2L-e",
            "xilinx_u280_gen3x16_xdma_1_202211_1",
            250,
            "hbm",
            32,
            8,
            Resources(1_303_680, 2_607_360, 9_024, 2_016, 960),
            3,
        ),
        (
            "u55c",
            "xcu55c-fsvh2892-2L-e",
            "xilinx_u55c_gen3x16_xdma_3_202210_1",
            300,
            "hbm",
            32,
            16,
            Resources(1_303_680, 2_607_360, 9_024, 2_016, 960),
            3,
        ),
        (
            "kv260",
            "xck26-sfvc784-2LV-c",
            "xilinx_kv260_base_202420_1",
            200,
            "ddr",
            4,
            3,
            Resources(117_120, 234_240, 1_248, 144, 64),
            1,
        ),
        (
            "v80",
            "xcv80-lsva4737-2MHP-e-S",
            "amd_v80_gen5x8_24.1",
            300,
            "hbm",
            32,
            32,
            Resources(2_574_208, 5_148_416, 10_848, 3_741, 1_925),  # DS950, XCVH1782
            3,
        ),
    ],
)
def test_bundled_target_figures(name, part, platform, clock, kind, channels, gib, resources, slrs):
    t = load_target(name)
    assert (t.name, t.part, t.platform, t.clock_mhz, t.slrs) == (name, part, platform, clock, slrs)
    assert (t.memory.kind, t.memory.channels, t.memory_bytes) == (kind, channels, gib * GIB)
    assert t.resources == resources
    assert t.usable == t.resources - t.shell
    assert all(0 < getattr(t.usable, k) <= getattr(t.resources, k) for k in ("lut", "ff", "dsp", "bram36", "uram"))


def test_hbm_figures():
    u280 = load_target("u280")
    assert u280.memory.bandwidth_gbs == 460 and u280.memory.efficiency == 0.911
    assert u280.memory.channel_gbs == pytest.approx(460 * 0.911 / 32)
    assert (u280.memory.latency_ns, u280.memory.port_gbs, u280.memory.ports_per_channel) == (215, 14.4, 1)
    v80 = load_target("v80")
    assert v80.memory.channel_peak_gbs == pytest.approx(25.6) and v80.memory.ports_per_channel == 2
    assert u280.ddr.banks == 2 and load_target("u55c").ddr.banks == 0
    assert load_target("kv260").memory.bandwidth_gbs == pytest.approx(19.2)


def _write(tmp_path: Path, data: object, text: str | None = None) -> str:
    path = tmp_path / "board.yaml"
    path.write_text(yaml.safe_dump(data) if text is None else text)
    return str(path)


def _u280() -> dict:
    return yaml.safe_load((TARGETS_DIR / "u280.yaml").read_text())


def test_user_board_file(tmp_path):
    data = _u280()
    data["name"], data["clock_mhz"] = "myboard", 225
    data["memory"]["channels"] = 16
    t = load_target(_write(tmp_path, data))
    assert (t.name, t.clock_mhz, t.memory_bytes) == ("myboard", 225, 4 * GIB)
    yml = tmp_path / "board.yml"
    yml.write_text(yaml.safe_dump(data))
    assert load_target(str(yml)) == t


_DELETE = object()


def _set(data: dict, dotted: str, value: object) -> None:
    *parents, key = dotted.split(".")
    for p in parents:
        data = data[p]
    if value is _DELETE:
        del data[key]
    else:
        data[key] = value


def test_kv260_connects_its_ports_to_the_ps_hp_ports(tmp_path):
    """A Zynq MPSoC board names its DDR ports as its platform does (HP0..HP3), never HBM[...], and
    has no SLR to place the kernel in."""
    from llmc.backends.fpga.design import kernel_ports
    from llmc.backends.fpga.dse import ModelNeeds, explore

    board = load_target("kv260")
    needs = ModelNeeds(layers=2, hidden=256, intermediate=512, heads=4, kv_heads=2, head_dim=64, vocab=1024,
                       max_context=256, weight_bits=(8,), sparse=None, lut_bits=(), weight_bytes=1 << 20,
                       kv_bytes_per_token=1024)
    config, _ = explore(board, needs)
    banks = {p.memory for p in kernel_ports(config) if p.kind == "m_axi"}
    assert banks <= {"HP0", "HP1", "HP2", "HP3"} and config.program_memory == "HP0"
    assert all(p.memory.startswith("HBM[") for p in kernel_ports(explore(load_target("u280"), needs)[0])[1:]
               if p.kind == "m_axi")


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("resources.dsp", -1, "resources.dsp must be a positive integer"),
        ("resources.dsp", 9.5, "resources.dsp must be a positive integer"),
        ("slrs", True, "slrs must be a positive integer"),
        ("part", _DELETE, "part is missing"),
        ("memory", _DELETE, "memory is missing"),
        ("memory.channel_bytes", _DELETE, "memory.channel_bytes is missing"),
        ("clock_mhz", "fast", "clock_mhz must be a positive number"),
        ("clock_mhz", 0, "clock_mhz must be a positive number"),
        ("memory.efficiency", 1.5, "memory.efficiency must be a positive number at most 1"),
        ("memory.latency_ns", _DELETE, "memory.latency_ns is missing"),
        ("memory.ports_per_channel", 1.5, "memory.ports_per_channel must be a positive integer"),
        ("memory.kind", "sram", "memory.kind must be one of hbm, ddr"),
        ("platform", "", "platform must be a non-empty string"),
        ("resources", "lots", "resources must be a mapping of fields"),
        ("shell.uram", -1, "shell.uram must be a non-negative integer"),
        ("shell.lut", 2_000_000, "shell.lut must be smaller than resources.lut"),
        ("ddr.bandwidth_gbs", 0, "ddr.bandwidth_gbs must be positive when ddr.banks > 0"),
        ("memory.bank", "SRAM{}", "memory.bank 'SRAM{}' must name a memory bank with {} for the channel number "
                                  "(e.g. HBM[{}], DDR[{}], HP{})"),
        ("ddr.bank", "DDR[{0}", "ddr.bank 'DDR[{0}' must name a memory bank with {} for the channel number "
                                "(e.g. HBM[{}], DDR[{}], HP{})"),
        (
            "memory.chanels",
            32,
            "memory.chanels is not a known field (expected: kind, channels, channel_bytes, bandwidth_gbs, efficiency, "
            "latency_ns, port_gbs, ports_per_channel, bank)",
        ),
    ],
)
def test_bad_board_files(tmp_path, field, value, message):
    data = _u280()
    _set(data, field, value)
    path = _write(tmp_path, data)
    with pytest.raises(LlmcError) as e:
        load_target(path)
    assert str(e.value) == f"{path}: {message}"


@pytest.mark.parametrize(
    "text, message",
    [
        ("name: [u280\n", "not valid YAML at line 2"),
        ("- u280\n", "the file must be a mapping of fields"),
    ],
)
def test_unreadable_board_files(tmp_path, text, message):
    path = _write(tmp_path, None, text)
    with pytest.raises(LlmcError) as e:
        load_target(path)
    assert str(e.value) == f"{path}: {message}"


def test_unknown_target_and_missing_file(tmp_path):
    with pytest.raises(LlmcError, match=r"^unknown target 'u999' \(known: kv260, u280, u55c, v80; or a \.yaml path\)$"):
        load_target("u999")
    missing = str(tmp_path / "none.yaml")
    with pytest.raises(LlmcError, match="no such target file$"):
        load_target(missing)


def test_a_kv260_design_with_narrow_ports_runs_bit_exact_in_csim(tiny_llmc, tmp_path, gxx_ap_types, capsys):
    """The exploration gives the KV260's HP ports (128 bits at 333 MHz, UG1085) narrower kernel ports than
    the engines' 512-bit word; C-simulation assembles each word from the port's beats, matches the interpreter bit
    for bit, and its cycle account (a word every 512 / port_bits cycles at least) stays within 10% of the model."""
    import json

    import llmc
    from llmc.backends.fpga.flow import compile_project
    from llmc.cli import main as cli

    model = llmc.load(tiny_llmc)
    out = tmp_path / "kv260"
    d = compile_project(model.module, "kv260", out, tokenizer_json=model.tokenizer_json, max_context=128)
    assert d.config.port_bits < 512
    assert f"#define LLMC_PORT_BITS {d.config.port_bits} " in (out / "include" / "llmc_accel.h").read_text()
    capsys.readouterr()
    assert cli(["verify", str(out), "--levels", "interpreter,csim,cycles", "--decode", "2", "--json"]) == 0
    levels = {level["level"]: level for level in json.loads(capsys.readouterr().out)}
    assert levels["csim"]["mismatches"] == 0 and levels["csim"]["compared"] > 0
    assert levels["cycles"]["mismatches"] == 0 and levels["cycles"]["compared"] > 0


def test_compile_refuses_a_bad_clock(tiny_llmc, tmp_path, capsys):
    """``llmc compile --clock-mhz`` (which pins the clock the exploration would choose: tests/test_sweep.py) outside
    (0, 1000] MHz is one line, exit 2, nothing written."""
    from llmc.cli import main as cli

    assert cli(["compile", str(tiny_llmc), "--clock-mhz", "0", "-o", str(tmp_path / "b")]) == 2
    assert capsys.readouterr().err.strip() == "llmc: error: --clock-mhz must be in (0, 1000], got 0"
    assert not (tmp_path / "b").exists()
