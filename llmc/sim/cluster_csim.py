"""C-simulation of a cluster: every card's test bench run as :class:`~llmc.sim.cluster.ClusterIssDevice`
runs the cards' ISSs, segment by segment, the host moving what the cards sent in between
(``seg``, ``get`` and ``put`` of the test bench's protocol, ``csim/csim_main.cpp``)."""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path

import numpy as np

from llmc.backends.fpga.design import chunks
from llmc.generate.loop import AppendingDevice
from llmc.sim.cluster import ClusterImage, run_chunk
from llmc.sim.csim import CsimProcess, CycleAccount, build_csim, cycle_summary

PC_BYTES = 8  # ``seg`` answers the instruction to go on from as one uint64, then the call's cycle account


class CsimCard:
    """A card's test bench as a :class:`~llmc.sim.cluster.Card`; ``account`` sums its calls' cycle accounts."""

    def __init__(self, process: CsimProcess, vocab: int) -> None:
        self.process, self.vocab = process, vocab
        self.account = CycleAccount(0, {})

    def put_ids(self, ids: np.ndarray) -> None:
        self.process.command(f"ids {len(ids)} " + " ".join(str(int(i)) for i in ids))

    def start_segment(self, bucket: int, rows: int, start_pos: int, pc: int) -> None:
        self.process.command(f"seg {bucket} {rows} {start_pos} {pc}")  # runs while the other cards are started

    def finish_segment(self) -> int:
        pc = int.from_bytes(self.process.receive(PC_BYTES), "little")
        self.account += self.process.account()
        return pc

    def read_io(self, at: int, nbytes: int) -> bytes:
        self.process.command(f"get {at} {nbytes}")
        return self.process.receive(nbytes)

    def write_io(self, at: int, data: bytes) -> None:
        self.process.command(f"put {at} {len(data)}", data)

    def logits(self, rows: int) -> np.ndarray:
        self.process.command(f"logits {rows}")
        data = self.process.receive(rows * self.vocab * 4)
        return np.frombuffer(data, dtype="<f4").reshape(rows, self.vocab).copy()


class ClusterCsimDevice(AppendingDevice):
    """The cards' C-simulations behind the generation loop's device interface; ``accounts`` holds,
    for each run call since the last reset, each card's cycle account over its kernel calls. Each
    card's test bench is built (all at once) and started; ``timeout`` bounds each run call."""

    def __init__(self, cluster: ClusterImage | Path | str, timeout: float = 600) -> None:
        self.image = cluster if isinstance(cluster, ClusterImage) else ClusterImage.load(cluster, weights=False)
        paths = [card.path for card in self.image.cards]
        with ThreadPoolExecutor(len(paths)) as pool:  # g++ runs outside the interpreter lock
            exes = list(pool.map(lambda path: build_csim(path, timeout=timeout), paths))
        self.cards: list[CsimProcess] = []
        try:
            for path, exe in zip(paths, exes):
                self.cards.append(CsimProcess(path, exe, timeout))
        except BaseException:
            self.close()
            raise
        self.length = 0
        self.accounts: list[list[CycleAccount]] = []

    def reset(self) -> None:
        for card in self.cards:
            card.command("reset")
        self.length = 0
        self.accounts = []

    def run(self, ids: Sequence[int]) -> np.ndarray:
        """Append ``ids``; their logits [len(ids), vocab]."""
        self.image.check_run(self.length, ids)
        cards = [CsimCard(card, self.image.vocab) for card in self.cards]
        out = []
        with ExitStack() as stack:
            for card in self.cards:
                stack.enter_context(card.watchdog())
            for bucket, first, rows in chunks(len(ids), self.image.cards[0].bucket_for):
                chunk = np.asarray(ids[first:first + rows], dtype=np.int32)
                out.append(run_chunk(self.image, cards, bucket, chunk, self.length + first))
        self.length += len(ids)
        self.accounts.append([card.account for card in cards])
        return np.concatenate(out)

    def cycle_report(self) -> dict:
        """Each card's cycle account of the sequence, its kernel calls summed per run call
        (:func:`llmc.sim.csim.cycle_summary`)."""
        return {"cards": [cycle_summary([accounts[c] for accounts in self.accounts]) for c in range(len(self.cards))]}

    def close(self) -> None:
        for card in self.cards:
            card.close()

    def __enter__(self) -> ClusterCsimDevice:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
