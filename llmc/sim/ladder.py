"""One verification ladder: interpreter -> ISS -> C-sim -> RTL units on the same inputs.

Each level runs the same prompt (prefill) and greedy decode steps; the tokens fed at every step
are the interpreter's, so a mismatch at one step does not change later inputs. Logits are compared
bit for bit (the integer paths are exact and the float conversions identical). The RTL level
drives the project's own matrix-engine units with the int8 activations and weight codes of the
first layer on each engine, captured from the ISS run, and compares every group dot product with
the interpreter's semantics. Every level runs under a time limit.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from llmc.errors import LlmcError
from llmc.sim.iss import Iss

LEVELS = ("interpreter", "iss", "csim", "rtl")
CYCLES_TOLERANCE = 0.10  # the cycles level: C-simulation's account within 10% of the timing model, per call
ALL_LEVELS = (*LEVELS, "cycles")  # asked for by name: the timing model of an XMM prefill is a bound, not exact


@dataclass
class LevelResult:
    level: str
    compared: int
    mismatches: int
    tolerance: str
    seconds: float
    detail: str = ""
    against: str = ""

    def to_json(self) -> dict:
        return {"level": self.level, "mismatches": self.mismatches, "compared": self.compared,
                "tolerance": self.tolerance, "against": self.against, "seconds": round(self.seconds, 3),
                "detail": self.detail}


@dataclass
class Trace:
    """The logits of one level: the prompt's rows, then one row per decode step."""

    steps: list[np.ndarray] = field(default_factory=list)

    def compare(self, other: Trace) -> tuple[int, int]:
        """(compared, mismatching) logits, bit for bit."""
        compared = mismatches = 0
        for a, b in zip(self.steps, other.steps):
            compared += a.size
            mismatches += int(np.count_nonzero(a.view(np.uint32) != b.view(np.uint32)))
        return compared, mismatches + abs(len(self.steps) - len(other.steps))


class Deadline:
    def __init__(self, level: str, seconds: float) -> None:
        self.level, self.limit, self.start = level, seconds, time.monotonic()

    def check(self) -> None:
        if time.monotonic() - self.start > self.limit:
            raise LlmcError(f"verify: the {self.level} level ran past its time limit of {self.limit:g} s")


def run_trace(run: Callable[[Sequence[int]], np.ndarray], prompt: Sequence[int], tokens: Sequence[int],
              deadline: Deadline) -> Trace:
    """Feed ``prompt`` then each of ``tokens``; ``run(ids)`` returns logits [len(ids), vocab]."""
    trace = Trace([np.asarray(run(prompt), dtype=np.float32)])
    for token in tokens:
        deadline.check()
        trace.steps.append(np.asarray(run([token]), dtype=np.float32))
    deadline.check()
    return trace


def verify_project(project: Path, prompt: Sequence[int], decode: int, *, levels: Sequence[str] = LEVELS,
                   timeout_s: float = 600.0, rtl_vectors: int = 2000) -> list[LevelResult]:
    """Run the ladder on ``project``; one result per level (the interpreter is the reference)."""
    from llmc.generate.step import StepDevice
    from llmc.io import load_module
    from llmc.sim.iss import IssDevice

    unknown = [lv for lv in levels if lv not in ALL_LEVELS]
    if unknown:
        raise LlmcError(f"verify: unknown level '{unknown[0]}' (choose from {', '.join(ALL_LEVELS)})")
    project = Path(project)
    out: list[LevelResult] = []
    start = time.monotonic()
    reference = StepDevice(load_module(project / "model.llmc"))
    deadline = Deadline("interpreter", timeout_s)
    ref_trace = Trace([reference.run(prompt)])
    tokens: list[int] = []
    for _ in range(decode):
        deadline.check()
        tokens.append(int(np.argmax(ref_trace.steps[-1][-1])))
        ref_trace.steps.append(reference.run([tokens[-1]]))
    out.append(LevelResult("interpreter", sum(s.size for s in ref_trace.steps), 0, "reference",
                           time.monotonic() - start, f"{len(prompt)} prompt tokens, {decode} decode steps"))
    iss_trace = None
    iss = None
    if "iss" in levels or "rtl" in levels:
        start = time.monotonic()
        iss = IssDevice(project)
        iss.iss.capture = {}
        iss_trace = run_trace(iss.run, prompt, tokens, Deadline("iss", timeout_s))
        compared, bad = iss_trace.compare(ref_trace)
        if "iss" in levels:
            out.append(LevelResult("iss", compared, bad, "bit-exact", time.monotonic() - start, against="interpreter"))
    if "csim" in levels or "cycles" in levels:
        level, accounts = _csim_level(project, prompt, tokens, ref_trace, iss_trace, timeout_s)
        if "csim" in levels:
            out.append(level)
        if "cycles" in levels:
            out.append(_cycles_level(project, len(prompt), accounts))
    if "rtl" in levels:
        assert iss is not None
        out.extend(_rtl_levels(iss.iss, timeout_s, rtl_vectors))
    return out


