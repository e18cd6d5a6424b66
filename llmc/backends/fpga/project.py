"""The Vitis project: rendering the templates of ``llmc/hls_templates``, writing the folder, running make."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path

from llmc.backends.fpga.design import INSTR_BITS, AcceleratorConfig, kernel_ports
from llmc.backends.fpga.target import Target
from llmc.backends.fpga.units import design_units
from llmc.errors import LlmcError
from llmc.folders import write_folder
from llmc.templating import render, static_file

BUILD_TARGETS = ("hw", "hw_emu", "sw_emu")
# project file -> template (".j2": rendered with the project; otherwise copied as is)
BUILD_FILES = {
    "Makefile": "build/Makefile.j2",
    "connectivity.cfg": "build/connectivity.cfg.j2",
    "hls_config.cfg": "build/hls_config.cfg.j2",
    "run_hls.tcl": "build/run_hls.tcl.j2",
    "host/host.cpp": "host/host.cpp.j2",
    "include/llmc_container.h": "include/llmc_container.h",
    "include/llmc_sha256.h": "include/llmc_sha256.h",
}


def project_context(name: str, target: Target, config: AcceleratorConfig, kernel_sources: Sequence[str]) -> dict:
    """The ``project`` dict every build and host template reads; ``kernel_sources`` are the kernel ``.cpp``
    files relative to the project folder, ``blackboxes`` the RTL units' black-box descriptions."""
    return {
        "name": name,
        "target": {"name": target.name, "part": target.part, "platform": target.platform, "slrs": target.slrs},
        "config": config.to_json(),
        "ports": [asdict(port) for port in kernel_ports(config)],
        "kernel_sources": list(kernel_sources),
        "blackboxes": [f"rtl/{unit.name}.json" for unit in design_units(config)],
        "clock_period_ns": 1000.0 / config.clock_mhz,
        "instr_bytes": INSTR_BITS // 8,
    }


def build_files(project: dict) -> dict[str, str]:
    """The build files, XRT host and container headers of a project (relative path -> text)."""
    return {
        path: render(template, project=project) if template.endswith(".j2") else static_file(template)
        for path, template in BUILD_FILES.items()
    }


# What building a project makes inside it (the Makefile's clean list, and llmc csim's executable):
# --force may replace a project that holds these besides the files llmc wrote.
BUILD_PRODUCTS = ("build", "_x", ".Xil", ".ipcache", "emconfig.json", "llmc_host", "*.xclbin", "*.xclbin.info",
                  "*.link_summary", "*.compile_summary", "*.log", "*.jou", "csim/csim.bin")


def write_project(out_dir: Path, files: Mapping[str, bytes | str], *, force: bool = False) -> None:
    """Write the project folder ``out_dir`` all or nothing, with its manifest (:mod:`llmc.folders`)."""
    write_folder(out_dir, files, kind="project", force=force, products=BUILD_PRODUCTS)


def build_project(project_dir: Path, target: str = "hw") -> None:
    """Run ``make TARGET=<target>`` in a written project, its output streaming to the console."""
    project_dir = Path(project_dir)
    if target not in BUILD_TARGETS:
        raise LlmcError(f"unknown build target '{target}' (expected one of {', '.join(BUILD_TARGETS)})")
    if not (project_dir / "Makefile").is_file():
        raise LlmcError(f"{project_dir}: no Makefile (not an llmc project folder?)")
    if shutil.which("v++") is None:
        raise LlmcError(
            "synthesis needs Vitis: v++ not found on PATH (source the Vitis settings64.sh); "
            f"the project in {project_dir} is ready for `make TARGET={target}`"
        )
    try:
        result = subprocess.run(["make", f"TARGET={target}"], cwd=project_dir, check=False)
    except FileNotFoundError:
        raise LlmcError("make not found on PATH: install GNU make to build the project") from None
    if result.returncode != 0:
        raise LlmcError(
            f"{project_dir}: make TARGET={target} failed (exit code {result.returncode}); see the output above"
        )
