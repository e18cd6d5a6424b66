"""A cluster folder (``llmc compile --cards N``) as the simulators read it, and the ISS of every
card run as the host runs the cards: segment by segment, moving what the cards sent in between."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from llmc.backends.fpga.cluster import CLUSTER_FILE, Transfer
from llmc.backends.fpga.design import chunks
from llmc.backends.fpga.links import LINKS, Link, step_seconds
from llmc.backends.fpga.timing import TimingModel
from llmc.errors import LlmcError
from llmc.generate.loop import AppendingDevice
from llmc.manifest import check_files
from llmc.sim.image import ProjectImage
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


def deliver(ios: Sequence[np.ndarray], images: Sequence[ProjectImage], transfers: Sequence[Transfer], segment: int,
            rows: int) -> None:
    """Copy what the cards sent in ``segment`` from the sender's io to each receiver's."""
    for t in transfers:
        if t.segment != segment:
            continue
        nbytes = rows * t.cols * 4
        at = int(images[t.sender].io["mail_offset"]) + t.offset
        data = ios[t.sender][at:at + nbytes]
        for r in t.receivers:
            to = int(images[r].io["mail_offset"]) + t.offset
            ios[r][to:to + nbytes] = data


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
        if self.length + len(ids) > self.image.max_context:
            raise LlmcError(f"sequence of {self.length + len(ids)} tokens exceeds the compiled context of "
                            f"{self.image.max_context}")
        if any(not 0 <= int(i) < self.image.vocab for i in ids):
            raise LlmcError(f"token id outside the vocabulary of {self.image.vocab}")
        images, out, seconds = self.image.cards, [], 0.0
        for bucket, first, rows in chunks(len(ids), images[0].bucket_for):
            chunk = np.asarray(ids[first:first + rows], dtype=np.int32)
            start = self.length + first
            for iss in self.iss:
                iss.put_ids(chunk)
            pcs = [0] * len(self.iss)
            for s in range(self.image.segments):
                for c, iss in enumerate(self.iss):
                    pcs[c] = iss.segment(bucket, pcs[c], len(images[c].programs[bucket]), rows, start)
                deliver([iss.io for iss in self.iss], images, self.image.transfers, s, rows)
            out.append(self.iss[self.image.logits_card].logits(rows))
            cards = [(t, card.programs[bucket]) for t, card in zip(self.timings, images)]
            seconds += step_seconds(cards, self.image.transfers, self.image.segments, self.link, rows, start)[0]
        self.length += len(ids)
        self.last_seconds = seconds
        return np.concatenate(out)
