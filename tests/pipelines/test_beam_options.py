"""Beam runner options come from the model config (or the CLI) and reach the pipeline unchanged."""

from __future__ import annotations

import dataclasses

import pytest

from pipelines.config import TransformConfig
from pipelines.transform import (
    DEFAULT_BEAM_ARGS,
    pipeline_options,
    resolve_beam_args,
)

DATAFLOW = ["--runner=DataflowRunner", "--project=acme-ml", "--region=europe-west4",
            "--temp_location=gs://acme-ml/tmp", "--experiments=use_runner_v2", "--max_num_workers=20"]
FLINK = ["--runner=FlinkRunner", "--flink_master=flink-jobmanager:8081", "--environment_type=LOOPBACK",
         "--parallelism=8"]


def test_precedence_cli_then_config_then_default(taxi_config):
    dataflow_config = dataclasses.replace(taxi_config, transform=TransformConfig(beam_args=tuple(DATAFLOW)))
    assert resolve_beam_args(dataflow_config, None) == DATAFLOW
    assert resolve_beam_args(dataflow_config, FLINK) == FLINK
    empty = dataclasses.replace(taxi_config, transform=TransformConfig())
    assert resolve_beam_args(empty, None) == list(DEFAULT_BEAM_ARGS)


@pytest.mark.parametrize("args", [DATAFLOW, FLINK, list(DEFAULT_BEAM_ARGS)], ids=["dataflow", "flink", "direct"])
def test_options_reach_the_pipeline_unchanged(args):
    options = pipeline_options(args).get_all_options()
    for arg in args:
        key, value = arg[2:].split("=", 1)
        got = options[key]
        assert str(got) == value or got == [value] or str(got) == str(int(value) if value.isdigit() else value), key


def test_taxi_config_beam_args_are_used(taxi_config):
    assert resolve_beam_args(taxi_config, None)[0] == "--runner=FnApiRunner"  # never a Prism download


def test_transform_logs_progress_every_so_many_rows(caplog, monkeypatch):
    import logging

    from pipelines import transform

    monkeypatch.setattr(transform, "_rows_read", {})
    with caplog.at_level(logging.INFO, logger="pipelines.transform"):
        for _ in range(5):
            transform.progress("train", transform.PROGRESS_ROWS // 2)
    said = [r.getMessage() for r in caplog.records if "so far" in r.getMessage()]
    assert said == [f"train split: {n * transform.PROGRESS_ROWS} rows read so far (this worker process)"
                    for n in (1, 2)]
