"""``llmc compile MODEL --board u280``: lower, explore, compile, pack and write the project.

The project folder holds the kernel sources and header library, the Vitis build files and XRT
host, ``program.bin`` (one program per length bucket) and ``weights.bin`` (one section per weight
channel), the lowered program as IR (``model.llmc``, run by ``llmc run DIR``), ``design.json``
and the reports.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from llmc.backends.fpga import pack
from llmc.backends.fpga.accuracy import lowering_accuracy
from llmc.backends.fpga.codegen import KERNEL_SOURCES, kernel_files
from llmc.backends.fpga.compile import Compiled, Links, activation_buffers, compile_step
from llmc.backends.fpga.container import container_bytes
from llmc.backends.fpga.design import WORD_BITS, AcceleratorConfig, bucket_for
from llmc.backends.fpga.dse import Matrix, ModelNeeds, check_fits, explore
from llmc.backends.fpga.isa import Instruction, encode_program
from llmc.backends.fpga.lower import lower
from llmc.backends.fpga.project import BUILD_PRODUCTS, build_files, project_context, write_project
from llmc.backends.fpga.report import render_report
from llmc.backends.fpga.resources import Utilisation
from llmc.backends.fpga.target import Target, load_target
from llmc.backends.fpga.timing import TimingModel, run_lengths
from llmc.errors import LlmcError
from llmc.folders import check_output
from llmc.io import weights_bytes
from llmc.ir.graph import Module
from llmc.ir.printer import print_module


@dataclass
class Design:
    """Everything a compile produced, before it is written."""

    name: str
    target: Target
    lowered: Module
    needs: ModelNeeds
    config: AcceleratorConfig
    utilisation: Utilisation
    compiled: Compiled


def model_needs(hw: Module, max_context: int) -> ModelNeeds:
    step = hw.functions["step"]
    mms = [n for n in step.nodes if n.op in ("hw_matmul", "hw_expert_matmul")]
    attn = next(n for n in step.nodes if n.op == "hw_attention")
    logits = {n.inputs[0].name for n in step.nodes if n.op == "hw_to_float"}
    codes = {n.outputs[0].name: n.inputs[2 if n.op == "hw_expert_matmul" else 1] for n in mms}
    widths = ({n.outputs[0].type.shape[1].value for n in mms if n.outputs[0].name not in logits}
              | {n.inputs[0].type.shape[1].value for n in mms})  # every activation row but the logits
    weight_bytes = 0
    matrices = []
    producers, stored = step.producers(), set()
    for n in mms:
        c = codes[n.outputs[0].name]
        *experts, rows, k = c.type.static_shape()
        sparse = tuple(int(x) for x in n.attrs.get("sparse", "").split(":")) if n.attrs.get("sparse", "") else None
        bits, param = c.type.dtype.bits, producers[c.name].attrs["name"]
        count = 0 if param in stored else (experts[0] if experts else 1)
        stored.add(param)
        weight_bytes += count * pack.code_bytes(n.attrs["engine"], bits, rows, k, sparse)
        half, has_min = n.attrs.get("half_scales", False), n.attrs.get("has_min", False)
        per_group = (2 if half else 4) + (2 if n.attrs["has_zero"] else 0) + (4 if has_min else 0)
        weight_bytes += count * rows * (k // n.attrs["group"]) * per_group
        matrices.append(Matrix(rows, k, n.attrs["engine"], bits, k // n.attrs["group"], n.attrs["has_zero"],
                               n.attrs["has_bias"], sparse, count, half, has_min))
    embed = next((n.inputs[0] for n in step.nodes if n.op == "hw_embed"), None)  # a cluster's card 0 only
    vocab, model_dim = embed.type.static_shape() if embed is not None else (0, mms[0].inputs[0].type.shape[1].value)
    weight_bytes += vocab * model_dim * 2
    sparse_pat = {n.attrs.get("sparse", "") for n in mms if n.attrs.get("sparse", "")}
    if len(sparse_pat) > 1:
        raise LlmcError(f"{hw.name}: layers use several N:M patterns ({', '.join(sorted(sparse_pat))}); the sparse "
                        "engine supports one")
    kv_heads, head_dim = attn.attrs["kv_heads"], attn.attrs["head_dim"]
    layers = len([n for n in step.nodes if n.op == "hw_attention"])
    return ModelNeeds(
        layers=layers, hidden=model_dim, intermediate=max(widths),
        heads=attn.attrs["heads"], kv_heads=kv_heads, head_dim=head_dim, vocab=vocab, max_context=max_context,
        weight_bits=tuple(sorted({codes[n.outputs[0].name].type.dtype.bits for n in mms if n.attrs["engine"] != "lut"},
                                 reverse=True)),
        sparse=tuple(int(x) for x in sparse_pat.pop().split(":")) if sparse_pat else None,
        lut_bits=tuple(sorted({codes[n.outputs[0].name].type.dtype.bits for n in mms if n.attrs["engine"] == "lut"})),
        weight_bytes=weight_bytes, kv_bytes_per_token=layers * 2 * kv_heads * (head_dim + 4),
        act_buffers=activation_buffers(hw), matrices=tuple(matrices))


class DesignTimer:
    """The timing model over the programs ``hw`` compiles to for a design (compiled once for designs that differ
    only in clock and port width, which the programs do not depend on)."""

    def __init__(self, hw: Module, board: Target, links: Links | None = None) -> None:
        self.hw, self.board, self.links = hw, board, links
        self.compiled: dict[AcceleratorConfig, dict[int, list[Instruction]]] = {}

    def programs(self, config: AcceleratorConfig) -> dict[int, list[Instruction]]:
        key = replace(config, clock_mhz=0.0, port_bits=WORD_BITS)
        if key not in self.compiled:
            self.compiled[key] = compile_step(self.hw, config, with_data=False, links=self.links).programs
        return self.compiled[key]

    def decode_step(self, config: AcceleratorConfig) -> float:
        """Seconds of a decode step at half the compiled context (a whole context's average position)."""
        return self._decode_step(TimingModel.for_design(config, self.board), config)

    def run(self, config: AcceleratorConfig) -> float:
        """Seconds of the run behind a design's figures (:func:`~.timing.run_lengths`): the prompt, then each
        generated token timed as the decode step at half the context."""
        prefill, decode = run_lengths(config.max_context)
        timing = TimingModel.for_design(config, self.board)
        prompt, _ = timing.run(self.programs(config), prefill, 0)
        return timing.seconds(prompt) + decode * self._decode_step(timing, config)

    def _decode_step(self, timing: TimingModel, config: AcceleratorConfig) -> float:
        programs = self.programs(config)
        return timing.seconds(timing.program(programs[bucket_for(programs, 1)], 1, config.max_context // 2))


def check_capacity(module: Module, board: Target, cards: int = 1) -> None:
    """Refuse, before lowering, a model whose weights alone cannot fit the memory of ``cards``
    boards (a lower bound: float weights at 8 bits, the narrowest the lowering stores them; codes
    at their width). The exact check, KV cache included, follows the lowering."""
    need = sum(p.type.numel().value * (8 if p.type.dtype.is_float else p.type.dtype.bits) // 8
               for p in module.params.values())
    have = board.memory.total_bytes * cards
    if need > have:
        boards = f"the {board.name} has" if cards == 1 else f"{cards} {board.name} cards have"
        raise LlmcError(f"{module.name}: the weights need at least {need / 2**30:.1f} GiB; {boards} "
                        f"{have / 2**30:.1f} GiB of {board.memory.kind.upper()}")


def compiled_context(module: Module, max_context: int | None) -> int:
    """The KV-cache length to compile for: the model's, cut to ``max_context`` when given."""
    context = int(module.attrs.get("max_position", 0) or 0)
    context = min(context, max_context) if max_context else context
    if context <= 0:
        raise LlmcError(f"{module.name}: unknown context length: pass --context")
    return context


def design(module: Module, target: str, *, name: str | None = None, max_context: int | None = None,
           max_rows: int = 64, clock_mhz: float | None = None) -> Design:
    """Lower ``module`` and compile it for ``target`` (a bundled name or a board YAML), at ``clock_mhz`` when given
    (else the exploration chooses the clock)."""
    board = load_target(target)
    context = compiled_context(module, max_context)
    check_capacity(module, board)
    return design_lowered(lower(module, context), board, name or module.name, context, max_rows, clock_mhz=clock_mhz)


def design_lowered(hw: Module, board: Target, name: str, context: int, max_rows: int,
                   links: Links | None = None, *, clock_mhz: float | None = None) -> Design:
    """Explore and compile a lowered module (a cluster's card with its ``links``) for ``board``."""
    needs = model_needs(hw, context)
    timer = DesignTimer(hw, board, links)
    config, _ = explore(board, needs, max_rows=max_rows, clock_mhz=clock_mhz, decode_time=timer.decode_step,
                        run_time=timer.run)
    compiled = compile_step(hw, config, links=links)
    utilisation = check_fits(config, board)
    if not utilisation.fits():
        kind, used = utilisation.scarcest()
        raise LlmcError(f"{hw.name}: the design needs {used:.0%} of {board.name}'s {kind}")
    capacity = board.memory.channel_bytes
    for i, lane in enumerate(compiled.weights):
        if lane.size > capacity:
            raise LlmcError(f"{hw.name}: weight channel {i} needs {lane.size / 2**20:.0f} MiB; a {board.name} "
                            f"channel holds {capacity / 2**20:.0f} MiB")
    return Design(name, board, hw, needs, config, utilisation, compiled)


def program_size(programs: dict[int, bytes], max_rows: int, context: int) -> dict[str, float]:
    """The bucketed programs' bytes against one program per sequence length ``1..context``.

    A program compiled for one length has the instructions of the bucket program serving it (only
    row counts differ), and a length over ``max_rows`` runs as chunks of at most ``max_rows``, so
    each length costs at least the bytes of the bucket program its chunks use.
    """
    buckets = sorted(programs)
    per_length = sum(len(programs[next(b for b in buckets if b >= min(n, max_rows))]) for n in range(1, context + 1))
    total = sum(len(p) for p in programs.values())
    return {"bytes": total, "one_per_length_bytes": per_length, "ratio": total / per_length}


def project_files(d: Design, tokenizer_json: str | None, accuracy: dict[str, Any]) -> dict[str, bytes | str]:
    """Every file of the project folder; ``accuracy`` goes into the report as it is."""
    encoded = {b: encode_program(p) for b, p in d.compiled.programs.items()}
    programs = {f"bucket_{b}": p for b, p in encoded.items()}
    digest = hashlib.sha256(b"".join(programs[k] for k in sorted(programs))).hexdigest()
    io = d.compiled.io
    meta = {"name": d.name, "program_digest": digest, "buckets": list(d.config.buckets),
            "io": {k: io[k] for k in ("ids_offset", "pos_offset", "logits_offset")}, "io_bytes": io["io_bytes"],
            "vocab": io["vocab"], "kv_bytes_per_channel": d.compiled.kv_bytes,
            "kv_bytes": {f"kv{i}": n for i, n in enumerate(d.compiled.kv_bytes)}, "max_context": d.config.max_context}
    files: dict[str, bytes | str] = {"program.bin": container_bytes("program", meta, programs)}
    has_weights = d.lowered.has_weights
    files["model.llmc"] = print_module(d.lowered)
    if has_weights:
        sections = {f"w{i}": bytes(lane.data or b"") for i, lane in enumerate(d.compiled.weights)}
        files["weights.bin"] = container_bytes("weights", meta, sections)
        files["model.safetensors"] = weights_bytes(d.lowered, files["model.llmc"])
    if tokenizer_json is not None:
        files["model.tokenizer.json"] = tokenizer_json
    files["program.txt"] = "".join(f"# bucket {b}\n" + "".join(i.text() + "\n" for i in p)
                                   for b, p in d.compiled.programs.items())
    timing = TimingModel.for_design(d.config, d.target)
    prefill, decode = run_lengths(d.config.max_context)
    pre, steps = timing.run(d.compiled.programs, prefill, decode)
    flat = [c for step in steps for c in step]
    report = {"name": d.name, "target": d.target.name, "config": d.config.to_json(), "needs": {
        k: getattr(d.needs, k) for k in ("layers", "hidden", "intermediate", "heads", "kv_heads", "head_dim",
                                         "vocab", "max_context", "weight_bytes", "kv_bytes_per_token")},
        "resources": {"units": {u: r.__dict__ for u, r in d.utilisation.units.items()},
                      "fractions": d.utilisation.fractions},
        "program_bytes": {k: len(v) for k, v in programs.items()}, "program_digest": digest,
        "program_size": program_size(encoded, d.config.max_rows, d.config.max_context), "accuracy": accuracy,
        "weight_channel_bytes": [lane.size for lane in d.compiled.weights], "kv_channel_bytes": d.compiled.kv_bytes,
        "layers": d.compiled.layers, "has_weights": has_weights,
        "modelled_decode": {"prefill_tokens": prefill, "decode_tokens": decode,
                            "prefill_ms": timing.seconds(pre) * 1e3, "ms_per_token": timing.seconds(flat) / decode * 1e3,
                            "hbm_bytes_per_token": sum(c.hbm_bytes for c in flat) // decode,
                            "hbm_utilisation": timing.hbm_utilisation(flat),
                            "tokens_per_s": decode / timing.seconds(flat)}}
    files["report.json"] = json.dumps(report, indent=2, sort_keys=True) + "\n"
    files["report.md"] = render_report(report, d.utilisation)
    files["design.json"] = json.dumps({"config": d.config.to_json(), "io": io, "buffers": d.compiled.buffers,
                                       "target": d.target.to_json()},
                                      indent=2, sort_keys=True) + "\n"
    context = project_context(d.name, d.target, d.config, KERNEL_SOURCES)
    files.update(build_files(context))
    files.update(kernel_files(d.name, d.lowered, d.compiled, timing))
    return files


def compile_project(module: Module, target: str, out_dir: Path, *, tokenizer_json: str | None = None,
                    force: bool = False, name: str | None = None, max_context: int | None = None,
                    eval_windows: int = 0, max_rows: int = 64, clock_mhz: float | None = None) -> Design:
    """Compile ``module`` for ``target`` and write the project folder ``out_dir`` (all or nothing).

    ``eval_windows`` > 0 measures the lowered program against ``module`` on that many 256-token
    windows (at most the compiled context) of the corpus's test split (:mod:`.accuracy`) and writes the result into the report.
    """
    out_dir = Path(out_dir)
    check_output(out_dir, force=force, products=BUILD_PRODUCTS)
    if eval_windows < 0:
        raise LlmcError(f"eval_windows must be 0 or more, got {eval_windows}")
    d = design(module, target, name=name or out_dir.name, max_context=max_context, max_rows=max_rows,
               clock_mhz=clock_mhz)
    accuracy = lowering_accuracy(module, d.lowered, tokenizer_json, eval_windows, d.config.max_context)
    write_project(out_dir, project_files(d, tokenizer_json, accuracy), force=force)
    return d
