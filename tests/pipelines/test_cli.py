"""`python -m pipelines`: what a person reads (the versions table, error messages)."""

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


def test_an_error_is_printed_once_where_stdout_is_stderr_and_kept_on_stdouts_last_line():
    """The orchestrator reads stdout's last line; a person at a terminal (or 2>&1) saw the message twice."""
    import subprocess
    import sys

    from tests.conftest import ROOT

    argv = [sys.executable, "-m", "pipelines", "versions", "--model", "nosuch"]
    said = "error: versions: unknown model 'nosuch'"
    both = subprocess.run(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert both.returncode == 1 and both.stdout.count(said) == 1, both.stdout
    apart = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True)
    assert apart.stdout.strip().splitlines()[-1].startswith(said) and said in apart.stderr
