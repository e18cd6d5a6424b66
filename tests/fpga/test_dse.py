"""Design-space exploration and the resource model: 7B on the U280, a tiny model everywhere, refusals."""

from __future__ import annotations

import dataclasses
import re

import pytest

from llmc.backends.fpga.design import PORT_WIDTHS, kernel_ports
from llmc.backends.fpga.dse import (
    CLOCK_STEP_MHZ,
    TIME_TOLERANCE,
    ModelNeeds,
    check_fits,
    clock_candidates,
    estimate_decode,
    explore,
)
from llmc.backends.fpga.resources import datapath_bits, dma, estimate, macs_per_dsp, matrix_engine
from llmc.backends.fpga.target import RESOURCE_KINDS, Resources, load_target
from llmc.backends.fpga.timing import TimingModel
from llmc.errors import LlmcError

# Llama-2-7B at W4 g128 (codes + fp16 scales) with an int8 KV cache and fp16 per-head scales
LLAMA_7B = ModelNeeds(
    layers=32,
    hidden=4096,
    intermediate=11008,
    heads=32,
    kv_heads=32,
    head_dim=128,
    vocab=32000,
    max_context=4096,
    weight_bits=(4,),
    sparse=None,
    lut_bits=(),
    weight_bytes=3_900_000_000,
    kv_bytes_per_token=2 * 32 * 4096 + 2 * 32 * 32 * 2,
)
TINY = ModelNeeds(
    layers=4,
    hidden=256,
    intermediate=768,
    heads=4,
    kv_heads=2,
    head_dim=64,
    vocab=1024,
    max_context=512,
    weight_bits=(4,),
    sparse=None,
    lut_bits=(),
    weight_bytes=3_000_000,
    kv_bytes_per_token=2 * 4 * 128 + 2 * 4 * 2 * 2,
)


