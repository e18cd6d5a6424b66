"""A cluster (``llmc compile --cards N``) on N Alveo cards through PYNQ: card ``i`` on Alveo card
``first_card + i`` with its own xclbin, each opened as a :class:`~llmc.deploy.pynq_device.PynqDevice`,
run chunk by chunk as the simulators run the cluster (:func:`llmc.sim.cluster.run_chunk`): each
segment's kernel call started on every card, all waited for, then what the cards sent in it copied
through the host from the sender's io to each receiver's.

Opening checks, in order, and stops at the first missing piece with one line naming the card: each
card's xclbin file, the ``pynq`` package, enough Alveo cards listed by XRT, then each card as
:meth:`PynqDevice.open` opens one.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from contextlib import suppress
from pathlib import Path
from typing import Any

import numpy as np

from llmc.backends.fpga.design import chunks
from llmc.deploy.pynq_device import DeviceUnavailable, PynqDevice, alveo_cards, import_pynq, xrt_state
from llmc.errors import LlmcError
from llmc.generate.loop import AppendingDevice
from llmc.sim.cluster import ClusterImage, next_segment, run_chunk


class PynqCard:
    """An opened card of a cluster as a :class:`~llmc.sim.cluster.Card`: a segment's call is started
    without waiting, so that every card runs its segment at once."""

    def __init__(self, device: PynqDevice) -> None:
        self.device = device
        self.handle: Any = None
        self.bucket, self.pc = 0, 0

    def put_ids(self, ids: np.ndarray) -> None:
        self.device.put_ids(ids)

    def start_segment(self, bucket: int, rows: int, start_pos: int, pc: int) -> None:
        if pc == 0:  # the chunk's first call: its positions, as a one-card call writes them
            self.device.put_positions(start_pos, rows)
        self.handle = self.device.start(bucket, rows, start_pos, first_instr=pc)
        self.bucket, self.pc = bucket, pc

    def finish_segment(self) -> int:
        handle, self.handle = self.handle, None
        self.device.wait(handle)
        return next_segment(self.device.image.programs[self.bucket], self.pc)

    def settle(self) -> None:
        """Wait for a call still running after another card failed, so that no buffer is freed under it."""
        handle, self.handle = self.handle, None
        if handle is not None:
            with suppress(LlmcError):
                self.device.wait(handle)

    def read_io(self, at: int, nbytes: int) -> bytes:
        return self.device.read_io(at, nbytes).tobytes()

    def write_io(self, at: int, data: bytes) -> None:
        self.device.write_io(at, data)

    def logits(self, rows: int) -> np.ndarray:
        return self.device.logits(rows)


class PynqClusterDevice(AppendingDevice):
    """The cluster's cards behind the generation loop's device interface; ``last_seconds`` is the
    measured time of the last call: each chunk from writing its ids to reading its logits, kernel
    calls and transfers through the host."""

    def __init__(self, image: ClusterImage, devices: list[PynqDevice]) -> None:
        self.image, self.devices = image, devices
        self.length = 0
        self.last_seconds = 0.0

    @classmethod
    def open(cls, image: ClusterImage, xclbins: Sequence[Path], first_card: int = 0) -> PynqClusterDevice:
        """Program Alveo card ``first_card + i`` with ``xclbins[i]`` and upload card ``i``'s program and weights."""
        for c, path in enumerate(xclbins):
            if not path.is_file():
                raise LlmcError(f"card {c}: {path}: xclbin not found")
        pynq = import_pynq()
        found, last = len(alveo_cards(pynq)), first_card + len(image.cards) - 1
        if found <= last:
            why = f" ({xrt_state()})" if found == 0 else ""
            raise DeviceUnavailable(f"pynq: the {len(image.cards)} cards of {image.name} need Alveo cards {first_card} "
                                    f"to {last}, found {found}{why}")
        devices: list[PynqDevice] = []
        try:
            for c, (card, path) in enumerate(zip(image.cards, xclbins)):
                try:
                    devices.append(PynqDevice.open(card, path, first_card + c))
                except LlmcError as e:
                    raise type(e)(f"card {c} (Alveo card {first_card + c}): {e}") from None
        except BaseException:
            for device in devices:
                device.close()
            raise
        return cls(image, devices)

    def reset(self) -> None:
        """Start a new sequence."""
        self.length = 0

    def run(self, ids: Sequence[int]) -> np.ndarray:
        """Append ``ids``; their logits [len(ids), vocab]. A failed or interrupted call leaves the
        sequence to be started again."""
        self.image.check_run(self.length, ids)
        cards, out = [PynqCard(device) for device in self.devices], []
        started = time.perf_counter()
        try:
            for bucket, first, rows in chunks(len(ids), self.image.cards[0].bucket_for):
                chunk = np.asarray(ids[first:first + rows], dtype=np.int32)
                out.append(run_chunk(self.image, cards, bucket, chunk, self.length + first))
        except BaseException:
            self.length = 0
            for card in cards:
                card.settle()
            raise
        self.last_seconds = time.perf_counter() - started
        self.length += len(ids)
        return np.concatenate(out)

    def close(self) -> None:
        """Free every card's buffers and the cards."""
        for device in self.devices:
            device.close()
        self.devices = []
