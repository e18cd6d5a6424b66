"""A compiled project as the simulators and runtimes read it: configuration, programs, weights, memory map.

Only ``design.json``, ``program.bin`` and (when compiled with weights) ``weights.bin`` are read;
the containers' checksums are verified and the weights must belong to the program (same
``program_digest``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from llmc.backends.fpga.container import Container, read_container
from llmc.backends.fpga.design import AcceleratorConfig, bucket_for
from llmc.backends.fpga.isa import Instruction, decode_program
from llmc.backends.fpga.target import Target, load_target, target_from_json
from llmc.errors import LlmcError
from llmc.manifest import check_files


@dataclass(frozen=True)
class ProjectImage:
    """What the accelerator holds: ``programs`` per bucket, the weight channels' bytes (None for a
    project compiled with ``--shapes-only``), the KV channels' sizes and the io map; and the board
    (recorded in design.json, else the bundled board of the design's target name)."""

    path: Path
    name: str
    config: AcceleratorConfig
    programs: dict[int, list[Instruction]]
    lanes: list[np.ndarray] | None
    kv_bytes: list[int]
    io: dict[str, int]
    program_digest: str
    target: Target

    @property
    def vocab(self) -> int:
        return int(self.io["vocab"])

    @property
    def has_weights(self) -> bool:
        return self.lanes is not None

    def bucket_for(self, rows: int) -> int:
        return bucket_for(self.config.buckets, rows)

    def check_run(self, length: int, ids: Sequence[int]) -> None:
        """Refuse appending ``ids`` to a sequence of ``length`` tokens (:func:`check_run`)."""
        check_run(length, ids, self.config.max_context, self.vocab)

    @classmethod
    def load(cls, project: Path | str, *, weights: bool = True) -> ProjectImage:
        """Read ``project``; ``weights=False`` skips ``weights.bin`` (timing only)."""
        project = Path(project)
        design_path = project / "design.json"
        if not design_path.is_file():
            raise LlmcError(f"{project}: not a compiled llmc project (design.json missing)")
        if not (project / "program.bin").is_file():
            raise LlmcError(f"{project}: program.bin missing")
        check_files(project, ["design.json", "program.bin", *(["weights.bin"] if weights else [])])
        try:
            design = json.loads(design_path.read_text())
            config = AcceleratorConfig.from_json(design["config"])
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise LlmcError(f"{design_path}: corrupt design description ({e})") from None
        program = read_container(project / "program.bin", "program")
        programs = {b: decode_program(bytes(program.sections[f"bucket_{b}"])) for b in config.buckets
                    if f"bucket_{b}" in program.sections}
        if len(programs) != len(config.buckets):
            raise LlmcError(f"{project / 'program.bin'}: buckets {sorted(programs)} do not match the design's "
                            f"{list(config.buckets)}")
        digest = str(program.metadata.get("program_digest", ""))
        if "target" in design:
            target = target_from_json(design["target"], str(design_path))
        else:
            target = load_target(config.target)
        lanes = None
        if weights and (project / "weights.bin").is_file():
            lanes = _lanes(project / "weights.bin", digest, len(config.weight_channels))
        return cls(project, str(program.metadata.get("name", project.name)), config, programs, lanes,
                   [int(x) for x in program.metadata["kv_bytes_per_channel"]], dict(design["io"]), digest, target)


def check_run(length: int, ids: Sequence[int], max_context: int, vocab: int) -> None:
    """Refuse appending ``ids`` to a sequence of ``length`` tokens past the compiled context or the vocabulary."""
    if length + len(ids) > max_context:
        raise LlmcError(f"sequence of {length + len(ids)} tokens exceeds the compiled context of {max_context}")
    if any(not 0 <= int(i) < vocab for i in ids):
        raise LlmcError(f"token id outside the vocabulary of {vocab}")


def _lanes(path: Path, digest: str, count: int) -> list[np.ndarray]:
    box: Container = read_container(path, "weights")
    if box.metadata.get("program_digest") != digest:
        raise LlmcError(f"{path}: these weights belong to another program (program_digest differs): "
                        "compile them together")
    missing = [f"w{i}" for i in range(count) if f"w{i}" not in box.sections]
    if missing:
        raise LlmcError(f"{path}: weight channel sections {', '.join(missing)} missing")
    return [np.frombuffer(box.sections[f"w{i}"], dtype=np.uint8) for i in range(count)]
