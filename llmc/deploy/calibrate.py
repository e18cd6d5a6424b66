"""``llmc calibrate DIR``: the memory efficiency a design's own ports reach, measured.

The benchmark kernel (``calibrate/hbm_bench.cpp``, rendered for the project's weight ports, port
width and m_axi settings) reads ``beats`` words sequentially on every weight port at once, each in
its own dataflow process, and folds them into checksums. On a card (PYNQ, the bench built with
Vitis: ``calibrate/Makefile``) the call is timed and the efficiency, the bytes read per second over
the channels' peak, is written into a copy of the board file that ``llmc compile --board`` takes.
Without a card its C-simulation runs and checks the checksums against the pattern's; the card path
fails in one line (the efficiency then stays the board file's stated figure).
"""

from __future__ import annotations

import json
import subprocess
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from llmc.backends.fpga.design import READ_BURST, READS_OUTSTANDING, WORD_BITS, kernel_ports
from llmc.backends.fpga.target import Target
from llmc.deploy.layout import pynq_memory
from llmc.deploy.pynq_device import DeviceUnavailable, find_card, import_pynq
from llmc.errors import LlmcError
from llmc.sim.csim import build_cpp
from llmc.sim.image import ProjectImage
from llmc.templating import render

KERNEL = "llmc_hbm_bench"
WORD_BYTES = WORD_BITS // 8
MAX_BEATS = 1 << 24  # 1 GiB per port: the LOOP_TRIPCOUNT bound


def bench_ports(image: ProjectImage) -> list[str]:
    """The design's weight ports (one per weight channel), in channel order."""
    return [p.name for p in kernel_ports(image.config) if p.kind == "m_axi" and p.name.startswith("w")]


def bench_files(image: ProjectImage) -> dict[str, str]:
    """The benchmark kernel, its C-simulation main, its connectivity (each port on the channel of the
    design's port of the same name) and the Makefile that builds it with Vitis, for ``image``'s design."""
    context = {"name": image.name, "ports": bench_ports(image), "word_bits": WORD_BITS, "max_beats": MAX_BEATS,
               "axi": {"read_burst": READ_BURST, "reads": READS_OUTSTANDING}}
    banks = {p.name: p.memory for p in kernel_ports(image.config)}
    links = [(p, banks[p]) for p in context["ports"]] + [("sums", banks["io"])]
    return {"hbm_bench.cpp": render("calibrate/hbm_bench.cpp.j2", **context),
            "bench_main.cpp": render("calibrate/bench_main.cpp.j2", **context),
            "connectivity.cfg": render("calibrate/connectivity.cfg.j2", banks=links),
            "Makefile": render("calibrate/Makefile.j2", name=image.name, platform=image.target.platform)}


def expected_sums(ports: int, beats: int) -> list[int]:
    """The checksums of the C-simulation's pattern: XOR over every 64-bit lane ``j`` of every word
    ``i`` of port ``p`` of ``(p << 48) ^ (i << 8) ^ j``."""
    lanes = WORD_BITS // 64
    words = np.arange(beats, dtype=np.uint64)[:, None] << np.uint64(8) ^ np.arange(lanes, dtype=np.uint64)[None, :]
    folded = int(np.bitwise_xor.reduce(words, axis=None)) if beats else 0
    return [folded ^ ((p << 48) if (beats * lanes) % 2 else 0) for p in range(ports)]


def csim(image: ProjectImage, beats: int, timeout: float = 600) -> list[int]:
    """Build and run the benchmark's C-simulation; its checksums, checked against the pattern's."""
    files = {name: text for name, text in bench_files(image).items() if name.endswith(".cpp")}
    exe = build_cpp("hbm-bench", files, list(files), image.path, "the benchmark", timeout=timeout)
    result = subprocess.run([str(exe), str(beats)], capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise LlmcError(f"{image.path}: the benchmark's C-simulation failed: {result.stderr.strip()}")
    sums = [int(s) for s in json.loads(result.stdout)["sums"]]
    want = expected_sums(len(bench_ports(image)), beats)
    if sums != want:
        raise LlmcError(f"{image.path}: the benchmark's checksums {sums} differ from the pattern's {want}")
    return sums


def measure_on_card(image: ProjectImage, xclbin: Path, beats: int, repeat: int = 5, card: int = 0) -> float:
    """Bytes per second the weight ports read together on card ``card`` (the best of ``repeat`` calls)."""
    pynq = import_pynq()
    device = find_card(pynq, card)
    if not xclbin.is_file():
        raise LlmcError(f"{xclbin}: the benchmark's xclbin not found: build it with make -C DIR/calibrate")
    try:
        overlay = pynq.Overlay(str(xclbin), device=device)
    except (RuntimeError, OSError, ValueError) as e:
        raise DeviceUnavailable(f"{xclbin}: the card refused it: {e}") from None
    banks = {p.name: p.memory for p in kernel_ports(image.config)}
    buffers: list[Any] = []
    try:
        for name in bench_ports(image):
            buffers.append(pynq.allocate((beats * WORD_BYTES,), dtype=np.uint8, target=getattr(overlay, pynq_memory(banks[name]))))
            buffers[-1].sync_to_device()
        sums = pynq.allocate((len(buffers),), dtype=np.uint64, target=getattr(overlay, pynq_memory(banks["io"])))
        buffers.append(sums)
        best = float("inf")
        for _ in range(repeat):
            start = time.perf_counter()
            getattr(overlay, f"{KERNEL}_1").call(*buffers[:-1], beats, sums)
            best = min(best, time.perf_counter() - start)
    finally:
        for buffer in buffers:
            buffer.freebuffer()
        overlay.free()
    return len(bench_ports(image)) * beats * WORD_BYTES / best


def calibrated_target(target: Target, bytes_per_s: float, ports: int) -> Target:
    """``target`` with the memory efficiency measured: bytes per second over ``ports`` channels' peak."""
    peak = ports * target.memory.bandwidth_gbs / target.memory.channels * 1e9
    return replace(target, memory=replace(target.memory, efficiency=round(bytes_per_s / peak, 4)))
