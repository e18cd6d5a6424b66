"""The Pareto front of a sweep's points: perplexity (lower is better), decode tokens/s (higher) and
the scarcest resource's fraction (lower). An axis some point has no value on (perplexity not
measured) is left out for all points and named with its reason."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Axis:
    field: str
    goal: str  # "min" or "max"
    title: str


AXES = (Axis("perplexity", "min", "perplexity"), Axis("decode_tokens_per_s", "max", "decode tokens/s"),
        Axis("resource_fraction", "min", "scarcest resource fraction"))


@dataclass(frozen=True)
class Front:
    axes: tuple[Axis, ...]
    ignored: dict[str, str]  # axis field -> why it was left out
    keys: tuple[str, ...]  # of the points on the front, in the points' order

    def to_json(self, points: list[dict[str, Any]]) -> dict[str, Any]:
        on = set(self.keys)
        return {"axes": [{"field": a.field, "goal": a.goal} for a in self.axes],
                "ignored": [{"field": f, "reason": r} for f, r in self.ignored.items()],
                "points": [p for p in points if p["key"] in on]}


def pareto_front(points: list[dict[str, Any]]) -> Front:
    """The points (of status ok) that no other point dominates on the axes every one of them has."""
    ok = [p for p in points if p["status"] == "ok"]
    axes, ignored = [], {}
    for axis in AXES:
        missing = next((p for p in ok if p.get(axis.field) is None), None)
        if missing is None:
            axes.append(axis)
        else:
            ignored[axis.field] = missing.get("perplexity_note") or "not measured"
    vectors = [tuple(p[a.field] if a.goal == "min" else -p[a.field] for a in axes) for p in ok]
    keys = tuple(p["key"] for p, v in zip(ok, vectors) if not any(dominates(w, v) for w in vectors))
    return Front(tuple(axes), ignored, keys if axes else ())


def dominates(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    """Whether ``a`` is no worse than ``b`` everywhere and better somewhere (all axes minimised)."""
    return all(x <= y for x, y in zip(a, b)) and any(x < y for x, y in zip(a, b))
