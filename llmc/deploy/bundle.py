"""``llmc deploy build/NAME -o DIR``: a self-contained folder to copy to the card's host.

The folder holds the design (``design.json`` with its board, ``program.bin``, ``weights.bin``,
the xclbin when built; for a cluster ``cluster.json`` and those files, with their own manifest, in
one folder per card), the tokenizer, ``deploy.json`` (:class:`~llmc.deploy.runtime.Deployment`),
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
from llmc.backends.fpga.links import CLUSTER_FILE
from llmc.deploy.layout import COMPUTE_UNIT, io_buffer_bytes, plan_buffers, register_map
from llmc.deploy.runtime import ClusterDeployment, DeployedCard, Deployment
from llmc.errors import LlmcError
from llmc.folders import check_output, write_folder
from llmc.ir.parser import ParseError, parse_module
from llmc.manifest import MANIFEST as FOLDER_MANIFEST
from llmc.manifest import manifest_text
from llmc.sim.cluster import ClusterImage, is_cluster
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


def project_deployment(project: Path) -> Deployment | ClusterDeployment:
    """A compiled project or cluster as a deployment in place: ``llmc run build/NAME --device`` runs this."""
    project = Path(project)
    if is_cluster(project):
        return _cluster_deployment(project)
    image = ProjectImage.load(project, weights=False)
    bos, eos = _frame_ids(project)
    return Deployment(project, image.name, image.vocab, image.config.max_context, bos, eos,
                      PROJECT_TOKENIZER if (project / PROJECT_TOKENIZER).is_file() else None,
                      program_digest=image.program_digest, xclbin=XCLBIN if (project / XCLBIN).is_file() else None)


def _cluster_deployment(folder: Path) -> ClusterDeployment:
    """A cluster folder in place: each card's folder, digest and xclbin when built; card 0's tokenizer."""
    image = ClusterImage.load(folder, weights=False)
    cards = []
    for card in image.cards:
        name = card.path.relative_to(folder).as_posix()
        cards.append(DeployedCard(name, card.program_digest, f"{name}/{XCLBIN}" if (card.path / XCLBIN).is_file() else None))
    bos, eos = _frame_ids(image.cards[0].path)
    tokenizer = f"{cards[0].folder}/{PROJECT_TOKENIZER}"
    return ClusterDeployment(folder, image.name, image.vocab, image.max_context, bos, eos,
                             tokenizer if (folder / tokenizer).is_file() else None, parallel=image.parallel,
                             cards=tuple(cards))


def _frame_ids(project: Path) -> tuple[int, int]:
    """The begin and end token ids of the model ``project`` was compiled from (-1: none)."""
    try:
        attrs = parse_module((project / "model.llmc").read_text()).attrs
    except FileNotFoundError:
        raise LlmcError(f"{project}: model.llmc missing (not a folder written by llmc compile?)") from None
    except ParseError as e:
        raise LlmcError(f"{project / 'model.llmc'}: {e}") from None
    return int(attrs.get("bos_token_id", -1)), int(attrs.get("eos_token_id", -1))


def deploy(project: Path, out: Path, *, xclbin: Path | None = None,
           force: bool = False) -> tuple[Deployment | ClusterDeployment, str]:
    """Write the deployed folder ``out`` for ``project`` (one card's, or a cluster's with one folder
    per card); returns its deployment and the tokenizer note ("" when ``--prompt`` works)."""
    project, out = Path(project), Path(out)
    if out.resolve() == project.resolve():
        raise LlmcError(f"{out}: is the project itself; deploy into another folder")
    check_output(out, force=force, products=RUN_PRODUCTS)  # before any work
    source = project_deployment(project)
    if isinstance(source, ClusterDeployment) and xclbin is not None:
        raise LlmcError(f"{project}: a cluster ships each card's own xclbin (CARD/{XCLBIN}, when built): "
                        "--xclbin applies to one-card projects")
    _, reason = source.tokenizer_or_reason()
    tokenizer = TOKENIZER if source.tokenizer else None
    with ExitStack() as stack:
        files: dict[str, bytes | str | memoryview]
        if isinstance(source, ClusterDeployment):
            cluster = source.load_image()  # every checksum, and each card's weights belong to its program
            deployed: Deployment | ClusterDeployment = replace(source, folder=out, tokenizer=tokenizer)
            files = {CLUSTER_FILE: (project / CLUSTER_FILE).read_bytes(),
                     "README.md": cluster_readme(deployed, cluster, reason)}
            for card, image in zip(source.cards, cluster.cards):
                design = _design_files(image, project / card.xclbin if card.xclbin else None, stack)
                files |= {f"{card.folder}/{name}": data for name, data in design.items()}
                files[f"{card.folder}/{FOLDER_MANIFEST}"] = manifest_text(design, "deployment")
        else:
            image = source.load_image()  # every checksum, and the weights belong to the program
            binary = xclbin if xclbin is not None else (project / source.xclbin if source.xclbin else None)
            if binary is not None and not binary.is_file():
                raise LlmcError(f"{binary}: xclbin not found")
            deployed = replace(source, folder=out, tokenizer=tokenizer,
                               xclbin=binary.name if binary is not None else None)
            files = {**_design_files(image, binary, stack), "README.md": readme(deployed, image, reason)}
        files |= {
            **runtime_files(),
            "run.py": (HERE / "templates" / "run.py").read_text(),
            "requirements.txt": (HERE / "requirements-runtime.txt").read_text(),
            "deploy.json": json.dumps(deployed.to_json(), indent=2, sort_keys=True) + "\n",
        }
        if source.tokenizer:
            files[TOKENIZER] = (project / source.tokenizer).read_bytes()
        write_folder(out, files, kind="deployment", force=force, products=RUN_PRODUCTS)
    return deployed, reason


def _design_files(image: ProjectImage, xclbin: Path | None, stack: ExitStack) -> dict[str, str | memoryview]:
    """A design's files in a deployed folder: ``design.json`` with its board recorded (the timing
    model then needs no YAML), the program and weights, and the xclbin when there is one."""
    design = json.loads((image.path / "design.json").read_text())
    design.setdefault("target", image.target.to_json())
    files: dict[str, str | memoryview] = {"design.json": json.dumps(design, indent=2, sort_keys=True) + "\n"}
    for name, path in [(n, image.path / n) for n in LARGE] + ([(xclbin.name, xclbin)] if xclbin else []):
        files[name] = _mapped(path, stack)
    return files


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
    return render("README.md.j2", d=deployment, target=image.target, cluster=None,
                  cards=[_card_tables(image, "", deployment.xclbin)], compute_unit=COMPUTE_UNIT,
                  tokenizer_note=tokenizer_note, version=__version__)


def cluster_readme(deployment: ClusterDeployment, cluster: ClusterImage, tokenizer_note: str) -> str:
    """The README of a cluster: as one card's, with how the host drives the cards and each card's tables."""
    cards = [_card_tables(image, card.folder, card.xclbin) for card, image in zip(deployment.cards, cluster.cards)]
    return render("README.md.j2", d=deployment, target=cluster.cards[0].target, cluster=cluster, cards=cards,
                  compute_unit=COMPUTE_UNIT, tokenizer_note=tokenizer_note, version=__version__)


def _card_tables(image: ProjectImage, folder: str, xclbin: str | None) -> dict:
    """What the README says of one design: its folder, xclbin, io map, registers and buffers."""
    lanes = image.lanes or []
    programs = {b: len(p) * INSTR_BYTES for b, p in image.programs.items()}
    return {"folder": folder, "xclbin": xclbin, "config": image.config, "io": image.io,
            "registers": register_map(image.config),
            "buffers": plan_buffers(image.config, programs, [len(w) for w in lanes], image.kv_bytes,
                                    io_buffer_bytes(image.io))}
