"""The model report of one run: ``evaluate/report.html``, self-contained (inline SVG and CSS, no network).

What a reviewer looks at before a model ships: the verdict and its reasons; every metric beside its
threshold, the baseline's value and the change; per-slice metrics; the plots of the task type (ROC,
precision-recall and calibration for binary, a confusion matrix for multi-class, residuals for
regression); the training curves from the train step; and the train/serve skew gate's figures.
The report travels with the published version (``{serving_root}/{model}/{version}/report.html``).
"""

from __future__ import annotations

import html
import math
from typing import Any

import numpy as np

W, H, PAD = 360, 260, 42  # one plot's size and margin, in px


def _e(value: Any) -> str:
    return html.escape(str(value))


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "NaN" if math.isnan(value) else f"{value:.6g}"
    return "-" if value is None else _e(value)


def _range(values: np.ndarray, fixed: tuple[float, float] | None) -> tuple[float, float]:
    if fixed:
        return fixed
    finite = np.asarray(values, float)[np.isfinite(np.asarray(values, float))]
    low, high = (float(finite.min()), float(finite.max())) if len(finite) else (0.0, 1.0)
    if high > low:
        return low, high
    pad = abs(low) * 0.05 or 0.5  # one value (a single version's metric): centred, not at the bottom of [v, v+1]
    return low - pad, high + pad


def _frame(plot_id: str, title: str, xr: tuple[float, float], yr: tuple[float, float], x_label: str, y_label: str,
           x_ticks: list[tuple[float, str]] | None = None):
    """An SVG's opening, axes, ticks and labels, and the functions mapping data to pixels. ``x_ticks``: labelled
    positions instead of five numeric ticks (at most six of them shown, evenly picked, the last always)."""
    (x0, x1), (y0, y1) = xr, yr

    def px(x: float) -> float:
        return PAD + (x - x0) / (x1 - x0) * (W - 2 * PAD)

    def py(y: float) -> float:
        return H - PAD - (y - y0) / (y1 - y0) * (H - 2 * PAD)

    parts = [f'<svg id="{_e(plot_id)}" class="plot" width="{W}" height="{H}" viewBox="0 0 {W} {H}" '
             f'xmlns="http://www.w3.org/2000/svg" role="img"><title>{_e(title)}</title>',
             f'<text x="{W / 2}" y="16" text-anchor="middle" class="t">{_e(title)}</text>',
             f'<line x1="{PAD}" y1="{H - PAD}" x2="{W - PAD}" y2="{H - PAD}" class="axis"/>',
             f'<line x1="{PAD}" y1="{PAD}" x2="{PAD}" y2="{H - PAD}" class="axis"/>',
             f'<text x="{W / 2}" y="{H - 6}" text-anchor="middle" class="k">{_e(x_label)}</text>',
             f'<text x="12" y="{H / 2}" transform="rotate(-90 12 {H / 2})" text-anchor="middle" class="k">'
             f"{_e(y_label)}</text>"]
    if x_ticks:
        step = max(1, math.ceil(len(x_ticks) / 6))
        shown = x_ticks[::-1][::step][::-1]  # counted from the newest, which is always labelled
    else:
        shown = [(x0 + (x1 - x0) * k / 4, f"{x0 + (x1 - x0) * k / 4:.3g}") for k in range(5)]
    for xv, label in shown:
        parts.append(f'<text x="{px(xv):.1f}" y="{H - PAD + 14}" text-anchor="middle" class="k">{_e(label)}</text>')
    for k in range(5):
        yv = y0 + (y1 - y0) * k / 4
        parts.append(f'<text x="{PAD - 4}" y="{py(yv) + 4:.1f}" text-anchor="end" class="k">{yv:.3g}</text>')
    return parts, px, py


COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e"]


