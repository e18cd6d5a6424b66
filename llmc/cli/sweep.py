"""``llmc sweep SPEC.yaml``: a design-space sweep as Ray tasks (docs/sweep.md)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from tqdm import tqdm

from llmc.cli.common import Command, add_json_argument, progress_enabled


def _sweep_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("spec", type=Path, metavar="SPEC", help="the sweep spec, a YAML file (docs/sweep.md)")
    parser.add_argument("-o", "--output", type=Path, required=True, metavar="DIR",
                        help="the sweep folder: points, Pareto front, report, plots and the cache of points "
                             "(a folder holding a sweep of the same spec is resumed)")
    parser.add_argument("--address", metavar="ADDR", help="run on the Ray cluster at ADDR (host:port) instead of "
                                                          "a local Ray")
    parser.add_argument("--workers", type=int, metavar="N",
                        help="CPUs of the local Ray, one point on each at a time (default 2)")
    parser.add_argument("--force", action="store_true",
                        help="replace an existing output folder llmc wrote (a sweep of the same spec: "
                             "recompute every point)")
    add_json_argument(parser)


def sweep(args: argparse.Namespace) -> int:
    """Sweep recipes x boards x contexts: modelled speed, resources, perplexity and their Pareto front."""
    from llmc.sweep.run import run_sweep

    with tqdm(desc="sweep", unit="point", file=sys.stderr, delay=1.0, leave=False,
              disable=not progress_enabled(args)) as bar:

        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)

        result = run_sweep(args.spec, args.output, address=args.address, workers=args.workers, force=args.force,
                           debug=bool(getattr(args, "debug", False)), progress=progress)
    if args.json:
        print(json.dumps(result.to_json(), sort_keys=True))
        return 0
    summary = result.to_json()
    print(f"wrote {args.output}: {summary['points']} points ({summary['computed']} computed, {summary['cached']} "
          f"from the cache), {summary['failed']} failed, {len(result.pareto)} on the Pareto front; "
          f"{summary['seconds']:.1f} s")
    ok = [p for p in result.points if p["status"] == "ok"]
    if ok:
        best = max(ok, key=lambda p: p["decode_tokens_per_s"])
        print(f"fastest: {best['decode_tokens_per_s']:,.1f} tokens/s, {best['recipe'] or '(none)'} on "
              f"{best['board']}, context {best['compiled_context']}")
    return 0


SWEEP = Command("sweep", _sweep_arguments, sweep)