CLUSTER_LEVELS = ("interpreter", "iss", "csim")


def verify_cluster(folder: Path, prompt: Sequence[int], decode: int, *, levels: Sequence[str] = CLUSTER_LEVELS,
                   timeout_s: float = 600.0) -> list[LevelResult]:
    """The ladder of a cluster folder: the cards' modules run as one cluster (the reference), the
    cards' ISSs and their C-simulations run segment by segment, all bit for bit."""
    from llmc.generate.step import ClusterStepDevice
    from llmc.io import load_module
    from llmc.sim.cluster import ClusterImage, ClusterIssDevice

    unknown = [lv for lv in levels if lv not in CLUSTER_LEVELS]
    if unknown:
        raise LlmcError(f"verify: level '{unknown[0]}' does not apply to a cluster (choose from "
                        f"{', '.join(CLUSTER_LEVELS)})")
    image = ClusterImage.load(folder)
    start = time.monotonic()
    reference = ClusterStepDevice([load_module(card.path / "model.llmc") for card in image.cards])
    ref_trace = Trace([reference.run(prompt)])
    tokens: list[int] = []
    deadline = Deadline("interpreter", timeout_s)
    for _ in range(decode):
        deadline.check()
        tokens.append(int(np.argmax(ref_trace.steps[-1][-1])))
        ref_trace.steps.append(reference.run([tokens[-1]]))
    out = [LevelResult("interpreter", sum(s.size for s in ref_trace.steps), 0, "reference", time.monotonic() - start,
                       f"{len(image.cards)} cards ({image.parallel}), {len(prompt)} prompt tokens, {decode} decode steps")]
    if "iss" in levels:
        start = time.monotonic()
        trace = run_trace(ClusterIssDevice(image).run, prompt, tokens, Deadline("iss", timeout_s))
        out.append(LevelResult("iss", *trace.compare(ref_trace), "bit-exact", time.monotonic() - start,
                               against="interpreter"))
    if "csim" in levels:
        from llmc.sim.cluster_csim import ClusterCsimDevice

        start = time.monotonic()
        with ClusterCsimDevice(folder, timeout=timeout_s) as device:
            trace = run_trace(device.run, prompt, tokens, Deadline("csim", timeout_s))
        out.append(LevelResult("csim", *trace.compare(ref_trace), "bit-exact", time.monotonic() - start,
                               against="interpreter"))
    return out


def _csim_level(project: Path, prompt: Sequence[int], tokens: Sequence[int], ref: Trace, iss: Trace | None,
                timeout_s: float) -> tuple[LevelResult, list]:
    """The C-simulation's logits against the ISS's (or the interpreter's), and its cycle accounts per call."""
    from llmc.sim.csim import CsimDevice, build_csim

    start = time.monotonic()
    exe = build_csim(project, timeout=timeout_s)
    with CsimDevice(project, exe, timeout=timeout_s) as device:
        trace = run_trace(device.run, prompt, tokens, Deadline("csim", timeout_s))
        accounts = list(device.accounts)
    against = iss if iss is not None else ref
    compared, bad = trace.compare(against)
    return LevelResult("csim", compared, bad, "bit-exact", time.monotonic() - start,
                       against="iss" if iss is not None else "interpreter"), accounts