def line_plot(plot_id: str, title: str, series: dict[str, tuple[np.ndarray, np.ndarray]], x_label: str,
              y_label: str, *, diagonal: bool = False, unit_square: bool = False,
              x_ticks: list[tuple[float, str]] | None = None, point_titles: list[str] | None = None) -> str:
    """Lines (and a dashed y = x) in one SVG with axes, ticks and a legend. ``x_ticks`` label the x axis at
    given positions; ``point_titles`` mark the first series' points with dots that show them on hover."""
    xs = np.concatenate([np.asarray(x, float) for x, _ in series.values()]) if series else np.zeros(0)
    ys = np.concatenate([np.asarray(y, float) for _, y in series.values()]) if series else np.zeros(0)
    xr = _range(xs, (0.0, 1.0) if unit_square else None)
    yr = _range(ys, (0.0, 1.0) if unit_square else None)
    parts, px, py = _frame(plot_id, title, xr, yr, x_label, y_label, x_ticks)
    if diagonal:
        top = min(xr[1], yr[1])
        parts.append(f'<line x1="{px(xr[0]):.1f}" y1="{py(yr[0]):.1f}" x2="{px(top):.1f}" y2="{py(top):.1f}" class="diag"/>')
    for i, (name, (x, y)) in enumerate(series.items()):
        x, y = np.asarray(x, float), np.asarray(y, float)
        keep = np.isfinite(x) & np.isfinite(y)
        points = " ".join(f"{px(a):.1f},{py(b):.1f}" for a, b in zip(x[keep], y[keep], strict=True))
        colour = COLOURS[i % len(COLOURS)]
        parts.append(f'<polyline points="{points}" fill="none" stroke="{colour}" stroke-width="1.8"/>')
        parts.append(f'<text x="{W - PAD}" y="{PAD + 14 * i}" text-anchor="end" class="k" fill="{colour}">{_e(name)}</text>')
        if i == 0 and point_titles:
            parts += [f'<circle cx="{px(a):.1f}" cy="{py(b):.1f}" r="3" fill="{colour}"><title>{_e(t)}</title></circle>'
                      for a, b, t in zip(x, y, point_titles, strict=True) if math.isfinite(a) and math.isfinite(b)]
    return "".join(parts) + "</svg>"


