"""One point of a sweep, as one Ray task computes it: the recipe, ``design()`` for the board, the
timing model's run over the compiled programs (as ``llmc simulate --timing-only``), resources, HBM
bytes per token and the perplexity of the compressed model. Pure: no Ray, no files.

A point that cannot be built (it does not fit the board, a pass refuses the model) is a record with
``status: failed`` and the one-line reason; an unexpected exception gives ``status: error``, which
is not cached, so the next run tries again.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from typing import Any

from llmc.errors import LlmcError
from llmc.ir.graph import Module
from llmc.ir.interpreter import InterpreterError
from llmc.ir.parser import ParseError
from llmc.ir.verify import VerifyError
from llmc.sweep.spec import Point

POINT_ERRORS = (LlmcError, ParseError, VerifyError, InterpreterError)
RESOURCES = ("lut", "ff", "dsp", "bram36", "uram")
TIMING_FIELDS = ("seconds", "node")  # how and where the point ran: the rest is its result
# The configuration fields a point records of its design.
CONFIG_FIELDS = ("clock_mhz", "port_bits", "mm_lanes", "mm_tile_n", "mm_tile_k", "lut_lanes", "sfu_lanes",
                 "max_rows", "max_context", "buckets")


@dataclass(frozen=True)
class Job:
    """What a task needs besides the model: the point, its key and the sweep's settings."""

    key: str
    point: Point
    eval_windows: int
    prefill: int
    decode: int


def evaluate_point(module: Module, tokenizer_json: str | None, job: Job) -> dict[str, Any]:
    """The record of ``job``'s point on ``module``; never raises for a point that fails."""
    start = time.perf_counter()
    p = job.point
    record: dict[str, Any] = {"key": job.key, "recipe": p.recipe, "board": p.board, "cards": p.cards, "parallel": p.parallel,
                              "context": p.context, "engine": dict(p.engine), "status": "ok", "error": None}
    try:
        record.update(_measure(module, tokenizer_json, job))
    except POINT_ERRORS as e:
        record.update(status="failed", error=one_line(e))
    except Exception as e:  # a bug, not a property of the point: recorded, and not cached
        record.update(status="error", error=f"internal error: {type(e).__name__}: {one_line(e)}")
    record["seconds"] = round(time.perf_counter() - start, 3)
    return record


def one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


def _measure(module: Module, tokenizer_json: str | None, job: Job) -> dict[str, Any]:
    from llmc.backends.fpga.cluster import cluster_design
    from llmc.backends.fpga.flow import design
    from llmc.backends.fpga.isa import decode_program, encode_program
    from llmc.backends.fpga.links import LINKS, cluster_runs
    from llmc.backends.fpga.timing import TimingModel
    from llmc.sim.perf import model_run

    p = job.point
    module = apply_recipe(module, tokenizer_json, p.recipe)
    if p.cards > 1:
        cluster = cluster_design(module, p.board, p.cards, p.parallel, max_context=p.context, **dict(p.engine))
        designs = cluster.cards
    else:
        designs = [design(module, p.board, max_context=p.context, **dict(p.engine))]
    # the programs as program.bin holds them, which is what llmc simulate --timing-only reads
    cards = [(TimingModel.for_design(d.config, d.target),
              {b: decode_program(encode_program(prog)) for b, prog in d.compiled.programs.items()}) for d in designs]
    per_card = [model_run(timing, programs, job.prefill, job.decode) for timing, programs in cards]
    if p.cards > 1:  # the cards take turns (and wait on the host link): time from the cluster's run
        run = cluster_runs(cards, cluster.transfers, cluster.segments, {"host": LINKS["host"]}, job.prefill,
                           job.decode)["host"]
        tokens_per_s, prefill_ms = float(run["tokens_per_s"]), float(run["prefill_ms"])
    else:
        tokens_per_s, prefill_ms = per_card[0].decode_tokens_per_s, per_card[0].prefill_s * 1e3
    static = cards[0][0].power.static_w
    hbm = sum(f.hbm_bytes for f in per_card)
    # each card's dynamic energy, and every card's static power over the cluster's time per token
    joules = sum(f.joules_per_token - static * f.decode_s / f.decode_tokens for f in per_card) + \
        len(cards) * static / tokens_per_s
    fractions = {k: max(float(d.utilisation.fractions[k]) for d in designs) for k in RESOURCES}
    scarcest = max(fractions, key=lambda k: fractions[k])
    config = asdict(designs[0].config)
    out: dict[str, Any] = {
        "compiled_context": designs[0].config.max_context, "has_weights": module.has_weights,
        "decode_tokens_per_s": tokens_per_s, "prefill_ms": prefill_ms,
        "prefill_tokens": job.prefill, "decode_tokens": job.decode, "hbm_bytes_per_token": hbm,
        "hbm_utilisation": hbm * tokens_per_s / (len(cards) * cards[0][0].board_gbs * 1e9),
        "joules_per_token": joules, "resources": fractions,
        "resource_fraction": fractions[scarcest], "scarcest_resource": scarcest,
        "design": {k: list(v) if isinstance(v, tuple) else v for k, v in config.items() if k in CONFIG_FIELDS}}
    out.update(perplexity(module, tokenizer_json, job.eval_windows, designs[0].config.max_context))
    return out


def apply_recipe(module: Module, tokenizer_json: str | None, recipe: str) -> Module:
    import llmc.compiler.passes  # noqa: F401  (registers the passes)
    from llmc.compiler.pipeline import PassContext, parse_pipeline, run_pipeline

    calls = parse_pipeline(recipe)
    return run_pipeline(module, calls, PassContext(tokenizer_json=tokenizer_json)) if calls else module


def perplexity(module: Module, tokenizer_json: str | None, windows: int, context: int) -> dict[str, Any]:
    """The compressed model's perplexity on the first ``windows`` windows of the corpus's test split
    (256 tokens, or the compiled context where shorter), as ``llmc eval`` measures it; None with
    the reason where it cannot be measured."""
    from llmc.compiler.evaluate import corpus_windows, window_nll

    reason = ("eval_windows is 0" if windows == 0 else "shapes only: no weights" if not module.has_weights
              else "the model has no tokenizer" if tokenizer_json is None else None)
    if reason is not None:
        return {"perplexity": None, "perplexity_note": reason, "eval_tokens": 0}
    try:
        parts = corpus_windows(module, tokenizer_json, windows, context)
        nll = sum(window_nll(module, w) for w in parts)
    except POINT_ERRORS as e:
        return {"perplexity": None, "perplexity_note": one_line(e), "eval_tokens": 0}
    tokens = sum(len(w) - 1 for w in parts)
    return {"perplexity": math.exp(nll / tokens), "perplexity_note": None, "eval_tokens": tokens}
