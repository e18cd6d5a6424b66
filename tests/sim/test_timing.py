"""The timing model: per-instruction costs follow the engine parameters, runs aggregate them, and
every simulator run is bounded in time."""

from __future__ import annotations

import dataclasses
import json
import time

import pytest

from llmc.backends.fpga.design import AcceleratorConfig, bucket_for, chunks
from llmc.backends.fpga.isa import Instruction, mm_flags
from llmc.backends.fpga.target import load_target
from llmc.backends.fpga.timing import TimingModel, run_lengths
from llmc.cli import main
from llmc.errors import LlmcError
from llmc.sim.ladder import Deadline
from llmc.sim.perf import model_run

CONFIG = AcceleratorConfig(
    target="u280", clock_mhz=250, mm_lanes=8, mm_tile_n=32, mm_tile_k=128, weight_bits=(8, 4), sparse_n=2,
    sparse_m=4, lut_lanes=256, lut_g=4, lut_bits=(2,), sfu_lanes=16, max_rows=64, max_hidden=1024,
    max_context=256, act_buffers=4, weight_channels=tuple(range(8)), kv_channels=(8, 9), io_channel=10,
    buckets=(1, 16, 64))


ATTN = Instruction("ATTN", 2, 1, 0, {"heads": 8, "kv_heads": 2, "head_dim": 64, "scale": 0.125, "k_codes_off": 0,
                                     "k_scales_off": 0, "v_codes_off": 0, "v_scales_off": 0, "window": 0})


def model() -> TimingModel:
    return TimingModel.for_design(CONFIG, load_target("u280"))


def mm(n: int = 1024, k: int = 1024, bits: int = 4, engine: str = "dsp", sparse=None, tile_bytes: int = 0,
       row_block: int = 1) -> Instruction:
    tiles = n // CONFIG.mm_tile_n
    nbytes = tile_bytes or CONFIG.mm_tile_n * k * bits // 8
    return Instruction("MM", 1, 0, 0, {"n": n, "k": k, "group": 128, "shift": 10, "io_off": 0,
                                       "flags": mm_flags(bits, engine, False, False, False, sparse, False),
                                       "weight_off": 0, "tile_bytes": nbytes, "row_block": row_block,
                                       "tiles": tiles})


def test_decode_matmul_is_bound_by_the_weight_stream():
    t = model()
    small, large = t.cost(mm(bits=4), 1, 0), t.cost(mm(bits=8), 1, 0)
    assert small.memory_cycles > small.compute_cycles
    assert large.memory_cycles == pytest.approx(2 * small.memory_cycles)
    per_channel = min(512 / 8, 14.4e9 / 250e6, 460e9 / 32 * 0.911 / 250e6)  # the channel's measured rate binds
    assert small.memory_cycles == pytest.approx(1024 * 1024 / 2 / 8 / per_channel)


def test_prefill_matmul_is_compute_bound_and_sparsity_skips_zeros():
    t = model()
    dense = t.cost(mm(bits=8, row_block=64), 64, 0)
    sparse = t.cost(mm(bits=8, engine="sparse", sparse=(2, 4), row_block=64), 64, 0)
    assert dense.compute_cycles > dense.memory_cycles
    assert dense.macs == 64 * 1024 * 1024 and sparse.macs == dense.macs // 2
    # a lane's MAC array takes one word of int8 codes (64) per cycle and row; its sparse chain mm_tile_k
    # activations a beat (half of them kept), once the tile is in its buffer
    lane_tiles = 1024 // CONFIG.mm_tile_n // CONFIG.mm_lanes
    assert dense.compute_cycles == lane_tiles * CONFIG.mm_tile_n * 1024 // 64 * 64  # (these tiles hold codes only)
    assert sparse.compute_cycles < 0.6 * dense.compute_cycles


def test_row_blocks_reread_weights():
    t = model()
    assert t.cost(mm(row_block=16), 64, 0).hbm_bytes == 4 * t.cost(mm(row_block=64), 64, 0).hbm_bytes


def test_a_sliding_window_bounds_what_attention_reads():
    t = model()
    windowed = Instruction("ATTN", 2, 1, 0, {**ATTN.fields, "window": 64})
    full, bounded = t.cost(ATTN, 1, 2000), t.cost(windowed, 1, 2000)
    assert bounded.hbm_bytes * 20 < full.hbm_bytes and bounded.macs * 20 < full.macs
    assert t.cost(windowed, 1, 10).hbm_bytes == t.cost(ATTN, 1, 10).hbm_bytes  # inside the window nothing changes


