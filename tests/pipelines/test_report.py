"""The model report renders for every task type, self-contained, with the plots and tables a reviewer needs."""

from __future__ import annotations

from html.parser import HTMLParser

import numpy as np
import pytest

from pipelines.report import render


class Page(HTMLParser):
    def __init__(self, text: str):
        super().__init__()
        self.ids: dict[str, str] = {}
        self.tags: list[str] = []
        self.external: list[str] = []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        attrs = dict(attrs)
        if "id" in attrs:
            self.ids[attrs["id"]] = tag
        if tag in ("script", "link", "img", "iframe") or any(k in ("src", "href") for k in attrs):
            self.external.append(tag)


def evaluation(metrics: dict, blessed: bool = True, **extra) -> dict:
    return {"model": "m", "interval": "2026-11-10", "blessed": blessed, "reasons": [] if blessed else ["auc too low"],
            "metrics": {**metrics, "examples": 400.0, "max_abs_skew": 1e-7}, "model_fingerprint": "abc",
            "baseline": {"version": 2026110900, "how": "label 'stable'", "metrics": {k: v - 0.01 for k, v in metrics.items()}},
            "slices": [{"feature": "payment_type", "slice": "Cash", "examples": 120, "metrics": metrics}], **extra}


@pytest.mark.parametrize("task", ["binary", "multiclass", "regression"])
def test_report_renders_for_each_task_type(task):
    rng = np.random.default_rng(0)
    if task == "binary":
        labels = rng.integers(0, 2, 400).astype(float)
        predictions = np.clip(labels * 0.6 + rng.random(400) * 0.4, 0, 1)
        metrics, classes, plots = {"auc": 0.9, "log_loss": 0.3}, None, {"roc", "pr", "calibration"}
        baseline = np.clip(predictions + rng.normal(0, 0.1, 400), 0, 1)
    elif task == "multiclass":
        labels = rng.integers(0, 3, 400).astype(float)
        predictions = rng.dirichlet([1, 1, 1], 400)
        metrics, classes, plots = {"accuracy": 0.9}, ["a", "b", "c"], {"confusion"}
        baseline = None
    else:
        labels = rng.normal(30, 5, 400)
        predictions = labels + rng.normal(0, 2, 400)
        metrics, classes, plots = {"mae": 1.6, "r2": 0.85}, None, {"residuals", "residual-histogram"}
        baseline = None
    html = render(evaluation(metrics, blessed=task != "regression"), task=task,
                  thresholds=[{"metric": next(iter(metrics)), "min": 0.5, "max": None, "change": None}],
                  labels=labels, predictions=predictions, classes=classes, baseline_predictions=baseline,
                  curves={"loss": [0.6, 0.4, 0.35], "val_loss": [0.62, 0.45, 0.41], "auc": [0.7, 0.8, 0.85]},
                  skew_tolerance=1e-5)
    page = Page(html)
    assert plots <= set(page.ids), page.ids
    assert {"metrics", "reasons", "slices", "training-curves", "skew"} <= set(page.ids)
    assert page.external == []  # self-contained: nothing is fetched
    assert "2026110900" in html and "Cash" in html and ("NOT BLESSED" in html) == (task == "regression")
    if task == "binary":
        assert html.count("<polyline") >= 2 + 2 + 1 + 2  # ROC and PR for candidate and baseline, calibration, curves
    if task == "multiclass":
        assert html.count("<td style=\"background") == 9


@pytest.mark.slow
def test_evaluate_writes_the_report_and_publish_ships_it(trained_run, tmp_path):
    from pipelines.publish import publish

    report = trained_run["evaluation"].report
    page = Page(open(report).read())
    assert {"roc", "pr", "calibration", "metrics", "training-curves"} <= set(page.ids)
    from pipelines.config import load_model_config

    published = publish(load_model_config("taxi"),
                        interval=trained_run["run"].interval, artifact_root=trained_run["artifact_root"],
                        serving_root=str(tmp_path / "serving"))
    assert (tmp_path / "serving" / "taxi" / str(published.version) / "report.html").read_text() == open(report).read()


def test_a_single_value_sits_inside_its_axis():
    """One version's metric: the axis is centred on it (it sat at the bottom of [v, v + 1] before)."""
    import re

    from pipelines.report import line_plot

    svg = line_plot("h", "auc by version", {"auc": (np.array([0.0]), np.array([0.86]))}, "version", "auc",
                    x_ticks=[(0.0, "2026120600")], point_titles=["2026120600: auc 0.86"])
    ticks = [float(t) for t in re.findall(r'text-anchor="end" class="k">([\d.]+)</text>', svg)]
    assert min(ticks) < 0.86 < max(ticks) and max(ticks) - min(ticks) < 0.2, ticks
    assert "2026120600</text>" in svg and "<title>2026120600: auc 0.86</title>" in svg
