"""`python -m pipelines versions`: the table a person reads."""

from __future__ import annotations

import json

from pipelines.cli import main


def test_the_versions_table_shows_each_tasks_headline_metric(tmp_path, capsys):
    """A regression model's versions show rmse (the column said auc, and '-' under it, for every model)."""
    for model, metrics in (("delivery", {"rmse": 3.25, "mae": 2.0}), ("taxi", {"auc": 0.8606})):
        version = tmp_path / model / "2026120600"
        version.mkdir(parents=True)
        (version / "manifest.json").write_text(json.dumps({"interval": "2026-12-06", "metrics": metrics}))
        assert main(["versions", "--model", model, "--serving-root", str(tmp_path)]) == 0
        header, row = capsys.readouterr().out.splitlines()[:2]
        name = "rmse" if model == "delivery" else "auc"
        assert header.split()[3] == name and row.split()[3] == f"{metrics[name]:.4f}", (header, row)