def test_attention_grows_with_the_context():
    t = model()
    early, late = t.cost(ATTN, 1, 10), t.cost(ATTN, 1, 200)
    assert late.cycles > early.cycles and late.hbm_bytes > early.hbm_bytes


def test_the_cache_streams_from_every_kv_channel():
    two = model()
    eight = TimingModel.for_design(dataclasses.replace(CONFIG, kv_channels=CONFIG.weight_channels), load_target("u280"))
    narrow, wide = two.cost(ATTN, 1, 200), eight.cost(ATTN, 1, 200)
    assert narrow.hbm_bytes == wide.hbm_bytes
    latency = 2 * two.latency  # once per KV head
    # 201 rows: 101 on the fuller of two channels, 26 of eight; per row and KV head four transactions (a word
    # of K, of V and of each scale), each at an unrelated address: the read gap, or the word if longer
    row = 4 * max(two.word_cycles, two.port.read_gap)
    assert narrow.memory_cycles - latency == pytest.approx(2 * 101 * row)
    assert wide.memory_cycles - latency == pytest.approx(2 * 26 * row)


def test_kv_heads_loaded_together_stream_their_rows():
    """With both KV heads loaded together their codes are whole cache rows: each of the four reads (K and V codes,
    K and V scales) is one stream, a transaction gap once, then words back to back."""
    one, both = model(), TimingModel.for_design(dataclasses.replace(CONFIG, kv_group=2), load_target("u280"))
    single, grouped = one.cost(ATTN, 1, 200), both.cost(ATTN, 1, 200)
    assert single.hbm_bytes == grouped.hbm_bytes and single.compute_cycles == grouped.compute_cycles
    port = both.port
    codes = port.read_gap + 100 * 2 * port.word_cycles  # 101 rows of 128 bytes: two words each
    scales = port.read_gap + 100 * port.word_cycles  # 101 rows of 8 bytes: a word each
    assert grouped.memory_cycles == pytest.approx(both.latency + 2 * codes + 2 * scales)
    assert grouped.memory_cycles < 0.4 * single.memory_cycles


def test_a_slower_clock_or_narrower_port_lowers_throughput():
    base = model()
    narrow = TimingModel.for_design(CONFIG, load_target("u280"), clock_mhz=225, port_bits=256)
    assert narrow.port_bytes_per_cycle < base.port_bytes_per_cycle
    assert narrow.cost(mm(), 1, 0).cycles / narrow.hz > base.cost(mm(), 1, 0).cycles / base.hz


def test_chunks_follow_the_buckets():
    def pick(rows: int) -> int:
        return bucket_for((1, 16, 64), rows)

    assert list(chunks(1, pick)) == [(1, 0, 1)]
    assert list(chunks(13, pick)) == [(16, 0, 13)]
    assert list(chunks(150, pick)) == [(64, 0, 64), (64, 64, 64), (64, 128, 22)]


def test_model_run_aggregates_prefill_and_decode():
    programs = {b: [mm(row_block=b), Instruction("HALT")] for b in CONFIG.buckets}
    figures = model_run(model(), programs, 20, 4)
    assert figures.prefill_s > 0 and figures.decode_tokens_per_s > 0
    assert figures.ttft_s == figures.prefill_s
    assert 0 < figures.hbm_utilisation < 1 and figures.joules_per_token > 0
    with pytest.raises(LlmcError, match="exceed the compiled context"):
        model_run(model(), programs, 250, 10)


def test_deadline_fails_a_run_past_its_limit():
    deadline = Deadline("rtl", 0.01)
    time.sleep(0.02)
    with pytest.raises(LlmcError, match="time limit"):
        deadline.check()


