"""The Alveo card through PYNQ: the design's xclbin as an overlay, one buffer per kernel port in the
bank connectivity.cfg assigned, the program and weights uploaded once, one kernel call per chunk.

Opening checks, in order, and stops at the first missing piece with one line saying what is
missing: the xclbin file, the ``pynq`` package (3.0.x: later releases no longer probe Alveo
cards), an Alveo card that XRT lists, and an xclbin whose kernel has this program's arguments in
this program's banks. Everything before :meth:`PynqDevice.open` reaches the card is plain data
(:mod:`llmc.deploy.layout`).
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from llmc.backends.fpga.container import read_container
from llmc.backends.fpga.design import chunks
from llmc.backends.fpga.isa import INSTR_BYTES
from llmc.deploy.layout import (
    COMPUTE_UNIT,
    Buffer,
    check_registers,
    io_buffer_bytes,
    io_regions,
    io_span,
    kernel_arguments,
    plan_buffers,
    pynq_memory,
    register_map,
)
from llmc.errors import LlmcError
from llmc.generate.loop import AppendingDevice
from llmc.sim.image import ProjectImage

PYNQ_SERIES = "3.0."  # the last PYNQ series with Alveo (XRT) devices; 3.1 removed their probe
PYNQ_PIN = "pynq==3.0.1"


class DeviceUnavailable(LlmcError):
    """No card to run on: pynq, XRT or the card itself is missing."""


def import_pynq() -> ModuleType:
    """The ``pynq`` module, if installed and of a series that drives Alveo cards."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import pynq
    except ImportError as e:
        raise DeviceUnavailable(f"pynq: not installed ({e}): pip install -r requirements.txt ({PYNQ_PIN})") from None
    except OSError as e:  # XILINX_XRT points at a folder without a loadable libxrt_core
        raise DeviceUnavailable(f"pynq: cannot load XRT ({e}): check XILINX_XRT (source /opt/xilinx/xrt/setup.sh)") \
            from None
    version = str(getattr(pynq, "__version__", "unknown"))
    if not version.startswith(PYNQ_SERIES):
        raise DeviceUnavailable(f"pynq {version} cannot drive Alveo cards (PYNQ 3.1 removed its XRT device probe): "
                                f"pip install {PYNQ_PIN}")
    return pynq