def _check_plan(config, target, needs):
    lanes, kv = config.weight_channels, config.kv_channels
    assert all(0 <= c < target.memory.channels for c in [*lanes, *kv, config.io_channel])
    per = config.mm_lanes // len(set(lanes))  # lanes a channel: p * i .. p * i + p - 1 on channel i
    assert 1 <= per <= target.memory.ports_per_channel
    assert lanes == tuple(c for c in range(config.mm_lanes // per) for _ in range(per)) and len(set(kv)) == len(kv)
    shared = kv == tuple(sorted(set(lanes)))  # the cache striped over the weight channels, or on channels of its own
    assert shared or not set(kv) & set(lanes)
    assert config.io_channel not in (set(kv) - set(lanes))
    channels = len(set(lanes))
    lanes_ok = {target.memory.channels - 1, target.memory.channels}
    assert channels & (channels - 1) == 0 or channels % 4 == 0 or channels in lanes_ok
    assert channels * target.memory.channel_bytes >= needs.weight_bytes + (needs.kv_bytes if shared else 0)
    assert len(kv) * target.memory.channel_bytes >= needs.kv_bytes


def test_llama_7b_fits_u280_within_budget():
    u280 = load_target("u280")
    config, used = explore(u280, LLAMA_7B)
    assert config.target == "u280" and config.clock_mhz <= 250 and config.port_bits == 512
    assert max(used.fractions.values()) <= 0.8 and used.fits(0.8)
    _check_plan(config, u280, LLAMA_7B)
    # every channel streams weights, and the cache striped over them all; io shares the last one
    assert config.mm_lanes == 32 and config.kv_channels == config.weight_channels and config.io_channel == 31
    assert config.weight_bits == (4,) and (config.sparse_n, config.sparse_m) == (0, 0)
    assert (config.lut_lanes, config.lut_g, config.lut_bits) == (0, 4, ())
    assert config.max_hidden == 11008 and config.max_context == 4096
    assert config.buckets == (1, 16, 64) and config.program_memory == "DDR[0]"
    decode = estimate_decode(config, u280, LLAMA_7B)
    assert decode.balanced  # compute keeps up with the weight stream
    assert 10 < 1 / decode.total_s < 130  # below the 460 GB/s ceiling of about 130 tokens/s
    assert check_fits(config, u280).total == used.total


def test_the_cache_and_io_share_the_lanes_masters():
    u280 = load_target("u280")
    config, used = explore(u280, LLAMA_7B)
    ports = {p.name: p for p in kernel_ports(config) if p.kind == "m_axi"}
    assert (ports["kv5"].bundle, ports["kv5"].memory) == ("gmem_w5", "HBM[5]")
    assert (ports["io"].bundle, ports["io"].memory) == ("gmem_w31", "HBM[31]")
    assert len({p.bundle for p in ports.values()}) == 33  # the program's master and one per lane
    dedicated = dataclasses.replace(config, mm_lanes=24, weight_channels=tuple(range(24)),
                                    kv_channels=tuple(range(24, 31)), io_channel=31)
    shared_s, dedicated_s = (estimate_decode(c, u280, LLAMA_7B) for c in (config, dedicated))
    assert shared_s.weights_s < 0.8 * dedicated_s.weights_s and shared_s.kv_s < 0.3 * dedicated_s.kv_s


def test_the_kv_group_is_the_fastest_that_fits():
    """Of the groups of KV heads (divisors of 32) whose ping-pong buffers fit, the exploration keeps the one whose
    decode step at half the context the timing model times fastest: more than one group (the next group loads
    while one is scored), and none of the others that fit is faster."""
    u280 = load_target("u280")
    config, _ = explore(u280, LLAMA_7B)
    fields = {"heads": 32, "kv_heads": 32, "head_dim": 128, "window": 0}

    def cycles(c):
        return TimingModel.for_design(c, u280)._attention(fields, 1, LLAMA_7B.max_context // 2).cycles

    assert 1 < 32 // config.kv_group
    fitting = [dataclasses.replace(config, kv_group=g) for g in (1, 2, 4, 8, 16, 32)]
    fitting = [c for c in fitting if estimate(c, u280).fits(0.8)]
    assert config in fitting and all(cycles(config) <= cycles(c) for c in fitting)


def test_fp16_7b_is_refused_for_hbm_capacity():
    fp16 = dataclasses.replace(LLAMA_7B, weight_bits=(8,), weight_bytes=13_500_000_000)
    with pytest.raises(LlmcError) as e:
        explore(load_target("u280"), fp16)
    assert str(e.value) == (
        "model needs 13.6 GiB of HBM (weights 12.6 GiB + KV cache 1.0 GiB at 4096 tokens); u280 has 8.0 GiB"
    )


def test_the_v80_puts_two_lanes_on_each_channel():
    """One port reaches 12.8 GB/s of a V80 pseudo-channel's 23.3: the DSE gives each channel two lanes."""
    v80, u280 = load_target("v80"), load_target("u280")
    config, used = explore(v80, LLAMA_7B)
    _check_plan(config, v80, LLAMA_7B)
    assert config.mm_lanes == 2 * len(set(config.weight_channels)) >= 60 and used.fits(0.8)
    assert config.weight_channels[:4] == (0, 0, 1, 1)
    ports = [p for p in kernel_ports(config) if p.name.startswith("w")]
    assert [p.memory for p in ports[:3]] == ["HBM[0]", "HBM[0]", "HBM[1]"] and len({p.bundle for p in ports}) == config.mm_lanes
    v80_s = estimate_decode(config, v80, LLAMA_7B).total_s
    u280_s = estimate_decode(explore(u280, LLAMA_7B)[0], u280, LLAMA_7B).total_s
    assert v80_s < 0.75 * u280_s  # 1.8x the bandwidth; the SFU and each layer's first tile go with the clock
    three = dataclasses.replace(config, mm_lanes=96, weight_channels=tuple(c for c in range(32) for _ in range(3)))
    with pytest.raises(LlmcError, match="3 weight lanes on one channel; v80's channels serve 2 port"):
        check_fits(three, v80)


@pytest.mark.parametrize("name", ["kv260", "u280", "u55c", "v80"])
def test_tiny_model_fits(name):
    target = load_target(name)
    config, used = explore(target, TINY)
    assert used.fits(0.8)
    _check_plan(config, target, TINY)
    assert config.max_hidden == 768 and config.clock_mhz <= target.clock_mhz
    assert config.program_memory == {"u55c": "HBM[31]", "kv260": "HP0"}.get(name, "DDR[0]")


def test_budget_too_small_names_the_resource():
    with pytest.raises(LlmcError) as e:
        explore(load_target("u280"), LLAMA_7B, budget=0.01)
    message = str(e.value)
    assert "\n" not in message
    found = re.match(
        r"no accelerator configuration fits 1% of u280's usable resources: the smallest needs [\d,]+ (\w+) ", message
    )
    assert found and found.group(1) in RESOURCE_KINDS


def test_too_many_rows_run_out_of_uram():
    with pytest.raises(LlmcError, match=r"needs [\d,]+ uram .*lower max_rows\)$"):
        explore(load_target("u280"), LLAMA_7B, max_rows=1024)


def test_explore_is_deterministic():
    u280 = load_target("u280")
    first, used = explore(u280, LLAMA_7B)
    again, used_again = explore(u280, LLAMA_7B)
    assert first == again and first.to_json() == again.to_json() and used == used_again


def test_formats_reach_the_config():
    u280 = load_target("u280")
    mixed = dataclasses.replace(TINY, weight_bits=(3, 6, 3), sparse=(2, 4), lut_bits=(2,))
    config, _ = explore(u280, mixed, max_rows=8)
    assert config.weight_bits == (6, 3) and (config.sparse_n, config.sparse_m) == (2, 4)
    assert config.lut_bits == (2,) and config.lut_lanes > 0
    assert config.buckets == (1, 8)


def test_activation_buffers_are_the_models_and_cost_uram():
    u280 = load_target("u280")
    four, used_four = explore(u280, LLAMA_7B)
    six, used_six = explore(u280, dataclasses.replace(LLAMA_7B, act_buffers=6))
    assert (four.act_buffers, six.act_buffers) == (4, 6)
    per_buffer = used_four.units["activation buffers"].uram // 4
    assert used_six.units["activation buffers"].uram == 6 * per_buffer > 0


def test_datapath_and_packing():
    assert [datapath_bits(w) for w in (1, 3, 4, 5, 8)] == [4, 4, 4, 8, 8]
    assert macs_per_dsp((4, 3)) == 2 and macs_per_dsp((8, 4)) == 1
    config, _ = explore(load_target("u280"), LLAMA_7B)
    int8 = dataclasses.replace(config, weight_bits=(8,))
    assert matrix_engine(config).dsp * 2 == matrix_engine(int8).dsp == config.mm_lanes * config.mm_tile_k


def test_utilisation_table():
    u280 = load_target("u280")
    config, used = explore(u280, TINY)
    total = Resources()
    for unit in used.units.values():
        total += unit
    assert used.total == total == estimate(config, u280).total
    rows = used.table()
    assert rows[0] == ["unit", "LUT", "FF", "DSP", "BRAM36", "URAM"]
    assert [r[0] for r in rows[-3:]] == ["total", "usable", "used"] and len(rows) == len(used.units) + 4


@pytest.mark.parametrize(
    "change, message",
    [
        ({"sparse": (2, 5)}, "ModelNeeds.sparse: pattern 2:5 is not supported (N:M with M in 4, 8, 16 and 0 < N < M)"),
        ({"sparse": (4, 4)}, "ModelNeeds.sparse: pattern 4:4 is not supported (N:M with M in 4, 8, 16 and 0 < N < M)"),
        ({"hidden": 0}, "ModelNeeds.hidden must be a positive integer, got 0"),
        ({"weight_bits": (16,)}, "ModelNeeds.weight_bits: 16-bit weights are not supported (widths 1-8)"),
        ({"lut_bits": (6,)}, "ModelNeeds.lut_bits: 6-bit weights are not supported (widths 1-4)"),
        ({"heads": 3}, "ModelNeeds.heads (3) must be a multiple of kv_heads (2)"),
        ({"act_buffers": 0}, "ModelNeeds.act_buffers must be a positive integer, got 0"),
    ],
)
def test_bad_model_needs(change, message):
    with pytest.raises(LlmcError) as e:
        dataclasses.replace(TINY, **change)
    assert str(e.value) == message


@pytest.mark.parametrize(
    "change, message",
    [
        ({"target": "u55c"}, "accelerator config: target is 'u55c', not 'u280'"),
        ({"kv_channels": (0, 0)}, "accelerator config: a memory channel is assigned twice"),
        ({"io_channel": 40}, "accelerator config: channel 40 is outside u280's 32 channels"),
        ({"mm_lanes": 7}, "accelerator config: weight_channels has 32 entries for 7 mm_lanes"),
        ({"sfu_lanes": 4096}, "accelerator config does not fit 100% of u280: lut "),
    ],
)
def test_check_fits_refuses(change, message):
    u280 = load_target("u280")
    config, _ = explore(u280, LLAMA_7B)
    with pytest.raises(LlmcError, match=re.escape(message)):
        check_fits(dataclasses.replace(config, **change), u280)


@pytest.mark.parametrize("name", ["u280", "v80", "kv260"])
def test_port_width_and_clock_are_the_slowest_that_keep_decode_as_fast(name):
    """The exploration keeps the lowest clock on its grid, then the narrowest port, whose decode is within the
    tolerance of the fastest over every port width and clock: nothing faster was passed over, and no lower
    clock would do."""
    target = load_target(name)
    config, _ = explore(target, LLAMA_7B if name != "kv260" else TINY)
    needs = LLAMA_7B if name != "kv260" else TINY
    clocks = clock_candidates(target.clock_mhz)
    assert clocks[0] == target.clock_mhz and target.clock_mhz / 2 <= clocks[-1] < target.clock_mhz / 2 + CLOCK_STEP_MHZ
    assert all(a - b == CLOCK_STEP_MHZ for a, b in zip(clocks, clocks[1:]))
    assert config.clock_mhz in clocks and config.port_bits in PORT_WIDTHS

    def decode(bits, clock):
        return estimate_decode(dataclasses.replace(config, port_bits=bits, clock_mhz=clock), target, needs)

    fastest = min(decode(b, c).total_s for b in PORT_WIDTHS for c in clocks)
    assert decode(config.port_bits, config.clock_mhz).total_s <= fastest * (1 + TIME_TOLERANCE)
    balanced = decode(config.port_bits, config.clock_mhz).balanced
    for bits, clock in ((b, c) for b in PORT_WIDTHS for c in clocks if c < config.clock_mhz):
        lower = decode(bits, clock)
        assert lower.total_s > fastest * (1 + TIME_TOLERANCE) or (balanced and not lower.balanced)


def test_port_width_follows_what_the_memory_side_carries():
    """HBM ports reach 13-14 GB/s a channel: at 225-300 MHz only a 512-bit port (64 B a cycle) keeps up. A KV260
    HP port carries 5.3 GB/s (128 bits at 333 MHz) over a DDR4 its four ports share: a narrower port streams as
    fast and its master buffers take a quarter of the BRAM."""
    assert explore(load_target("u280"), LLAMA_7B)[0].port_bits == 512
    kv260 = load_target("kv260")
    config, _ = explore(kv260, TINY)
    assert config.port_bits < 512
    wide = dataclasses.replace(config, port_bits=512)
    assert dma(config).bram36 < dma(wide).bram36
    assert estimate_decode(config, kv260, TINY).weights_s == pytest.approx(estimate_decode(wide, kv260, TINY).weights_s)


def test_a_given_clock_is_kept_and_a_bad_port_width_refused():
    u280 = load_target("u280")
    config, _ = explore(u280, LLAMA_7B, clock_mhz=240)
    assert config.clock_mhz == 240
    with pytest.raises(LlmcError, match=r"^accelerator config: port_bits 1024 is not one of 128, 256, 512$"):
        check_fits(dataclasses.replace(config, port_bits=1024), u280)
