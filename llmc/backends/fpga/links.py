"""How a cluster's cards exchange activations, and the modelled time of a cluster run.

Between two segments the host (XRT) waits for every card's kernel call, reads each value sent
from its card's io and writes it into the io of every card that receives it, then starts the
next calls: what the generated hosts and runtimes do. Its figures are public measurements:

- a kernel call (``xrt::run`` start to ``wait``): 50 us, the low end of the 50-100 us measured
  on a U55C with Vitis 2022.1 (Xilinx/XRT issue #8687; 16-56 us per start in #6601);
- a buffer sync over PCIe: 19 us fixed (``xrt::bo::sync`` of a small buffer, XRT 2021.2,
  Xilinx/XRT issue #6590) plus the bytes at 12.47 GB/s (the gen3x16 platform's host transfer
  rate in Vitis_Accel_Examples host_memory_bandwidth_xrt, U250 gen3x16 xdma).

The ``qsfp`` link is **modelled only** (the generated kernel does not drive the transceivers): a
ring over the U280's two QSFP28 ports (100 Gb/s, DS963) with Aurora 64B/66B, 64/66 of the line
rate as payload and 55 user-clock cycles per hop at 402.8 MHz (PG074's latency table; the user
clock of a 25.78 Gb/s lane is its rate / 64), cut-through, the kernel waiting on the link
instead of returning.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from llmc.backends.fpga.design import bucket_for, chunks
from llmc.backends.fpga.isa import Instruction
from llmc.backends.fpga.timing import Cost, TimingModel

CLUSTER_FILE = "cluster.json"  # a cluster folder's manifest: cards, segments, transfers, modelled runs


@dataclass(frozen=True)
class Transfer:
    """Slot ``slot`` (``cols`` int32 per row) sent by card ``sender`` in ``segment``, copied after that
    segment to the same place (``offset`` in the mail region) in the io of each receiver."""

    slot: int
    sender: int
    receivers: tuple[int, ...]
    segment: int
    offset: int
    cols: int

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Transfer:
        return cls(int(d["slot"]), int(d["sender"]), tuple(int(r) for r in d["receivers"]), int(d["segment"]),
                   int(d["offset"]), int(d["cols"]))

    def to_json(self) -> dict[str, Any]:
        return {"slot": self.slot, "sender": self.sender, "receivers": list(self.receivers), "segment": self.segment,
                "offset": self.offset, "cols": self.cols}


@dataclass(frozen=True)
class Link:
    kind: str
    call_s: float  # per segment: starting and waiting for the cards' kernel calls
    fixed_s: float  # per copy (host) or per hop (ring)
    gbs: float  # payload bandwidth
    ring: bool
    generated: bool  # whether the generated hosts and kernels use this link

    def transfer_seconds(self, nbytes: int, sender: int, receivers: tuple[int, ...], cards: int) -> float:
        if not receivers:
            return 0.0
        if self.ring:  # cut-through around the ring to the farthest receiver
            hops = max((r - sender) % cards for r in receivers)
            return hops * self.fixed_s + nbytes / (self.gbs * 1e9)
        copies = 1 + len(receivers)  # one read from the sender, one write per receiver
        return copies * (self.fixed_s + nbytes / (self.gbs * 1e9))

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


LINKS = {
    "host": Link("host", 50e-6, 19e-6, 12.47, ring=False, generated=True),
    "qsfp": Link("qsfp", 0.0, 55 / 402.8e6, 100 * 64 / 66 / 8, ring=True, generated=False),
}


def segment_seconds(timing: TimingModel, costs: list[Cost]) -> list[float]:
    """A card's modelled seconds per segment of one program run (its costs cut at each SYNC)."""
    out = [0.0]
    for cost in costs:
        if cost.op == "SYNC":
            out.append(0.0)
        else:
            out[-1] += cost.cycles / timing.hz
    return out


def compute_seconds(cards: Sequence[tuple[TimingModel, list[Instruction]]], segments: int, rows: int,
                    start_pos: int) -> float:
    """One round of kernel calls of a cluster's cards (each card's timing model and program) on
    ``rows`` rows at ``start_pos``, each segment as long as its slowest card, the link left out."""
    per_card = [segment_seconds(timing, timing.program(program, rows, start_pos)) for timing, program in cards]
    return sum(max(card[s] for card in per_card) for s in range(segments))


def link_seconds(link: Link, transfers: Sequence[Transfer], segments: int, cards: int, rows: int) -> float:
    """What a round of ``rows`` rows spends on ``link``: a kernel call per segment and every transfer."""
    return sum(link.transfer_seconds(rows * t.cols * 4, t.sender, t.receivers, cards) for t in transfers) + \
        segments * link.call_s


def cluster_runs(cards: Sequence[tuple[TimingModel, dict[int, list[Instruction]]]], transfers: Sequence[Transfer],
                 segments: int, links: Mapping[str, Link], prefill: int, decode: int) -> dict[str, dict[str, float | bool]]:
    """The modelled prompt and decode of a cluster (each card's timing model and programs) over
    each of ``links``: ``prefill`` tokens (chunked as the runtimes cut them) then ``decode`` tokens
    one at a time. The cards' time is modelled once, the links' added to it."""

    def rounds(total: int, first: int, one_at_a_time: bool) -> list[tuple[int, float]]:
        cuts = [(first + i, 1) for i in range(total)] if one_at_a_time else \
            [(first + start, rows) for _, start, rows in chunks(total, lambda rows: bucket_for(cards[0][1], rows))]
        return [(rows, compute_seconds([(t, p[bucket_for(p, rows)]) for t, p in cards], segments, rows, start))
                for start, rows in cuts]

    pre, steps = rounds(prefill, 0, False), rounds(decode, prefill, True)
    out = {}
    for kind, link in links.items():
        moving = [link_seconds(link, transfers, segments, len(cards), rows) for rows, _ in steps]
        total = sum(c for _, c in steps) + sum(moving)
        out[kind] = {"prefill_tokens": prefill, "decode_tokens": decode,
                     "prefill_ms": sum(c + link_seconds(link, transfers, segments, len(cards), rows)
                                       for rows, c in pre) * 1e3,
                     "ms_per_token": total / decode * 1e3, "tokens_per_s": decode / total,
                     "link_share": sum(moving) / total, "generated": link.generated}
    return out
