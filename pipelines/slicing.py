"""Per-slice metrics: the eval rows grouped by one raw feature's value (or numeric interval).

Slices are read off the raw rows the serving path scored, so a slice is what a client sends. Rows
missing the feature form the slice ``missing``; values beyond a categorical feature's ``top_k`` most
frequent form ``other``. A slice thresholds applies only to slices with at least ``slice_min_examples``
rows (smaller ones are reported with their count, not judged); violations name the worst slices.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

import numpy as np

from pipelines.config import Bound, SliceSpec, TaskConfig


def slice_names(values: list[Any], spec: SliceSpec) -> np.ndarray:
    """The slice of each row for one slicing."""
    names = np.empty(len(values), dtype=object)
    if spec.boundaries:
        edges = list(spec.boundaries)
        labels = [f"< {edges[0]:g}"] + [f"[{a:g}, {b:g})" for a, b in zip(edges, edges[1:], strict=False)] + [
            f">= {edges[-1]:g}"]
        for i, value in enumerate(values):
            names[i] = "missing" if value is None else labels[int(np.searchsorted(edges, value, side="right"))]
        return names
    counts = Counter(str(v) for v in values if v is not None)
    kept = {v for v, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[: spec.top_k]}
    for i, value in enumerate(values):
        names[i] = "missing" if value is None else str(value) if str(value) in kept else "other"
    return names


def slice_metrics(task: TaskConfig, specs: tuple[SliceSpec, ...], raw_rows: list[dict[str, Any]], labels: np.ndarray,
                  predictions: np.ndarray, classes: list[str] | None) -> list[dict[str, Any]]:
    from pipelines.evaluate import task_metrics

    found = []
    for spec in specs:
        names = slice_names([row.get(spec.feature) for row in raw_rows], spec)
        for name in sorted(set(names), key=str):
            rows = np.flatnonzero(names == name)
            try:
                metrics = task_metrics(task, labels[rows], predictions[rows], classes)
            except Exception:  # noqa: BLE001 - a metric undefined on this slice is NaN, never a pass
                metrics = {"examples": float(len(rows))}
            found.append({"feature": spec.feature, "slice": name, "examples": len(rows),
                          "metrics": {k: round(v, 6) if math.isfinite(v) else v for k, v in metrics.items()}})
    return found


def slice_reasons(slices: list[dict[str, Any]], bounds: tuple[Bound, ...], min_examples: int) -> list[str]:
    """One reason per slice threshold that some judged slice breaks, naming the worst three slices."""
    reasons = []
    for bound in bounds:
        broken = []
        for s in slices:
            if s["examples"] < min_examples:
                continue
            value = s["metrics"].get(bound.metric)
            if bound.violation(value) is not None:
                target = bound.min if bound.min is not None else bound.max
                gap = math.inf if value is None or not math.isfinite(value) else abs(value - target)
                broken.append((gap, f"{s['feature']}={s['slice']} ({s['examples']} rows): "
                                    f"{bound.violation(value)}"))
        if broken:
            broken.sort(key=lambda b: -b[0])
            more = f"; and {len(broken) - 3} more slice(s)" if len(broken) > 3 else ""
            reasons.append(f"slice threshold on {bound.metric}: " + "; ".join(b[1] for b in broken[:3]) + more)
    return reasons


def worst_slice(slices: list[dict[str, Any]], bound: Bound, min_examples: int) -> str | None:
    """For an overall threshold the candidate broke: the judged slice that breaks it worst, where to look first
    (a user trial's r2 fell under its minimum for one new category only; the message named neither)."""
    broken = []
    for s in slices:
        value = s["metrics"].get(bound.metric)
        if s["examples"] >= min_examples and bound.violation(value) is not None:
            target = bound.min if bound.min is not None else bound.max
            gap = math.inf if value is None or not math.isfinite(value) else abs(value - target)
            broken.append((gap, s, value))
    if not broken:
        return None
    _, s, value = max(broken, key=lambda b: b[0])
    shown = f"{value:.4g}" if isinstance(value, float) and math.isfinite(value) else str(value)
    return f"worst slice: {s['feature']}={s['slice']} ({s['examples']} rows) at {bound.metric}={shown}"