def test_timing_only_on_a_project(engine_projects, capsys):
    out = engine_projects["w4g128"]
    assert main(["simulate", str(out), "--timing-only", "--prefill", "32", "--decode", "16", "--json"]) == 0
    modelled = json.loads(capsys.readouterr().out)["modelled"]
    assert modelled["prefill_tokens"] == 32 and modelled["decode_tokens"] == 16
    assert modelled["decode_tokens_per_s"] > 0 and modelled["ttft_ms"] == modelled["prefill_ms"]
    assert any(x["name"].endswith("q_proj.weight") for x in modelled["layers"])
    assert main(["simulate", str(out), "--timing-only", "--prefill", "0"]) == 2
    assert main(["simulate", str(out), "--timing-only", "--json"]) == 0  # the run llmc compile reports
    default = json.loads(capsys.readouterr().out)["modelled"]
    report = json.loads((out / "report.json").read_text())["modelled_decode"]
    assert report["tokens_per_s"] == pytest.approx(default["decode_tokens_per_s"], rel=1e-12)
    assert (report["prefill_tokens"], report["decode_tokens"]) == (default["prefill_tokens"], default["decode_tokens"])


def test_a_run_is_cut_to_the_compiled_context():
    assert run_lengths(4096) == (128, 128)
    assert run_lengths(200) == (100, 100)
    assert run_lengths(64) == (32, 32)
    assert run_lengths(300, 250, 10) == (250, 10)
    assert run_lengths(200, 250, 10) == (100, 10)


def test_a_call_reads_its_ids_and_writes_its_logits():
    t = model()
    logits = Instruction("MM", 1, 0, 0, {**mm().fields, "flags": mm_flags(4, "dsp", False, False, False, None, True)})
    costs = t.program([mm(), logits, Instruction("HALT")], 3, 0)
    assert [c.op for c in costs] == ["IO", "MM", "MM", "IO"]
    assert costs[0].hbm_bytes == 3 * 4 and costs[-1].hbm_bytes == 3 * 1024 * 4
    assert costs[1].cycles == t.cost(mm(), 3, 0).cycles  # nothing carries over between instructions


def test_the_loaders_read_the_next_matmuls_first_tiles_ahead():
    t = model()
    alone = t.cost(mm(), 1, 0)
    _, first, second = t.program([mm(), mm(), Instruction("HALT")], 1, 0)
    assert first.cycles == alone.cycles and second.cycles < alone.cycles  # read while the lanes finished
    act = Instruction("ACT", 1, 0, 0, {"cols": 4096, "fn": 0})
    *_, after_sfu = t.program([mm(), act, mm()], 1, 0)
    assert after_sfu.cycles < second.cycles  # the SFU's work hides more of it
    *_, after_attention = t.program([mm(), ATTN, mm()], 1, 0)
    assert after_attention.cycles == alone.cycles  # attention streams the cache over the same channels


def test_a_kv_group_loads_while_the_group_before_is_scored():
    """One KV head at a time (two groups), the second group's loads overlap the first group's scores; with both
    heads in one group nothing overlaps: loads, then scores."""
    split, whole = model(), TimingModel.for_design(dataclasses.replace(CONFIG, kv_group=2), load_target("u280"))
    for t in (split, whole):
        cost = t.cost(ATTN, 1, 200)
        serial = cost.memory_cycles + cost.compute_cycles + 16  # INSTR_OVERHEAD
        if t is whole:
            assert cost.cycles == pytest.approx(serial)
        else:  # the first group's loads, the larger of the second's loads and the first's scores, its scores
            load, score = cost.memory_cycles / 2, (cost.compute_cycles - split._quant8(8 * 64, 64)) / 2
            assert cost.cycles == pytest.approx(serial - min(load, score))


def test_the_kv_cache_row_is_written_as_its_heads_are_quantised():
    """KVAPP writes each word of a row's codes once the head holding it is quantised: the row takes the SFU's
    passes and the last head's words, not the passes and then every word."""
    t = model()
    kvapp = Instruction("KVAPP", 0, 1, 0, {"codes_off": 0, "scales_off": 0, "kv_heads": 8, "head_dim": 128})
    cost = t.cost(kvapp, 1, 0)
    quantise = t._quant8(8 * 128, 128)
    codes = max(quantise + 2 * t.word_cycles, t._quant8(128, 128) + 16 * t.word_cycles)
    assert cost.cycles == pytest.approx(t.latency + codes + t._seek(8 * 4, write=True) + 16)
    assert cost.cycles < t.latency + quantise + t._seek(8 * 128, write=True) + t._seek(8 * 4, write=True) + 16