def scatter_plot(plot_id: str, title: str, x: np.ndarray, y: np.ndarray, x_label: str, y_label: str) -> str:
    """Points (at most 1,000, evenly sampled) with a dashed zero line: for residuals."""
    step = max(1, len(x) // 1000)
    x, y = np.asarray(x, float)[::step], np.asarray(y, float)[::step]
    xr, yr = _range(x, None), _range(y, None)
    parts, px, py = _frame(plot_id, title, xr, yr, x_label, y_label)
    if yr[0] <= 0 <= yr[1]:
        parts.append(f'<line x1="{PAD}" y1="{py(0):.1f}" x2="{W - PAD}" y2="{py(0):.1f}" class="diag"/>')
    parts += [f'<circle cx="{px(a):.1f}" cy="{py(b):.1f}" r="1.6" class="dot"/>'
              for a, b in zip(x, y, strict=True) if math.isfinite(a) and math.isfinite(b)]
    return "".join(parts) + "</svg>"


# -- curves of a binary classifier ----------------------------------------------------

def roc_pr_points(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(false positive rate, true positive rate, recall, precision) at every score threshold."""
    order = np.argsort(-scores, kind="stable")
    positive = labels[order] > 0.5
    tp = np.cumsum(positive)
    fp = np.cumsum(~positive)
    pos, neg = max(1, positive.sum()), max(1, (~positive).sum())
    tpr, fpr = np.r_[0, tp / pos], np.r_[0, fp / neg]
    precision = np.r_[1, tp / np.maximum(1, tp + fp)]
    return fpr, tpr, tpr, precision


def calibration_points(labels: np.ndarray, scores: np.ndarray, bins: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Mean prediction and observed positive rate per prediction decile bin."""
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.searchsorted(edges, scores, side="right") - 1, 0, bins - 1)
    mean_p, rate = [], []
    for b in range(bins):
        rows = which == b
        if rows.any():
            mean_p.append(float(scores[rows].mean()))
            rate.append(float(labels[rows].mean()))
    return np.array(mean_p), np.array(rate)


def confusion_table(labels: np.ndarray, scores: np.ndarray, classes: list[str]) -> str:
    ids, predicted = labels.astype(int), scores.argmax(axis=1)
    k = len(classes)
    matrix = np.zeros((k, k), dtype=int)
    for true, guess in zip(ids, predicted, strict=True):
        if 0 <= true < k:
            matrix[true, guess] += 1
    peak = max(1, matrix.max())
    head = "".join(f"<th>{_e(c)}</th>" for c in classes)
    rows = "".join(
        f"<tr><th>{_e(classes[i])}</th>" + "".join(
            f'<td style="background: rgba(31,119,180,{matrix[i, j] / peak:.2f})">{matrix[i, j]}</td>' for j in range(k))
        + "</tr>" for i in range(k))
    return (f'<table id="confusion" class="confusion"><caption>Confusion matrix (rows: true class, columns: '
            f"predicted)</caption><tr><th></th>{head}</tr>{rows}</table>")


def task_plots(task: str, labels: np.ndarray, predictions: np.ndarray, classes: list[str] | None,
               baseline: np.ndarray | None) -> str:
    if task == "binary":
        series_roc, series_pr = {}, {}
        for name, scores in (("candidate", predictions), ("baseline", baseline)):
            if scores is None:
                continue
            fpr, tpr, recall, precision = roc_pr_points(labels, scores)
            series_roc[name], series_pr[name] = (fpr, tpr), (recall, precision)
        mean_p, rate = calibration_points(labels, predictions)
        return (line_plot("roc", "ROC curve", series_roc, "false positive rate", "true positive rate",
                          diagonal=True, unit_square=True)
                + line_plot("pr", "Precision-recall curve", series_pr, "recall", "precision", unit_square=True)
                + line_plot("calibration", "Calibration (10 bins)", {"candidate": (mean_p, rate)},
                            "mean prediction", "observed positive rate", diagonal=True, unit_square=True))
    if task == "multiclass":
        return confusion_table(labels, predictions, classes or [])
    residuals = predictions - labels
    counts, edges = np.histogram(residuals[np.isfinite(residuals)], bins=30)
    return (scatter_plot("residuals", "Residuals (prediction - label)", predictions, residuals, "prediction",
                         "residual")
            + line_plot("residual-histogram", "Residual distribution", {"rows": ((edges[:-1] + edges[1:]) / 2, counts)},
                        "residual", "rows"))


def training_curves(curves: dict[str, list[float]]) -> str:
    if not curves:
        return "<p>No per-epoch history was recorded by the train step.</p>"
    losses = {k: (np.arange(1, len(v) + 1), np.array(v)) for k, v in curves.items() if "loss" in k}
    others = {k: (np.arange(1, len(v) + 1), np.array(v)) for k, v in curves.items() if "loss" not in k}
    plots = line_plot("training-curves", "Training curves: loss", losses, "epoch", "loss")
    if others:
        plots += line_plot("training-metrics", "Training curves: metrics", others, "epoch", "value")
    return plots


# -- the page -------------------------------------------------------------------------

def render(evaluation: dict[str, Any], *, task: str, thresholds: list[dict[str, Any]], labels: np.ndarray,
           predictions: np.ndarray, classes: list[str] | None, baseline_predictions: np.ndarray | None,
           curves: dict[str, list[float]], skew_tolerance: float) -> str:
    metrics = evaluation["metrics"]
    base = (evaluation.get("baseline") or {}).get("metrics") or {}
    bounds = {t["metric"]: t for t in thresholds}
    failed = " ".join(evaluation["reasons"])
    rows = []
    for name in sorted(metrics):
        bound = bounds.get(name, {})
        limit = ", ".join(f"{k} {bound[k]}" for k in ("min", "max") if bound.get(k) is not None)
        if bound.get("change"):
            limit += (", " if limit else "") + "change " + ", ".join(
                f"{k} {v}" for k, v in bound["change"].items() if v is not None)
        verdict = "" if not bound else ("fail" if f"{name}" in failed else "pass")
        change = (f"{metrics[name] - base[name]:+.4g}" if name in base and isinstance(base[name], float)
                  and math.isfinite(base[name]) and math.isfinite(metrics[name]) else "-")
        rows.append(f'<tr class="{verdict}"><td>{_e(name)}</td><td>{_fmt(metrics[name])}</td><td>{_fmt(base.get(name))}'
                    f"</td><td>{change}</td><td>{_e(limit) or '-'}</td><td>{verdict or '-'}</td></tr>")
    slices = "".join(
        f"<tr><td>{_e(s['feature'])}</td><td>{_e(s['slice'])}</td><td>{s['examples']}</td><td>"
        + ", ".join(f"{_e(k)} {_fmt(v)}" for k, v in sorted(s["metrics"].items()) if k != "examples") + "</td></tr>"
        for s in evaluation.get("slices") or [])
    baseline = evaluation.get("baseline") or {}
    verdict = "BLESSED" if evaluation["blessed"] else "NOT BLESSED"
    reasons = "".join(f"<li>{_e(r)}</li>" for r in evaluation["reasons"]) or "<li>every gate passed</li>"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{_e(evaluation['model'])} {_e(evaluation['interval'])}: model report</title>
<style>
body {{ font: 14px/1.4 system-ui, sans-serif; margin: 24px; color: #222; }}
h1 {{ font-size: 20px; }} h2 {{ font-size: 16px; margin-top: 28px; }}
table {{ border-collapse: collapse; margin: 8px 0; }} td, th {{ border: 1px solid #ccc; padding: 3px 8px; text-align: right; }}
td:first-child, th:first-child {{ text-align: left; }} tr.fail td {{ background: #fde2e2; }} tr.pass td {{ background: #e6f4e6; }}
.verdict {{ font-weight: bold; color: {'#1a7f37' if evaluation['blessed'] else '#b42318'}; }}
.plot {{ margin: 6px 12px 6px 0; border: 1px solid #eee; }} .axis {{ stroke: #555; }} .diag {{ stroke: #999; stroke-dasharray: 4 3; }}
.t {{ font-size: 13px; font-weight: 600; }} .k {{ font-size: 10px; fill: #444; }} .dot {{ fill: #1f77b4; fill-opacity: 0.5; }}
</style></head><body>
<h1>{_e(evaluation['model'])} — data interval {_e(evaluation['interval'])} — <span class="verdict">{verdict}</span></h1>
<p>Task: {_e(task)}. Eval rows: {int(metrics.get('examples', 0))}, scored through the exported serving signature.
Baseline: {_e(baseline.get('version') or 'none')} ({_e(baseline.get('how', 'not compared'))}).
Model fingerprint: {_e(str(evaluation.get('model_fingerprint'))[:16])}.</p>
<h2>Verdict</h2><ul id="reasons">{reasons}</ul>
<h2>Metrics</h2>
<table id="metrics"><tr><th>metric</th><th>candidate</th><th>baseline</th><th>change</th><th>threshold</th><th>result</th></tr>
{''.join(rows)}</table>
<h2>Plots</h2><div id="plots">{task_plots(task, labels, predictions, classes, baseline_predictions)}</div>
<h2>Slices</h2>{f'<table id="slices"><tr><th>feature</th><th>slice</th><th>rows</th><th>metrics</th></tr>{slices}</table>'
                if slices else '<p>No slices declared ([[evaluation.slices]] in config.toml).</p>'}
<h2>Training</h2><div id="training">{training_curves(curves)}</div>
<h2>Train/serve skew</h2>
<p id="skew">Largest |training path − serving path| over {int(metrics.get('examples', 0))} eval rows:
{_fmt(metrics.get('max_abs_skew'))} (gate: {skew_tolerance:g}). The sparsest eval rows were also served one at a time.</p>
</body></html>
"""
