"""TVM kernels cross-compiled for another CPU and run under user-mode emulation (ARM checked on x86).

:func:`cross_compile` compiles one PrimFunc with TVM for a foreign LLVM target, links the object
with a small C harness (``templates/cross_harness.c``: it provides the three backend hooks the
object calls, so no TVM runtime is needed on the foreign side) into a static executable, and
:meth:`CrossKernel.__call__` runs it, under ``qemu-<arch>`` where the host cannot, on NumPy arrays
passed through files. Debian's ``gcc-aarch64-linux-gnu`` and ``qemu-user`` provide the tools for
aarch64.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tvm
import tvm_ffi

from llmc.errors import LlmcError
from llmc.templating import render

_DLPACK_CODES = {"i": 0, "u": 1, "f": 2}  # NumPy dtype kind -> DLPack type code
TOOLS = {"aarch64": ("aarch64-linux-gnu-gcc", "qemu-aarch64", "Debian packages gcc-aarch64-linux-gnu and qemu-user")}


def aarch64_target(attributes: tuple[str, ...] = ("+neon", "+dotprod")) -> tvm.target.Target:
    """An aarch64 Linux LLVM target with the given ``-mattr`` features (``+neon``, ``+dotprod`` ...)."""
    return tvm.target.Target({"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mattr": list(attributes)})


def _tool(name: str, package: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise LlmcError(f"{name} is not installed (from {package}): it is needed to check kernels for another CPU")
    return path


@dataclass(frozen=True)
class Argument:
    """One tensor argument of the kernel as the harness allocates it."""

    shape: tuple[int, ...]
    dtype: str
    input: bool

    @property
    def code(self) -> int:
        return _DLPACK_CODES[np.dtype(self.dtype).kind]

    @property
    def bits(self) -> int:
        return np.dtype(self.dtype).itemsize * 8

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * np.dtype(self.dtype).itemsize


@dataclass(frozen=True)
class CrossKernel:
    """A static executable running one kernel on files; call it with the input arrays."""

    executable: Path
    arguments: tuple[Argument, ...]
    emulator: str | None

    def __call__(self, *inputs: np.ndarray) -> list[np.ndarray]:
        """Run once on ``inputs`` (one per input argument, in order); returns the output arguments."""
        wanted = [a for a in self.arguments if a.input]
        if len(inputs) != len(wanted):
            raise ValueError(f"the kernel takes {len(wanted)} inputs, got {len(inputs)}")
        with tempfile.TemporaryDirectory(prefix="llmc-cross-") as folder:
            given = iter(inputs)
            for index, argument in enumerate(self.arguments):
                if argument.input:
                    array = np.ascontiguousarray(next(given), dtype=argument.dtype)
                    if array.shape != argument.shape:
                        raise ValueError(f"argument {index} must be {argument.shape}, got {array.shape}")
                    array.tofile(Path(folder) / f"{index}.bin")
            command = ([self.emulator] if self.emulator else []) + [str(self.executable), folder]
            done = subprocess.run(command, capture_output=True, text=True, timeout=600)
            if done.returncode != 0:
                raise LlmcError(f"{self.executable.name} failed (exit {done.returncode}): {done.stderr.strip()[-500:]}")
            return [np.fromfile(Path(folder) / f"{index}.bin", dtype=a.dtype).reshape(a.shape)
                    for index, a in enumerate(self.arguments) if not a.input]


def cross_compile(func: tvm.tirx.PrimFunc, target: tvm.target.Target, folder: Path, outputs: int = 1,
                  tasks: int = 2) -> CrossKernel:
    """Compile ``func`` for ``target`` into ``folder/kernel`` (its last ``outputs`` arguments are
    written, the others read); parallel loops run as ``tasks`` tasks in turn."""
    arch = str(target.attrs["mtriple"]).split("-")[0]
    if arch not in TOOLS:
        raise LlmcError(f"no cross tools known for {arch} (known: {', '.join(TOOLS)})")
    compiler, emulator, package = TOOLS[arch]
    gcc = _tool(compiler, package)
    qemu = _tool(emulator, package)
    symbol = str(func.attrs["global_symbol"])
    params = list(func.params)
    arguments = tuple(Argument(tuple(int(d) for d in p.ty.shape), str(p.ty.dtype),
                               i < len(params) - outputs) for i, p in enumerate(params))
    folder.mkdir(parents=True, exist_ok=True)
    tvm.compile(func, target=target).mod.write_to_file(str(folder / "kernel.o"))
    (folder / "harness.c").write_text(render("cross_harness.c", symbol=symbol, arguments=arguments, tasks=tasks))
    include = Path(tvm_ffi.__file__).parent / "include"
    done = subprocess.run([gcc, "-O2", "-static", "-std=c11", f"-I{include}", "harness.c", "kernel.o", "-lm",
                           "-o", "kernel"], cwd=folder, capture_output=True, text=True)
    if done.returncode != 0:
        raise LlmcError(f"{compiler} could not link the {symbol} kernel: {done.stderr.strip()[-500:]}")
    return CrossKernel(folder / "kernel", arguments, qemu)
