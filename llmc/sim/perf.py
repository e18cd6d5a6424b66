"""Modelled performance of a whole run: prefill latency, decode tokens/s, per-layer utilisation, energy, roofline.

:func:`model_run` walks the programs a run executes (prefill chunked by bucket, then one decode
step per token at its growing position) through :class:`~llmc.backends.fpga.timing.TimingModel` without
computing any data, so it works on projects compiled with ``--shapes-only`` (a 7B model in
about a second).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from math import log10

from llmc.backends.fpga.isa import Instruction
from llmc.backends.fpga.timing import Cost, TimingModel, block_of
from llmc.errors import LlmcError
from llmc.templating import render


@dataclass(frozen=True)
class LayerFigures:
    """One linear layer (or attention of one block) in decode: time, bandwidth and compute utilisation."""

    name: str
    seconds: float
    hbm_bytes: int
    macs: int
    bandwidth_utilisation: float  # of the channels the layer streams from
    compute_utilisation: float  # of the matrix engine's peak MACs


@dataclass(frozen=True)
class RunFigures:
    prefill_tokens: int
    decode_tokens: int
    prefill_s: float
    decode_s: float  # all decode steps
    hbm_bytes: int  # per decode token, averaged
    hbm_utilisation: float  # decode, of the board's peak
    joules_per_token: float  # decode
    layers: list[LayerFigures]

    @property
    def ttft_s(self) -> float:
        """Time to first token: the prefill (its last logits give the first token)."""
        return self.prefill_s

    @property
    def decode_tokens_per_s(self) -> float:
        return self.decode_tokens / self.decode_s if self.decode_s else 0.0

    def to_json(self) -> dict:
        return {"prefill_tokens": self.prefill_tokens, "decode_tokens": self.decode_tokens,
                "prefill_ms": self.prefill_s * 1e3, "ttft_ms": self.ttft_s * 1e3,
                "decode_tokens_per_s": self.decode_tokens_per_s, "decode_ms_per_token":
                    self.decode_s / max(1, self.decode_tokens) * 1e3,
                "hbm_bytes_per_token": self.hbm_bytes, "hbm_utilisation": self.hbm_utilisation,
                "joules_per_token": self.joules_per_token,
                "layers": [vars(x) for x in self.layers]}


def model_run(timing: TimingModel, programs: dict[int, list[Instruction]], prefill: int, decode: int) -> RunFigures:
    """Model a prompt of ``prefill`` tokens followed by ``decode`` generated tokens."""
    if prefill < 1 or decode < 1:
        raise LlmcError("timing needs at least one prompt token and one decode token")
    pre, steps = timing.run(programs, prefill, decode)
    flat = [c for step in steps for c in step]
    return RunFigures(prefill, decode, timing.seconds(pre), timing.seconds(flat),
                      sum(c.hbm_bytes for c in flat) // decode, timing.hbm_utilisation(flat),
                      timing.joules(flat) / decode, layer_figures(timing, steps[len(steps) // 2]))


def layer_figures(timing: TimingModel, step: list[Cost]) -> list[LayerFigures]:
    """Per linear layer (named MMs; an expert projection's slots together) and per block's attention,
    from one decode step."""
    groups: dict[str, list[Cost]] = defaultdict(list)
    block = 0
    for c in step:
        if c.op in ("MM", "XMM") and c.layer:
            block = block_of(c.layer) if block_of(c.layer) is not None else block
            groups[c.layer].append(c)
        elif c.op in ("ATTN", "KVAPP"):
            groups[f"layers.{block}.attention"].append(c)
    weight_channels = len(set(timing.config.weight_channels))
    out = []
    for name, costs in groups.items():
        seconds = timing.seconds(costs)
        nbytes, macs = sum(c.hbm_bytes for c in costs), sum(c.macs for c in costs)
        channels = weight_channels if costs[0].op in ("MM", "XMM") else len(timing.config.kv_channels)
        peak_bytes = channels * timing.channel_peak_bytes_per_cycle * timing.hz * seconds
        peak_macs = timing.peak_macs_per_cycle * timing.hz * seconds
        out.append(LayerFigures(name, seconds, nbytes, macs, nbytes / peak_bytes if peak_bytes else 0.0,
                                macs / peak_macs if peak_macs else 0.0))
    return out


def roofline_svg(timing: TimingModel, figures: RunFigures, title: str) -> str:
    """A log-log roofline of the decode step: each layer at its arithmetic intensity (MAC ops per HBM
    byte) and attained ops/s, under the weight channels' bandwidth roof and the matrix engine's peak."""
    peak_ops = 2 * timing.peak_macs_per_cycle * timing.hz
    bandwidth = len(set(timing.config.weight_channels)) * timing.channel_peak_bytes_per_cycle * timing.hz
    points = [(2 * x.macs / x.hbm_bytes, 2 * x.macs / x.seconds, x.name) for x in figures.layers
              if x.hbm_bytes and x.macs and x.seconds]
    xs = [p[0] for p in points] + [peak_ops / bandwidth]
    x_lo, x_hi = 10 ** (int(log10(min(xs))) - 1), 10 ** (int(log10(max(xs))) + 2)
    y_hi = 10 ** (int(log10(peak_ops)) + 1)
    y_lo = y_hi / 1e5
    width, height, pad = 640, 420, 60

    def px(x: float, y: float) -> tuple[float, float]:
        u = (log10(x) - log10(x_lo)) / (log10(x_hi) - log10(x_lo))
        v = (log10(max(y, y_lo)) - log10(y_lo)) / (log10(y_hi) - log10(y_lo))
        return round(pad + u * (width - 2 * pad), 1), round(height - pad - v * (height - 2 * pad), 1)

    ridge = peak_ops / bandwidth
    roof = [px(x_lo, bandwidth * x_lo), px(ridge, peak_ops), px(x_hi, peak_ops)]
    return render("roofline.svg.j2",
        title=title, width=width, height=height, pad=pad, roof=roof,
        points=[(*px(x, y), name) for x, y, name in points],
        bandwidth_gbs=bandwidth / 1e9, peak_tops=peak_ops / 1e12,
        decode_tokens_per_s=figures.decode_tokens_per_s, x_lo=x_lo, x_hi=x_hi, y_lo=y_lo, y_hi=y_hi)
