"""C-simulation: the generated kernel C++ compiled with g++ against the real ap_types headers,
run as a device (``prefill``/``decode`` like every other) over a pipe to its test bench."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np

from llmc.backends.fpga.isa import OPCODES
from llmc.errors import LlmcError
from llmc.generate.loop import AppendingDevice
from llmc.manifest import check_files
from llmc.sim.build_cache import cached_build

ACCOUNT_BYTES = 8 * 33  # a cycle account (after logits, or a segment's pc): the total, then one per opcode number
CXXFLAGS = ["-std=c++17", "-O2", "-Wall", "-Wextra", "-Werror", "-Wno-unknown-pragmas", "-ffp-contract=off"]
SOURCES = ["kernel/llmc_accel.cpp", "csim/csim_main.cpp"]
P = TypeVar("P", bound="CsimProcess")


def ap_types_dir() -> Path:
    """The ``ap_types`` headers the hls4ml package ships (Apache-2.0)."""
    try:
        import hls4ml
    except ImportError:
        raise LlmcError("C-simulation needs the ap_types headers of the hls4ml package: pip install hls4ml==1.3.0") \
            from None
    path = Path(hls4ml.__file__).parent / "templates" / "vivado" / "ap_types"
    if not (path / "ap_int.h").is_file():
        raise LlmcError(f"{path}: ap_int.h not found in the hls4ml package")
    return path


def build_cpp(kind: str, files: dict[str, str], sources: list[str], where: Path, what: str,
              include: str | None = None, timeout: float = 600) -> Path:
    """Compile ``sources`` of ``files`` (relative path -> text) with g++ against the ap_types headers
    (and ``include``, a folder of ``files``); the executable, built once per machine for the same
    inputs (:mod:`llmc.sim.build_cache`). Errors say ``what`` does not compile, naming ``where``'s files."""
    cxx = shutil.which("g++")
    if cxx is None:
        raise LlmcError("C-simulation needs g++ on PATH")
    headers = ap_types_dir()
    key = {"cxx": cxx, "flags": CXXFLAGS, "ap_types": str(headers), "include": include, "files": files}

    def build(folder: Path) -> None:
        for name, text in files.items():
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            (folder / name).write_text(text)
        cmd = [cxx, *CXXFLAGS, "-isystem", str(headers), *(["-I", str(folder / include)] if include else []),
               *(str(folder / s) for s in sources), "-o", str(folder / "program")]
        try:
            result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise LlmcError(f"{where}: compiling {what} took longer than {timeout:g} s") from None
        if result.returncode != 0:
            errors = result.stderr.replace(str(folder), str(where)).strip()  # name the caller's files
            raise LlmcError(f"{where}: {what} does not compile:\n{errors[-4000:]}")

    return cached_build(kind, key, build) / "program"


def build_csim(project: Path, out: Path | None = None, timeout: float = 600) -> Path:
    """Compile the project's kernel and test bench; returns the executable (``out``, by default
    ``csim/csim.bin`` in the project). The same sources are compiled once per machine
    (:mod:`llmc.sim.build_cache`): the executable reads the program and weights at run time."""
    project = Path(project)
    if not (project / "kernel" / "llmc_accel.cpp").is_file():
        raise LlmcError(f"{project}: not an llmc project folder (kernel/llmc_accel.cpp missing)")
    sources = [*SOURCES, *(p.relative_to(project).as_posix() for p in sorted((project / "rtl").glob("*.cpp")))]
    included = sorted(p.relative_to(project).as_posix() for p in (project / "include").glob("*.h"))
    files = {name: (project / name).read_text() for name in [*sources, *included]}
    built = build_cpp("csim", files, sources, project, "the generated C++", "include", timeout)
    exe = Path(out) if out else project / "csim" / "csim.bin"
    exe.parent.mkdir(parents=True, exist_ok=True)
    staged = exe.with_name(f".{exe.name}.{os.getpid()}.tmp")
    shutil.copy2(built, staged)
    os.replace(staged, exe)  # also over an executable that is running
    return exe


@dataclass(frozen=True)
class CycleAccount:
    """The cycles one kernel call's pipelined loops take at their IIs (``llmc_cycles.h``), in all and by
    opcode: what the generated code would take, counted by C-simulation as it runs."""

    cycles: int
    by_opcode: dict[str, int]

    @classmethod
    def decode(cls, data: bytes) -> CycleAccount:
        """The account as the test bench writes it: the total, then one count per opcode number."""
        counts = np.frombuffer(data, dtype="<u8")
        return cls(int(counts[0]), {name: int(counts[1 + number]) for name, (number, _, _) in OPCODES.items()
                                    if counts[1 + number]})

    def __add__(self, other: CycleAccount) -> CycleAccount:
        names = self.by_opcode.keys() | other.by_opcode.keys()
        return CycleAccount(self.cycles + other.cycles,
                            {n: self.by_opcode.get(n, 0) + other.by_opcode.get(n, 0) for n in sorted(names)})


