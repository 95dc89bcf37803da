"""The approval request as a decision page: candidate vs stable with the thresholds, the slices that moved
most, the gate's reasons and where the report is. Rendered into the HITL task's body (markdown)."""

from __future__ import annotations

import math
from typing import Any

MOVED_SLICES = 5  # slices shown, by the largest change of the first thresholded metric


def _cell(text: Any) -> str:
    """Text for a markdown table cell: a '|' in a slice value would end the cell."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def _number(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def change_text(change) -> str:
    """A change threshold in words: how much worse than stable the metric may get."""
    if change is None:
        return ""
    worse = "lower" if change.direction == "higher" else "higher"
    parts = [f"{change.absolute:g}" if change.absolute is not None else "",
             f"{change.relative:.0%}" if change.relative is not None else ""]
    return f"at most {' and '.join(p for p in parts if p)} {worse}"


def threshold_text(bound) -> str:
    parts = []
    if bound.min is not None:
        parts.append(f">= {bound.min:g}")
    if bound.max is not None:
        parts.append(f"<= {bound.max:g}")
    if bound.change is not None:
        parts.append(change_text(bound.change) + " than stable")
    return "; ".join(parts)


def approval_page(evaluation: dict[str, Any] | None, publication: dict[str, Any] | None, config) -> str:
    """Markdown for the approval task: what is asked, the evidence, and what happens on each answer."""
    evaluation, publication = evaluation or {}, publication or {}
    baseline = evaluation.get("baseline") or {}
    base = baseline.get("metrics") or {}
    metrics = evaluation.get("metrics") or {}
    bounds = {b.metric: b for b in config.thresholds}
    stable = baseline.get("version")
    lines = [f"### Promote {config.name} version {publication.get('version', '?')} to `stable`?", "",
             f"Trained for the data interval {evaluation.get('interval', '?')}; compared with "
             f"{'version ' + str(stable) if stable else 'no stable version (first release)'} on the same "
             f"{_number(metrics.get('examples'))} held-out rows through the serving signature.", "",
             f"| metric | candidate | stable{f' ({stable})' if stable else ''} | change | threshold |",
             "|---|---|---|---|---|"]
    shown = [m for m in bounds] + [m for m in sorted(metrics) if m not in bounds]
    for name in shown:
        if name not in metrics:
            continue
        value, old = metrics.get(name), base.get(name)
        change = (f"{value - old:+.4g}" if isinstance(value, int | float) and isinstance(old, int | float)
                  and math.isfinite(value) and math.isfinite(old) else "-")
        lines.append(f"| `{name}` | {_number(value)} | {_number(old)} | {change} | "
                     f"{threshold_text(bounds[name]) if name in bounds else ''} |")
    moved = moved_slices(evaluation.get("slices") or [], next(iter(bounds), "examples"))
    if moved:
        lines += ["", f"**Slices that moved most** (`{moved[0][0]}`, candidate vs stable):", "",
                  "| slice | rows | candidate | stable | change |", "|---|---|---|---|---|"]
        lines += [f"| {_cell(where)} | {rows} | {_number(new)} | {_number(old)} | {new - old:+.4g} |"
                  for _, where, rows, new, old in moved]
    reasons = evaluation.get("reasons") or []
    lines += ["", "**Gate:** " + ("blessed: every threshold holds." if evaluation.get("blessed") else
                                  "NOT blessed: " + "; ".join(reasons))]
    if note := baseline.get("note"):
        lines.append(f"_{note}_")
    if (version := publication.get("version")) is not None:  # the copy published with the version: another
        # run of the interval may replace the run directory's while this waits (a user trial)
        from skewfree.links import PREFIX

        url = f"{PREFIX}/models/{config.name}/versions/{version}/report"
        lines += ["", f"**Model report** (plots, every slice), as published with version {version}: [{url}]({url})"]
    elif report := evaluation.get("report"):
        lines += ["", f"**Model report** (plots, every slice): `{report}`"]
    lines += ["", f"Approve: version {publication.get('version', '?')} is canary-checked and becomes `stable`, "
                  "the current one stays loaded as `previous`. Reject, or no answer within "
                  f"{config.rollout.approval_timeout_minutes:g} minutes: nothing changes on the model server."]
    return "\n".join(lines)


def moved_slices(slices: list[dict[str, Any]], metric: str) -> list[tuple]:
    """(metric, slice, rows, candidate, stable) of the slices whose ``metric`` changed most against stable."""
    found = []
    for s in slices:
        new, old = (s.get("metrics") or {}).get(metric), (s.get("baseline_metrics") or {}).get(metric)
        if isinstance(new, int | float) and isinstance(old, int | float) and math.isfinite(new) and math.isfinite(old):
            found.append((metric, f"{s['feature']}={s['slice']}", s["examples"], new, old))
    return sorted(found, key=lambda f: -abs(f[3] - f[4]))[:MOVED_SLICES]
