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
from llmc.errors import LlmcError
from llmc.generate.loop import AppendingDevice
from llmc.sim.cluster import ClusterImage
from llmc.sim.csim import CsimProcess, CycleAccount, build_csim

PC_BYTES = 8  # ``seg`` answers the instruction to go on from as one uint64, then the call's cycle account


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
        if self.length + len(ids) > self.image.max_context:
            raise LlmcError(f"sequence of {self.length + len(ids)} tokens exceeds the compiled context of "
                            f"{self.image.max_context}")
        if any(not 0 <= int(i) < self.image.vocab for i in ids):
            raise LlmcError(f"token id outside the vocabulary of {self.image.vocab}")
        images, out = self.image.cards, []
        accounts = [CycleAccount(0, {}) for _ in self.cards]
        with ExitStack() as stack:
            for card in self.cards:
                stack.enter_context(card.watchdog())
            for bucket, first, rows in chunks(len(ids), images[0].bucket_for):
                line = f"ids {rows} " + " ".join(str(int(i)) for i in ids[first:first + rows])
                for card in self.cards:
                    card.command(line)
                pcs = [0] * len(self.cards)
                for s in range(self.image.segments):
                    for c, card in enumerate(self.cards):  # every card's segment runs before any answer is read
                        card.command(f"seg {bucket} {rows} {self.length + first} {pcs[c]}")
                    for c, card in enumerate(self.cards):
                        pcs[c] = int.from_bytes(card.receive(PC_BYTES), "little")
                        accounts[c] += card.account()
                    self._deliver(s, rows)
                logits = self.cards[self.image.logits_card]
                logits.command(f"logits {rows}")
                data = logits.receive(rows * self.image.vocab * 4)
                out.append(np.frombuffer(data, dtype="<f4").reshape(rows, self.image.vocab))
        self.length += len(ids)
        self.accounts.append(accounts)
        return np.concatenate(out)

    def _deliver(self, segment: int, rows: int) -> None:
        """Copy what the cards sent in ``segment`` from the sender's io to each receiver's (as
        :func:`llmc.sim.cluster.deliver`)."""
        for t in self.image.transfers:
            if t.segment != segment or not t.receivers:
                continue
            nbytes = rows * t.cols * 4
            sender = self.cards[t.sender]
            sender.command(f"get {int(self.image.cards[t.sender].io['mail_offset']) + t.offset} {nbytes}")
            data = sender.receive(nbytes)
            for r in t.receivers:
                self.cards[r].command(f"put {int(self.image.cards[r].io['mail_offset']) + t.offset} {nbytes}", data)

    def close(self) -> None:
        for card in self.cards:
            card.close()

    def __enter__(self) -> ClusterCsimDevice:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
