"""``llmc deploy build/NAME -o DIR``: a self-contained folder to copy to the card's host.

The folder holds the design (``design.json`` with its board, ``program.bin``, ``weights.bin``,
the xclbin when built), the tokenizer, ``deploy.json`` (:class:`~llmc.deploy.runtime.Deployment`),
the driver ``run.py``, a README and ``requirements.txt``, and ``llmc/``: a copy of exactly the
llmc modules the runtime imports (found by importing it in a fresh interpreter), checked to need
no third-party package but NumPy. It is written all or nothing.
"""

from __future__ import annotations

import json
import mmap
import os
import subprocess
import sys
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path

from llmc.backends.fpga.isa import INSTR_BYTES
from llmc.deploy.layout import COMPUTE_UNIT, plan_buffers, register_map
from llmc.deploy.runtime import Deployment
from llmc.errors import LlmcError
from llmc.folders import check_output, write_folder
from llmc.ir.parser import ParseError, parse_module
from llmc.sim.image import ProjectImage
from llmc.templating import render
from llmc.version import __version__

HERE = Path(__file__).parent
RUNTIME = "llmc.deploy.runtime"
RUNTIME_NEEDS = {"numpy"}  # the only third-party package the runtime may import (pynq is imported on opening a card)
XCLBIN = "llmc_accel.hw.xclbin"  # what `llmc build` (make TARGET=hw) writes in a project
PROJECT_TOKENIZER = "model.tokenizer.json"
TOKENIZER = "tokenizer.json"
LARGE = ("program.bin", "weights.bin")
RUN_PRODUCTS = ("__pycache__", "*/__pycache__/*", "*.pyc")  # running run.py makes these


def project_deployment(project: Path) -> Deployment:
    """A compiled project as a deployment in place: ``llmc run build/NAME --device`` runs this."""
    project = Path(project)
    image = ProjectImage.load(project, weights=False)
    try:
        attrs = parse_module((project / "model.llmc").read_text()).attrs
    except FileNotFoundError:
        raise LlmcError(f"{project}: model.llmc missing (not a folder written by llmc compile?)") from None
    except ParseError as e:
        raise LlmcError(f"{project / 'model.llmc'}: {e}") from None
    return Deployment(project, image.name, image.program_digest, image.vocab, image.config.max_context,
                      int(attrs.get("bos_token_id", -1)), int(attrs.get("eos_token_id", -1)),
                      PROJECT_TOKENIZER if (project / PROJECT_TOKENIZER).is_file() else None,
                      XCLBIN if (project / XCLBIN).is_file() else None)


def deploy(project: Path, out: Path, *, xclbin: Path | None = None, force: bool = False) -> tuple[Deployment, str]:
    """Write the deployed folder ``out`` for ``project``; returns its deployment and the tokenizer
    note ("" when ``--prompt`` works)."""
    project, out = Path(project), Path(out)
    if out.resolve() == project.resolve():
        raise LlmcError(f"{out}: is the project itself; deploy into another folder")
    check_output(out, force=force, products=RUN_PRODUCTS)  # before any work
    source = project_deployment(project)
    image = source.load_image()  # every checksum, and the weights belong to the program
    binary = xclbin if xclbin is not None else (project / source.xclbin if source.xclbin else None)
    if binary is not None and not binary.is_file():
        raise LlmcError(f"{binary}: xclbin not found")
    _, reason = source.tokenizer_or_reason()
    deployed = replace(source, folder=out, tokenizer=TOKENIZER if source.tokenizer else None,
                       xclbin=binary.name if binary is not None else None)
    design = json.loads((project / "design.json").read_text())
    design.setdefault("target", image.target.to_json())  # the timing model then needs no YAML
    files: dict[str, bytes | str | memoryview] = {
        **runtime_files(),
        "run.py": (HERE / "templates" / "run.py").read_text(),
        "requirements.txt": (HERE / "requirements-runtime.txt").read_text(),
        "deploy.json": json.dumps(deployed.to_json(), indent=2, sort_keys=True) + "\n",
        "design.json": json.dumps(design, indent=2, sort_keys=True) + "\n",
        "README.md": readme(deployed, image, reason),
    }
    if source.tokenizer:
        files[TOKENIZER] = (project / source.tokenizer).read_bytes()
    with ExitStack() as stack:
        for name, path in [(n, project / n) for n in LARGE] + ([(binary.name, binary)] if binary else []):
            files[name] = _mapped(path, stack)
        write_folder(out, files, kind="deployment", force=force, products=RUN_PRODUCTS)
    return deployed, reason


def _mapped(path: Path, stack: ExitStack) -> memoryview:
    """A file's bytes without reading them into memory (weights may be gigabytes)."""
    f = stack.enter_context(open(path, "rb"))
    if os.fstat(f.fileno()).st_size == 0:
        return memoryview(b"")
    view = memoryview(stack.enter_context(mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)))
    stack.callback(view.release)
    return view


def runtime_files() -> dict[str, bytes]:
    """The llmc modules the runtime imports, by path relative to the folder holding ``llmc/``."""
    root = HERE.resolve().parent.parent  # the folder holding llmc/
    probe = ("import json, sys; import " + RUNTIME + "; "
             "print(json.dumps([[n, getattr(m, '__file__', None)] for n, m in list(sys.modules.items())]))")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, check=False)
    if result.returncode != 0:
        raise LlmcError(f"importing {RUNTIME} failed: {result.stderr.strip().splitlines()[-1:]}")
    modules = json.loads(result.stdout)
    third_party = {n.split(".")[0] for n, _ in modules} - set(sys.stdlib_module_names) - {"llmc"} - RUNTIME_NEEDS
    third_party = {n for n in third_party if not n.startswith("_")} - {"cython_runtime"}  # interpreter internals
    if third_party:
        raise LlmcError(f"{RUNTIME} imports {', '.join(sorted(third_party))}; the deployed runtime may need only numpy")
    files = {}
    for name, file in modules:
        if (name == "llmc" or name.startswith("llmc.")) and file:
            path = Path(file).resolve()
            files[path.relative_to(root).as_posix()] = path.read_bytes()
    return files


def readme(deployment: Deployment, image: ProjectImage, tokenizer_note: str) -> str:
    """The host's README: requirements, commands, the register map and the buffers of this design."""
    lanes = image.lanes or []
    programs = {b: len(p) * INSTR_BYTES for b, p in image.programs.items()}
    return render("README.md.j2",
        d=deployment, target=image.target, config=image.config, registers=register_map(image.config),
        buffers=plan_buffers(image.config, programs, [len(w) for w in lanes], image.kv_bytes,
                             int(image.io["io_bytes"])),
        compute_unit=COMPUTE_UNIT, tokenizer_note=tokenizer_note, version=__version__)