def alveo_cards(pynq: ModuleType) -> list[Any]:
    """The Alveo cards PYNQ finds through XRT."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PYNQ warns "No devices found" itself
        return [d for d in pynq.Device.devices if type(d).__name__ == "XrtDevice"]


def find_card(pynq: ModuleType, index: int) -> Any:
    """The ``index``-th Alveo card PYNQ finds through XRT."""
    cards = alveo_cards(pynq)
    if not cards:
        raise DeviceUnavailable(f"pynq: no Alveo card found ({xrt_state()})")
    if not 0 <= index < len(cards):
        raise DeviceUnavailable(f"pynq: no Alveo card {index} (found {len(cards)})")
    return cards[index]


def xrt_state() -> str:
    """Why XRT may list no card, as far as the environment tells."""
    root = os.environ.get("XILINX_XRT")
    if not root:
        return "XRT is not set up: XILINX_XRT is unset; install XRT and source /opt/xilinx/xrt/setup.sh"
    return f"XRT at {root} lists none: check the card with `xbutil examine`"


class PynqDevice(AppendingDevice):
    """The generation device on a card: ``reset``/``prefill``/``decode``/``run`` like the simulator;
    ``last_seconds`` is the measured kernel time of the last call (start to done, all chunks)."""

    def __init__(self, image: ProjectImage, lanes: list[np.ndarray], programs: dict[int, bytes], pynq: ModuleType,
                 overlay: Any, xclbin: Path) -> None:
        self.image = image
        self.overlay = overlay
        self.registers = register_map(image.config)
        if COMPUTE_UNIT not in overlay.ip_dict:
            raise LlmcError(f"{xclbin}: no compute unit {COMPUTE_UNIT} (found {', '.join(overlay.ip_dict) or 'none'})")
        check_registers(overlay.ip_dict[COMPUTE_UNIT]["registers"], self.registers, str(xclbin))
        self.cu = getattr(overlay, COMPUTE_UNIT)
        self.n_instr = {b: len(p) // INSTR_BYTES for b, p in programs.items()}
        plan = plan_buffers(image.config, {b: len(p) for b, p in programs.items()}, [len(w) for w in lanes],
                            image.kv_bytes, io_buffer_bytes(image.io))
        contents: dict[str, Any] = {f"program.bucket_{b}": p for b, p in programs.items()}
        contents |= {f"w{i}": lane for i, lane in enumerate(lanes)}
        self.buffers: dict[str, Any] = {}
        try:
            for spec in plan:
                self.buffers[spec.name] = self._upload(pynq, spec, contents.get(spec.name))
        except BaseException:
            self._free_buffers()
            raise
        self.length = 0
        self.last_seconds = 0.0

    @classmethod
    def open(cls, image: ProjectImage, xclbin: Path, card: int = 0) -> PynqDevice:
        """Program card ``card`` with ``xclbin`` and upload ``image``'s program and weights."""
        if not xclbin.is_file():
            raise LlmcError(f"{xclbin}: xclbin not found: build it (llmc build PROJECT), then llmc deploy "
                            "--xclbin it, or pass --xclbin PATH")
        if image.lanes is None:
            raise LlmcError(f"{image.path}: weights.bin missing (compiled --shapes-only?)")
        box = read_container(image.path / "program.bin", "program")
        programs = {b: bytes(box.sections[f"bucket_{b}"]) for b in image.config.buckets}
        pynq = import_pynq()
        device = find_card(pynq, card)
        try:
            overlay = pynq.Overlay(str(xclbin), device=device)
        except (RuntimeError, OSError, ValueError) as e:
            raise DeviceUnavailable(f"{xclbin}: the card refused it: {e}") from None
        try:
            return cls(image, image.lanes, programs, pynq, overlay, xclbin)
        except BaseException:
            overlay.free()
            raise

    def _upload(self, pynq: ModuleType, spec: Buffer, data: bytes | np.ndarray | None) -> Any:
        buffer = pynq.allocate((spec.size,), dtype=np.uint8, target=getattr(self.overlay, pynq_memory(spec.memory)))
        n = 0 if data is None else len(data)
        if n:
            buffer[:n] = np.frombuffer(data, dtype=np.uint8)  # type: ignore[arg-type]
        buffer[n:] = 0
        buffer.sync_to_device()
        return buffer

    def reset(self) -> None:
        """Start a new sequence (a call reads only the cache rows written before it in this sequence)."""
        self.length = 0

    def run(self, ids: Sequence[int]) -> np.ndarray:
        """Append ``ids``; their logits [len(ids), vocab]. A failed or interrupted call leaves the
        sequence to be started again."""
        self.image.check_run(self.length, ids)
        out, seconds = [], 0.0
        try:
            for bucket, first, rows in chunks(len(ids), self.image.bucket_for):
                start_pos = self.length + first
                self.put_ids(np.asarray(ids[first:first + rows], dtype=np.int32))
                self.put_positions(start_pos, rows)
                started = time.perf_counter()
                self.wait(self.start(bucket, rows, start_pos, first_instr=0))
                seconds += time.perf_counter() - started
                out.append(self.logits(rows))
        except BaseException:
            self.length = 0
            raise
        self.length += len(ids)
        self.last_seconds = seconds
        return np.concatenate(out)

    def put_ids(self, ids: np.ndarray) -> None:
        """A chunk's token ids into io, synced to the card."""
        self.write_io(io_regions(self.image.io, len(ids))["ids"].start, ids.astype("<i4").tobytes())

    def put_positions(self, start_pos: int, rows: int) -> None:
        """A chunk's positions into io, synced to the card."""
        at = io_regions(self.image.io, rows)["positions"].start
        self.write_io(at, np.arange(start_pos, start_pos + rows, dtype="<i4").tobytes())

    def logits(self, rows: int) -> np.ndarray:
        """The logits [rows, vocab] of the last call, synced from the card."""
        at = io_regions(self.image.io, rows)["logits"]
        return self.read_io(at.start, at.stop - at.start).view("<f4").reshape(rows, self.image.vocab)

    def write_io(self, at: int, data: bytes) -> None:
        """``data`` into io from byte ``at``; exactly those bytes are synced to the card."""
        span, io = io_span(self.image.io, at, len(data)), self.buffers["io"]
        io[span] = np.frombuffer(data, dtype=np.uint8)
        io[span].sync_to_device()

    def read_io(self, at: int, nbytes: int) -> np.ndarray:
        """A copy of ``nbytes`` of io from byte ``at``; exactly those bytes are synced from the card."""
        span, io = io_span(self.image.io, at, nbytes), self.buffers["io"]
        io[span].sync_from_device()
        return np.array(io[span])

    def start(self, bucket: int, rows: int, start_pos: int, first_instr: int) -> Any:
        """Start the compute unit on the bucket's program at instruction ``first_instr``; the call's handle."""
        args = kernel_arguments(self.registers, self.buffers, self.buffers[f"program.bucket_{bucket}"],
                                self.n_instr[bucket], rows, start_pos, first_instr)
        return self.cu.start(*args)

    @staticmethod
    def wait(handle: Any) -> None:
        """Wait for a started call. An interrupt first waits for the kernel to finish, so that no
        buffer is freed under it."""
        try:
            handle.wait()
        except KeyboardInterrupt:
            handle.wait()
            raise
        except RuntimeError as e:
            raise LlmcError(f"{COMPUTE_UNIT} failed: {e}") from None

    def close(self) -> None:
        """Free the buffers and the card."""
        self._free_buffers()
        self.overlay.free()

    def _free_buffers(self) -> None:
        for buffer in self.buffers.values():
            buffer.freebuffer()
        self.buffers = {}
