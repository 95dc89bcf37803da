import datetime as dt
import shutil

import pytest

from pipelines.runs import Run
from pipelines.storage import read_json
from pipelines.validate import DataValidationError, validate
from tests.conftest import END


@pytest.fixture
def data(small_data, tmp_path):
    copy = tmp_path / "data"
    shutil.copytree(small_data, copy)
    return copy


def test_valid_window(data, tmp_path, taxi_config):
    result = validate(taxi_config, interval=END, data_root=str(data), artifact_root=tmp_path / "art")
    assert len(result.rows) == taxi_config.data.lookback_days + 1
    assert result.total_rows == 1000 * len(result.rows)
    assert 0 < result.missing_fraction["trip_miles"] < 0.1
    assert Run(tmp_path / "art", "taxi", END).read_result("validate")["total_rows"] == result.total_rows


def test_missing_partition_is_named(data, tmp_path, taxi_config):
    gone = data / "taxi_trips" / "dt=2026-11-08"
    shutil.rmtree(gone)
    with pytest.raises(DataValidationError) as err:
        validate(taxi_config, interval=END, data_root=str(data), artifact_root=tmp_path / "art")
    assert f"missing partition for 2026-11-08: {gone} does not exist" in str(err.value)
    report = read_json(tmp_path / "art/taxi/runs/2026-11-10/validate/validation.json")
    assert any(str(gone) in e for e in report["errors"])
    assert not (tmp_path / "art/taxi/runs/2026-11-10/validate/result.json").exists()


def test_window_outside_generated_days_fails(data, tmp_path, taxi_config):
    with pytest.raises(DataValidationError, match="dt=2026-11-11 does not exist"):
        validate(taxi_config, interval=END + dt.timedelta(days=1), data_root=str(data), artifact_root=tmp_path)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda lines: lines[:1], "no rows"),
        (lambda lines: [lines[0], lines[1].replace(",0\n", ",abc\n").replace(",1\n", ",abc\n")],
         "does not match the schema"),
        (lambda lines: [lines[0].replace('"company"', '"operator"'), *lines[1:]], "does not match the schema"),
        (lambda lines: [lines[0], lines[1].replace(',"Cash",', ',"Bitcoin",').replace(',"Credit Card",', ',"Bitcoin",')],
         "column 'payment_type' has 1 values outside its domain, e.g. ['Bitcoin']"),
    ],
)
def test_bad_file_is_named_with_the_problem(data, tmp_path, taxi_config, edit, message):
    path = data / "taxi_trips" / "dt=2026-11-09" / "part-00000.csv"
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(edit(lines)))
    with pytest.raises(DataValidationError) as err:
        validate(taxi_config, interval=END, data_root=str(data), artifact_root=tmp_path)
    assert message in str(err.value)
    assert "dt=2026-11-09" in str(err.value)