def _cycles_level(project: Path, prompt: int, accounts: list) -> LevelResult:
    """Each call's cycle account against the timing model's cycles for the same rows and position."""
    from llmc.backends.fpga.timing import TimingModel
    from llmc.sim.image import ProjectImage

    start = time.monotonic()
    image = ProjectImage.load(project, weights=False)
    timing = TimingModel.for_image(image)
    pre, steps = timing.run(image.programs, prompt, len(accounts) - 1)
    ratios = [account.cycles / sum(c.cycles for c in costs) for account, costs in zip(accounts, [pre, *steps])]
    worst = max(range(len(ratios)), key=lambda i: abs(ratios[i] - 1))
    bad = sum(abs(r - 1) > CYCLES_TOLERANCE for r in ratios)
    name = "the prompt" if worst == 0 else f"decode step {worst}"
    return LevelResult("cycles", len(ratios), bad, f"{CYCLES_TOLERANCE:.0%}", time.monotonic() - start,
                       f"worst: {name}, C-sim account {ratios[worst]:.3g}x the timing model", against="timing model")


def _rtl_levels(iss: Iss, timeout_s: float, vectors: int) -> list[LevelResult]:
    from llmc.sim.rtl import SIMULATORS, check_unit

    results = []
    cases = unit_cases(iss, vectors)
    if not cases:
        return [LevelResult("rtl", 0, 0, "bit-exact", 0.0, "the design instantiates no RTL units (dense engines only)")]
    for case in cases:
        for simulator in SIMULATORS:
            deadline = Deadline(f"rtl {case.unit} on {simulator}", timeout_s)
            r = check_unit(case.unit, case.config, case.x, case.w, case.zeros, simulator, timeout_s)
            deadline.check()
            results.append(LevelResult(f"rtl:{case.unit}:{simulator}", r.compared, r.mismatches, "bit-exact",
                                       r.seconds, case.layer, against="interpreter"))
    return results


@dataclass
class UnitCase:
    """Group dot products of one layer, as the RTL unit of its engine computes them."""

    unit: str
    config: dict
    layer: str
    x: np.ndarray
    w: np.ndarray
    zeros: np.ndarray | None


def unit_cases(iss: Iss, vectors: int, seed: int = 0) -> list[UnitCase]:
    """For each RTL unit the design instantiates, up to ``vectors`` (activation row, output, group) products of
    the first layer that runs on it, from the int8 activations the ISS captured and the layer's codes."""
    from llmc.backends.fpga.units import unit_for
    from llmc.ir.ops import hw_math as hm

    assert iss.capture is not None, "run the ISS with capture on first"
    rng = np.random.default_rng(seed)
    config = iss.image.config
    done: set[str] = set()  # the units that have their cases: the first layer on each
    out: list[UnitCase] = []
    for offset, x in iss.capture.items():
        w = iss.weights[offset]
        unit = unit_for(config, w.attrs["engine"], w.bits)
        if unit is None or unit.name in done:
            continue
        done.add(unit.name)
        group = w.attrs["group"]
        xq, _ = hm.quant8(x, x.shape[-1])
        codes = w.inputs[0]
        zeros = w.inputs[2] if w.has_zero else None
        rows, n, groups = len(xq), len(codes), codes.shape[1] // group
        picks = rng.choice(rows * n * groups, size=min(vectors, rows * n * groups), replace=False)
        r, j, g = picks // (n * groups), picks // groups % n, picks % groups
        cols = g[:, None] * group + np.arange(group)[None, :]
        unit_zeros = None
        if unit.kind == "lut_mac":
            unit_zeros = zeros[j, g] if zeros is not None else np.zeros(len(picks), dtype=np.int64)
        out.append(UnitCase(unit.kind, {**unit.to_json(), "group": group}, iss.timing.layer_names.get(offset, ""),
                            xq[r[:, None], cols].astype(np.int64), codes[j[:, None], cols], unit_zeros))
    return out


def format_table(results: Sequence[LevelResult]) -> str:
    rows = [("level", "against", "compared", "mismatches", "tolerance", "seconds")]
    rows += [(r.level, r.against or "-", f"{r.compared:,}", str(r.mismatches), r.tolerance, f"{r.seconds:.1f}")
             for r in results]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows)