def cycle_summary(accounts: list[CycleAccount]) -> dict:
    """A sequence's cycle accounts: its first call (the prompt), each later call (one decode step
    each in generation) and the sum by opcode."""
    by_opcode: dict[str, int] = {}
    for account in accounts:
        for name, cycles in account.by_opcode.items():
            by_opcode[name] = by_opcode.get(name, 0) + cycles
    return {"prefill": accounts[0].cycles if accounts else 0, "decode": [a.cycles for a in accounts[1:]],
            "by_opcode": by_opcode}


class CsimProcess:
    """A project's test bench as a running process (its protocol: ``csim/csim_main.cpp``): commands
    to its stdin, answers read from its stdout; what a :meth:`watchdog` block waits for is bounded by
    ``timeout`` seconds, so a hung simulation fails rather than hanging its caller."""

    def __init__(self, project: Path, exe: Path | None = None, timeout: float = 600) -> None:
        project = Path(project)
        for name in ("program.bin", "weights.bin", "design.json"):
            if not (project / name).is_file():
                raise LlmcError(f"{project}: {name} missing (C-simulation needs a project compiled with weights)")
        check_files(project, ["design.json", "program.bin", "weights.bin"])
        self.design = json.loads((project / "design.json").read_text())
        self.timeout = timeout
        self.exe = exe or build_csim(project)
        self.proc = subprocess.Popen([str(self.exe), str(project / "program.bin"), str(project / "weights.bin")],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def command(self, line: str, payload: bytes = b"") -> None:
        """Send one command line, then ``payload`` (the bytes of ``put``)."""
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(line.encode() + b"\n" + payload)
            self.proc.stdin.flush()
        except BrokenPipeError:  # the test bench has exited: say why, never end silently like a closed pipe
            raise self._stopped() from None

    def receive(self, nbytes: int) -> bytes:
        """The next ``nbytes`` of the answers; an error naming why the test bench stopped if they do not come."""
        assert self.proc.stdout is not None
        data = self.proc.stdout.read(nbytes)
        if len(data) != nbytes:
            raise self._stopped()
        return data

    def account(self) -> CycleAccount:
        return CycleAccount.decode(self.receive(ACCOUNT_BYTES))

    @contextmanager
    def watchdog(self) -> Iterator[None]:
        """Kill the test bench if the block takes longer than ``timeout`` seconds, and say so."""
        fired = threading.Event()

        def kill() -> None:
            fired.set()
            self.proc.kill()

        timer = threading.Timer(self.timeout, kill)
        timer.start()
        try:
            yield
        finally:
            timer.cancel()
            if fired.is_set():
                raise LlmcError(f"C-simulation ran past its time limit of {self.timeout:g} s") from None

    def _stopped(self) -> LlmcError:
        """The error for a test bench that stopped answering: its exit status and what it printed."""
        try:
            status = self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            status = None
        err = self.proc.stderr.read().decode(errors="replace").strip() if self.proc.stderr else ""
        how = "still running" if status is None else (f"killed by signal {-status}" if status < 0
                                                       else f"exit status {status}")
        return LlmcError(f"C-simulation stopped ({how}): {' '.join(err.split())[-500:] or 'no output'}")

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.command("quit")
                self.proc.wait(timeout=10)
            except (LlmcError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        for pipe in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                with contextlib.suppress(BrokenPipeError):  # unsent input of a bench that has died
                    pipe.close()

    def __enter__(self: P) -> P:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class CsimDevice(CsimProcess, AppendingDevice):
    """The compiled test bench as a device: ``run`` appends tokens and returns their logits."""

    def __init__(self, project: Path, exe: Path | None = None, timeout: float = 600) -> None:
        super().__init__(project, exe, timeout)
        self.vocab = int(self.design["io"]["vocab"])
        self.max_context = int(self.design["config"]["max_context"])
        self.length = 0
        self.accounts: list[CycleAccount] = []  # one per run call since the last reset

    def reset(self) -> None:
        self.command("reset")
        self.length = 0
        self.accounts = []

    def run(self, ids: Sequence[int]) -> np.ndarray:
        if self.length + len(ids) > self.max_context:
            raise LlmcError(f"sequence of {self.length + len(ids)} tokens exceeds the compiled context of "
                            f"{self.max_context}")
        with self.watchdog():
            self.command(f"run {len(ids)} " + " ".join(str(int(i)) for i in ids))
            data = self.receive(4 * self.vocab * len(ids))
            self.accounts.append(self.account())
        self.length += len(ids)
        return np.frombuffer(data, dtype="<f4").reshape(len(ids), self.vocab).copy()

    def cycle_report(self) -> dict:
        """The cycle account of the sequence (:func:`cycle_summary`)."""
        return cycle_summary(self.accounts)
