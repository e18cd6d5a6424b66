"""A sweep's output files from its point records: ``points.json``, ``points.csv``, ``pareto.json``,
``report.md`` and three SVG plots, the last two rendered from ``llmc/sweep/templates``."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from llmc.sweep.pareto import Front, pareto_front
from llmc.sweep.point import RESOURCES
from llmc.templating import render
from llmc.version import __version__

Getter = Callable[[dict[str, Any]], float | None]


@dataclass(frozen=True)
class Plot:
    file: str
    title: str
    x_title: str
    y_title: str
    x: Getter
    y: Getter
    x_percent: bool = False


PLOTS = (
    Plot("perplexity_vs_tokens.svg", "Perplexity against decode speed", "decode tokens/s (modelled)",
         "perplexity", lambda p: p["decode_tokens_per_s"], lambda p: p["perplexity"]),
    Plot("tokens_vs_dsp.svg", "Decode speed against DSP use", "DSP fraction of the board's usable DSPs",
         "decode tokens/s (modelled)", lambda p: p["resources"]["dsp"], lambda p: p["decode_tokens_per_s"], True),
    Plot("tokens_vs_lut.svg", "Decode speed against LUT use", "LUT fraction of the board's usable LUTs",
         "decode tokens/s (modelled)", lambda p: p["resources"]["lut"], lambda p: p["decode_tokens_per_s"], True),
)
CSV_FIELDS = ("key", "recipe", "board", "cards", "parallel", "context", "engine", "status", "error", "decode_tokens_per_s",
              "prefill_ms", "hbm_bytes_per_token", *RESOURCES, "resource_fraction", "perplexity",
              "perplexity_note", "pareto", "seconds")
WIDTH, HEIGHT, LEFT, RIGHT, TOP, BOTTOM = 640, 440, 80, 24, 48, 64


def output_files(spec: dict[str, Any], points: list[dict[str, Any]]) -> dict[str, str]:
    """File name -> text of every output, for ``points`` in the spec's order."""
    front = pareto_front(points)
    on = set(front.keys)
    files = {"points.json": json.dumps(points, indent=2, sort_keys=True) + "\n",
             "points.csv": points_csv(points, on),
             "pareto.json": json.dumps(front.to_json(points), indent=2, sort_keys=True) + "\n",
             "report.md": report(spec, points, front)}
    files.update({plot.file: scatter(plot, points, on) for plot in PLOTS})
    return files


def points_csv(points: list[dict[str, Any]], on: set[str]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, CSV_FIELDS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for p in points:
        row = {**p, **p.get("resources", {}), "pareto": p["key"] in on,
               "engine": " ".join(f"{k}={v}" for k, v in p["engine"].items())}
        writer.writerow({k: "" if row.get(k) is None else row[k] for k in CSV_FIELDS})
    return out.getvalue()


def report(spec: dict[str, Any], points: list[dict[str, Any]], front: Front) -> str:
    on = set(front.keys)
    rows = [_row(i, p, p["key"] in on) for i, p in enumerate(points, 1)]
    return render("sweep_report.md.j2", spec=spec, version=__version__, rows=rows, front=front,
                  failed=[r for r in rows if r["error"]], plots=PLOTS,
                  ok=sum(p["status"] == "ok" for p in points))


def _row(index: int, p: dict[str, Any], pareto: bool) -> dict[str, Any]:
    ok = p["status"] == "ok"

    def number(value: float | None, form: str) -> str:
        return "-" if value is None else form.format(value)

    return {"index": index, "recipe": p["recipe"] or "(none)", "board": p["board"],
            "cards": p["cards"] if p["cards"] == 1 else f"{p['cards']} {p.get('parallel', 'pipeline')}",
            "context": p.get("compiled_context") or p["context"] or "max", "status": p["status"],
            "engine": ", ".join(f"{k}={v}" for k, v in p["engine"].items()) or "-", "error": p["error"],
            "tokens": number(p.get("decode_tokens_per_s"), "{:,.1f}"), "prefill": number(p.get("prefill_ms"), "{:.3f}"),
            "mib": number(p["hbm_bytes_per_token"] / 2**20 if ok else None, "{:.2f}"),
            "resources": [number(p["resources"][k] if ok else None, "{:.1%}") for k in RESOURCES],
            "perplexity": number(p.get("perplexity"), "{:.3f}"), "pareto": "yes" if pareto else ""}


def scatter(plot: Plot, points: list[dict[str, Any]], on: set[str]) -> str:
    """The plot's points (status ok, both values known) on linear axes, the front's drawn last."""
    data = [(plot.x(p), plot.y(p), p) for p in points if p["status"] == "ok"]
    data = [(x, y, p) for x, y, p in data if x is not None and y is not None]
    data.sort(key=lambda d: d[2]["key"] in on)
    note = "" if data else "nothing to plot: no point has both values (see report.md)"
    xs, ys = _span([d[0] for d in data], plot.x_percent), _span([d[1] for d in data], False)
    inner_w, inner_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def px(x: float) -> float:
        return round(LEFT + (x - xs[0]) / (xs[1] - xs[0]) * inner_w, 1)

    def py(y: float) -> float:
        return round(HEIGHT - BOTTOM - (y - ys[0]) / (ys[1] - ys[0]) * inner_h, 1)

    x_ticks = [(px(v), f"{v:.0%}" if plot.x_percent else _tick_label(v, xs)) for v in _ticks(xs)]
    y_ticks = [(py(v), _tick_label(v, ys)) for v in _ticks(ys)]
    marks = [(px(x), py(y), _label(p), p["key"] in on) for x, y, p in data]
    return render("sweep_scatter.svg.j2", plot=plot, width=WIDTH, height=HEIGHT, left=LEFT, right=RIGHT,
                  top=TOP, bottom=BOTTOM, x_ticks=x_ticks, y_ticks=y_ticks, marks=marks, note=note,
                  front=sum(m[3] for m in marks))


def _label(p: dict[str, Any]) -> str:
    engine = "".join(f", {k}={v}" for k, v in p["engine"].items())
    return f"{p['recipe'] or '(none)'} on {p['board']}, context {p.get('compiled_context')}{engine}"


def _span(values: list[float], from_zero: bool) -> tuple[float, float]:
    """The axis range: the values' range with 5% either side (from 0 for fractions)."""
    if not values:
        return 0.0, 1.0
    lo, hi = (0.0 if from_zero else min(values)), max(values)
    if hi == lo:
        pad = abs(hi) * 0.1 or 1.0
        return lo - (0 if from_zero else pad), hi + pad
    pad = (hi - lo) * 0.05
    return lo - (0 if from_zero else pad), hi + pad


def _tick_label(value: float, span: tuple[float, float]) -> str:
    """Thousands separated above 1,000; otherwise one decimal more than the axis's step needs (up to 3)."""
    step = (span[1] - span[0]) / 4
    if abs(value) >= 1000 and step >= 1:
        return f"{value:,.0f}"
    decimals = next((d + 1 for d in range(3) if step >= 10 ** -d), 3)
    return f"{value:.{decimals}f}"


def _ticks(span: tuple[float, float], count: int = 5) -> list[float]:
    lo, hi = span
    return [lo + (hi - lo) * i / (count - 1) for i in range(count)]
