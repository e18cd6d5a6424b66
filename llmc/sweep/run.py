"""The sweep driver: check the spec and the output folder, read the cache, run the missing points as
Ray tasks (a local Ray of ``workers`` CPUs, or the cluster at ``address``), write the outputs.

The model is imported once, by the driver, and reaches the workers through Ray's object store
(``ray.put``), so a bundled model, a file and an architecture name travel the same way and a worker
needs no copy of the model's files.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmc.errors import LlmcError
from llmc.ir.graph import Module
from llmc.model import Model
from llmc.sweep import folder
from llmc.sweep.identity import load_model, model_identity, point_key, resolve_model
from llmc.sweep.outputs import output_files
from llmc.sweep.pareto import pareto_front
from llmc.sweep.point import Job, evaluate_point, one_line
from llmc.sweep.spec import SpecError, SweepSpec, load_spec

LOCAL_WORKERS = 2
Progress = Callable[[int, int], None]


@dataclass
class SweepResult:
    output: Path
    points: list[dict[str, Any]]  # in the spec's order
    computed: int  # points run as tasks by this call
    cached: int  # points read from the folder's cache
    pareto: tuple[str, ...]  # keys of the points on the front
    seconds: float
    nodes: set[str] = field(default_factory=set)  # Ray nodes that ran this call's tasks

    def to_json(self) -> dict[str, Any]:
        return {"output": str(self.output), "points": len(self.points), "computed": self.computed,
                "cached": self.cached, "failed": sum(p["status"] != "ok" for p in self.points),
                "pareto": list(self.pareto), "seconds": round(self.seconds, 3), "nodes": len(self.nodes)}


def run_sweep(spec_path: Path, out: Path, *, address: str | None = None, workers: int | None = None,
              force: bool = False, debug: bool = False, progress: Progress | None = None) -> SweepResult:
    """Run the sweep of ``spec_path`` into ``out``, resuming a sweep of the same spec there."""
    begin = time.perf_counter()
    if address is not None and workers is not None:
        raise LlmcError("--workers sizes a local Ray; a cluster at --address has its own CPUs")
    workers = LOCAL_WORKERS if workers is None else workers
    if workers < 1:
        raise LlmcError(f"--workers must be at least 1, got {workers}")
    spec = load_spec(spec_path)
    source = resolve_model(spec, spec_path)
    resume = folder.check_folder(out, spec.digest(), force)
    identity = model_identity(spec, source)
    points = spec.points()
    keys = [point_key(identity, spec, p) for p in points]
    records = folder.read_cached(out, keys) if resume else {}
    jobs = [Job(k, p, spec.eval_windows, spec.prefill, spec.decode) for k, p in zip(keys, points) if k not in records]
    cached = len(records)
    model = None
    if jobs:
        model = load_model(spec, source)
        check_contexts(spec, model.module, spec_path)
    nodes: set[str] = set()
    with ray_session(address, workers, debug) if model is not None else contextlib.nullcontext():
        if not resume:
            folder.start(out, spec.to_json(), spec.digest(), force)
        for record in run_tasks(model, jobs) if model is not None else ():
            folder.cache(out, record)
            records[record["key"]] = record
            nodes.add(record.get("node") or "")
            if progress is not None:
                progress(len(records) - cached, len(jobs))
    ordered = [records[k] for k in keys]
    folder.finish(out, output_files(spec.to_json(), ordered), keys)
    return SweepResult(out, ordered, len(jobs), cached, pareto_front(ordered).keys, time.perf_counter() - begin,
                       nodes - {""})


def check_contexts(spec: SweepSpec, module: Module, spec_path: Path) -> None:
    """Every context within the model's maximum, and long enough for the modelled run."""
    limit = int(module.attrs.get("max_position", 0) or 0)
    for n in spec.contexts:
        if n is None and not limit:
            raise SpecError(f"{spec_path}: context: {module.name} does not state its maximum context: give one")
        if n is not None and limit and n > limit:
            raise SpecError(f"{spec_path}: context: {n} tokens exceed {module.name}'s maximum of {limit}")
        if n is None and spec.prefill + spec.decode > limit:
            raise SpecError(f"{spec_path}: context: {module.name}'s maximum of {limit} tokens cannot hold the "
                            f"modelled run of prefill {spec.prefill} + decode {spec.decode} tokens")


def run_tasks(model: Model, jobs: list[Job]) -> Iterator[dict]:
    """The records of ``jobs``, one Ray task each, as they finish (Ray is up: :func:`ray_session`)."""
    import ray

    task = ray.remote(num_cpus=1, max_retries=0)(point_task)
    module = ray.put(model.module)
    pending = {task.remote(module, model.tokenizer_json, job): job for job in jobs}
    while pending:
        done, _ = ray.wait(list(pending), num_returns=1)
        job = pending.pop(done[0])
        try:
            yield ray.get(done[0])
        except ray.exceptions.RayError as e:  # the worker died (killed, out of memory): not cached
            p = job.point
            yield {"key": job.key, "recipe": p.recipe, "board": p.board, "cards": p.cards, "parallel": p.parallel, "context": p.context,
                   "engine": dict(p.engine), "status": "error", "error": f"Ray task lost: {one_line(e)[:300]}",
                   "seconds": None, "node": None}


def point_task(module: Module, tokenizer_json: str | None, job: Job) -> dict[str, Any]:
    """The Ray task: one point, with the node that ran it."""
    import ray

    record = evaluate_point(module, tokenizer_json, job)
    record["node"] = ray.get_runtime_context().get_node_id()
    return record


@contextlib.contextmanager
def ray_session(address: str | None, workers: int, debug: bool) -> Iterator[None]:
    """A local Ray of ``workers`` CPUs, or the cluster at ``address``, stopped (or left) at the end;
    a Ray this process already joined is used as it is."""
    import ray

    if ray.is_initialized():
        yield
        return
    quiet = {"include_dashboard": False, "logging_level": logging.INFO if debug else logging.ERROR,
             "log_to_driver": debug}
    if address is not None:
        check_reachable(address)
    try:
        if address is None:
            ray.init(num_cpus=workers, **quiet)
        else:
            ray.init(address=address, **quiet)
    except (ConnectionError, RuntimeError, ValueError) as e:
        where = f"the Ray cluster at {address}" if address else "a local Ray"
        raise LlmcError(f"cannot start or join {where}: {one_line(e)[:300]}") from None
    try:
        yield
    finally:
        ray.shutdown()


def check_reachable(address: str, timeout: float = 5.0) -> None:
    """Refuse at once a ``HOST:PORT`` where nothing listens (Ray itself retries for minutes)."""
    if address in ("auto", "local") or "://" in address:
        return
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise LlmcError(f"--address {address}: expected HOST:PORT of a Ray cluster's head (or 'auto')")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as e:
        raise LlmcError(f"--address {address}: no Ray cluster answers there ({e.strerror or e})") from None
