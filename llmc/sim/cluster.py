"""A cluster folder (``llmc compile --cards N``) as the simulators read it, and the ISS of every
card run as the host runs the cards: segment by segment, moving what the cards sent in between."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from llmc.backends.fpga.design import chunks
from llmc.backends.fpga.isa import Instruction
from llmc.backends.fpga.links import CLUSTER_FILE, LINKS, Link, Transfer, compute_seconds, link_seconds
from llmc.backends.fpga.timing import TimingModel
from llmc.errors import LlmcError
from llmc.generate.loop import AppendingDevice
from llmc.manifest import check_files
from llmc.sim.image import ProjectImage, check_run
from llmc.sim.iss import Iss


def is_cluster(folder: Path | str) -> bool:
    return (Path(folder) / CLUSTER_FILE).is_file()


@dataclass(frozen=True)
class ClusterImage:
    """The cards' project images, the transfers after each segment and the segment count."""

    path: Path
    name: str
    parallel: str
    cards: list[ProjectImage]
    transfers: list[Transfer]
    segments: int

    @classmethod
    def load(cls, folder: Path | str, *, weights: bool = True) -> ClusterImage:
        folder = Path(folder)
        check_files(folder, [CLUSTER_FILE])
        try:
            meta = json.loads((folder / CLUSTER_FILE).read_text())
            cards = [ProjectImage.load(folder / card["folder"], weights=weights) for card in meta["cards"]]
            transfers = [Transfer.from_json(t) for t in meta["transfers"]]
            segments, name, parallel = int(meta["segments"]), str(meta["name"]), str(meta["parallel"])
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
            raise LlmcError(f"{folder / CLUSTER_FILE}: corrupt cluster description ({e})") from None
        if len({tuple(c.config.buckets) for c in cards}) != 1:
            raise LlmcError(f"{folder}: the cards' length buckets differ")
        if sum(c.vocab > 0 for c in cards) != 1:
            raise LlmcError(f"{folder}: exactly one card must compute the logits")
        return cls(folder, name, parallel, cards, transfers, segments)

    @property
    def logits_card(self) -> int:
        return next(c for c, card in enumerate(self.cards) if card.vocab > 0)

    @property
    def vocab(self) -> int:
        return self.cards[self.logits_card].vocab

    @property
    def max_context(self) -> int:
        return min(card.config.max_context for card in self.cards)

    def check_run(self, length: int, ids: Sequence[int]) -> None:
        """Refuse appending ``ids`` to a sequence of ``length`` tokens past the context or the vocabulary."""
        check_run(length, ids, self.max_context, self.vocab)


class Card(Protocol):
    """One card of a cluster as the host drives it (a simulator, or a board through PYNQ)."""

    def put_ids(self, ids: np.ndarray) -> None: ...

    def start_segment(self, bucket: int, rows: int, start_pos: int, pc: int) -> None:
        """Start the kernel call that runs the bucket's program from instruction ``pc`` to its next SYNC."""

    def finish_segment(self) -> int:
        """Wait for the call; the instruction the next call starts at."""

    def read_io(self, at: int, nbytes: int) -> bytes: ...

    def write_io(self, at: int, data: bytes) -> None: ...

    def logits(self, rows: int) -> np.ndarray: ...


def run_chunk(image: ClusterImage, cards: Sequence[Card], bucket: int, ids: np.ndarray, start_pos: int) -> np.ndarray:
    """One chunk of rows through the cluster, as the host runs it: every card's segment ``s`` (all
    started, then all waited for), then the values sent in it copied from the sender's io to each
    receiver's, then segment ``s + 1``; the logits [rows, vocab] from the card that makes them."""
    rows = len(ids)
    for card in cards:
        card.put_ids(ids)
    pcs = [0] * len(cards)
    for segment in range(image.segments):
        for c, card in enumerate(cards):
            card.start_segment(bucket, rows, start_pos, pcs[c])
        pcs = [card.finish_segment() for card in cards]
        for t in image.transfers:
            if t.segment != segment or not t.receivers:
                continue
            data = cards[t.sender].read_io(int(image.cards[t.sender].io["mail_offset"]) + t.offset, rows * t.cols * 4)
            for r in t.receivers:
                cards[r].write_io(int(image.cards[r].io["mail_offset"]) + t.offset, data)
    return cards[image.logits_card].logits(rows)


def next_segment(program: Sequence[Instruction], pc: int) -> int:
    """The instruction after the SYNC or HALT that a call started at ``pc`` stops at."""
    while pc < len(program):
        pc += 1
        if program[pc - 1].op in ("SYNC", "HALT"):
            break
    return pc


class IssCard:
    """A card's ISS as a :class:`Card`."""

    def __init__(self, iss: Iss) -> None:
        self.iss, self.pc = iss, 0

    def put_ids(self, ids: np.ndarray) -> None:
        self.iss.put_ids(ids)

    def start_segment(self, bucket: int, rows: int, start_pos: int, pc: int) -> None:
        self.pc = self.iss.segment(bucket, pc, len(self.iss.image.programs[bucket]), rows, start_pos)

    def finish_segment(self) -> int:
        return self.pc

    def read_io(self, at: int, nbytes: int) -> bytes:
        return self.iss.io[at:at + nbytes].tobytes()

    def write_io(self, at: int, data: bytes) -> None:
        self.iss.io[at:at + len(data)] = np.frombuffer(data, dtype=np.uint8)

    def logits(self, rows: int) -> np.ndarray:
        return self.iss.logits(rows)


class ClusterIssDevice(AppendingDevice):
    """The cards' ISSs behind the generation loop's device interface; ``last_seconds`` is the
    modelled time of the last call over ``link`` (the host link the generated code uses)."""

    def __init__(self, image: ClusterImage, link: Link = LINKS["host"]) -> None:
        self.image, self.link = image, link
        self.iss = [Iss(card) for card in image.cards]
        self.timings = [TimingModel.for_image(card) for card in image.cards]
        self.length = 0
        self.last_seconds = 0.0

    def reset(self) -> None:
        for iss in self.iss:
            iss.reset()
        self.length = 0

    def run(self, ids: Sequence[int]) -> np.ndarray:
        """Append ``ids``; their logits [len(ids), vocab]."""
        self.image.check_run(self.length, ids)
        images, out, seconds = self.image.cards, [], 0.0
        cards = [IssCard(iss) for iss in self.iss]
        for bucket, first, rows in chunks(len(ids), images[0].bucket_for):
            start = self.length + first
            out.append(run_chunk(self.image, cards, bucket, np.asarray(ids[first:first + rows], dtype=np.int32), start))
            cards = [(t, card.programs[bucket]) for t, card in zip(self.timings, images)]
            seconds += compute_seconds(cards, self.image.segments, rows, start) + \
                link_seconds(self.link, self.image.transfers, self.image.segments, len(cards), rows)
        self.length += len(ids)
        self.last_seconds = seconds
        return np.concatenate(out)
