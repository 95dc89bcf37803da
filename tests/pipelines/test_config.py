import datetime as dt

import pytest

from pipelines.config import ConfigError, load_model_config

VALID = """
name = "m"
module = "pipelines.models.taxi"
schedule = "@daily"
start_date = "2026-11-01"
[data]
location = "{data_root}/m/dt={date}"
lookback_days = 3
eval_days = 1
[thresholds]
auc = { min = 0.7 }
"""


def write(tmp_path, text):
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


def test_registered_model_loads_without_tensorflow(taxi_config):
    assert taxi_config.name == "taxi"
    assert taxi_config.data.lookback_days >= taxi_config.data.eval_days >= 1
    assert {b.metric for b in taxi_config.thresholds} >= {"auc", "log_loss"}


def test_window_reads_lookback_plus_interval_and_holds_out_newest(tmp_path):
    config = load_model_config(write(tmp_path, VALID))
    day = dt.date(2026, 11, 10)
    assert config.window(day) == [dt.date(2026, 11, d) for d in (7, 8, 9, 10)]
    train, evaluation = config.split_window(day)
    assert train == [dt.date(2026, 11, d) for d in (7, 8, 9)] and evaluation == [day]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("lookback_days = 3", "lookback_days = \"three\""), "lookback_days must be int"),
        (("eval_days = 1", "eval_days = 5"), "eval_days <= lookback_days"),
        (("[data]", "[data]\nbogus = 1"), "unknown field(s) in [data]: bogus"),
        (("auc = { min = 0.7 }", "auc = 0.7"), "[thresholds] auc must be a table"),
        (("/dt={date}", "/dt=today"), "must contain '{date}'"),
        (('start_date = "2026-11-01"', 'start_date = "yesterday"'), "start_date must be YYYY-MM-DD"),
        (('name = "m"\n', ""), "missing required field 'name'"),
        (("[thresholds]", "[validation]\nnumeric_drift = 2\n[thresholds]"),
         "[validation] numeric_drift must be a number in (0, 1] or false"),
        (("[thresholds]", "[validation]\nunknown_columns = \"warn\"\n[thresholds]"),
         "[validation] unknown_columns must be one of ('error', 'ignore')"),
        (("[thresholds]", "[validation]\ncompare_days = 4\n[thresholds]"), "compare_days must be between 1 and"),
        (("[thresholds]", "[validation]\nvolume_ratio = { min = 3, max = 2 }\n[thresholds]"),
         "volume_ratio min 3 is above max 2"),
        (("[thresholds]", "[validation]\ndrift = 0.1\n[thresholds]"), "unknown field(s) in [validation]: drift"),
        (("[thresholds]", "[validation.features.company]\nnew_value = 0.2\n[thresholds]"),
         "unknown field(s) in [validation.features.company]: new_value"),
        (("[thresholds]", "[validation.features.compnay]\nnew_values = 0.2\n[thresholds]"),
         "[validation.features] names column(s) the schema of pipelines.models.taxi does not have: compnay"),
    ],
)
def test_bad_config_names_field_and_file(tmp_path, change, message):
    path = write(tmp_path, VALID.replace(*change))
    with pytest.raises(ConfigError) as err:
        load_model_config(path)
    assert message in str(err.value)
    assert str(path) in str(err.value)


def test_unknown_model_lists_known_ones():
    with pytest.raises(ConfigError, match="unknown model 'nope'; known models: .*taxi"):
        load_model_config("nope")


def test_validation_thresholds_default_and_per_feature(tmp_path):
    text = VALID.replace("[thresholds]", "[validation]\nnew_values = 0.2\nvolume_ratio = false\n"
                         "[validation.features.company]\nnew_values = false\ncategorical_drift = 0.3\n[thresholds]")
    validation = load_model_config(write(tmp_path, text)).validation
    assert validation.checks("fare").new_values == 0.2 and validation.checks("fare").categorical_drift == 0.1
    company = validation.checks("company")
    assert company.new_values is None and company.categorical_drift == 0.3 and company.numeric_drift == 0.1
    assert validation.min_volume_ratio is None and validation.max_volume_ratio is None
