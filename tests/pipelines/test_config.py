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
        (('schedule = "@daily"\n', ""), "missing required field 'schedule'"),
        (("[thresholds]", "[thresholdz]"), "unknown section(s) or field(s) thresholdz; valid: name, module"),
        (("[thresholds]", "[[evaluation.slices]]\nfeature = \"compnay\"\n[thresholds]"),
         "[[evaluation.slices]] names column(s) the schema of pipelines.models.taxi does not have: compnay"),
        (("[thresholds]", "[evaluation]\nslice_thresholds = { auc = { min = 0.7 } }\n[thresholds]"),
         "slice_thresholds need [[evaluation.slices]] to judge"),
        (("[thresholds]", "[[evaluation.slices]]\nfeature = \"fare\"\nboundaries = [5, 2]\n[thresholds]"),
         "boundaries must be increasing numbers"),
        (('name = "m"', 'name = "m/../x"'), "name 'm/../x' must be letters"),
        (("[thresholds]", "[task]\ntype = \"ranking\"\n[thresholds]"), "[task] type must be one of"),
        (("[thresholds]", "[task]\ntype = \"regression\"\n[thresholds]"),
         "[thresholds] 'auc' is not a metric of a regression task; valid: mae, rmse, r2"),
        (("auc = { min = 0.7 }", "sparse_categorical_accuracy = { min = 0.7 }"),
         "[thresholds] 'sparse_categorical_accuracy' is not a metric of a binary task; valid: auc, pr_auc"),
        (("[thresholds]", "[task]\ntype = \"multiclass\"\n[thresholds]"), "a multiclass task needs either classes"),
        (("[thresholds]", "[task]\ntype = \"binary\"\nclasses = [\"a\", \"b\"]\n[thresholds]"),
         "classes and label_vocabulary are for type = \"multiclass\" only"),
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
        # a platform trial: a typo in a step's resources gave train the defaults (no GPU, 2Gi), silently
        (("[thresholds]", "[kubernetes.resources.trian]\ngpus = 1\n[thresholds]"),
         "[kubernetes.resources.trian]: no step is named 'trian' (did you mean [kubernetes.resources.train]?); the "
         "steps are validate, transform, train, evaluate, publish"),
        (("[thresholds]", "[kubernetes.resources.train]\nmemory = \"32GB\"\n[thresholds]"),
         "[kubernetes.resources.train] memory = '32GB' is not a positive Kubernetes quantity, e.g. '2Gi', '512Mi'"),
        (("[thresholds]", "[kubernetes.resources.train]\ncpu = \"eight\"\n[thresholds]"),
         "[kubernetes.resources.train] cpu = 'eight' is not a positive Kubernetes quantity, e.g. '2', '1.5' or "
         "'500m'"),
        (("[thresholds]", "[kubernetes.resources.evaluate]\ncpu = \"0m\"\n[thresholds]"),
         "cpu = '0m' is not a positive Kubernetes quantity"),
        (("[thresholds]", "[kubernetes.resources.evaluate]\nmemory = \"512m\"\n[thresholds]"),
         "memory = '512m' is not a positive Kubernetes quantity, e.g. '2Gi', '512Mi'"),
        (("[thresholds]", "[kubernetes]\ngpu_tolerations = [{ key = \"g\", operator = \"Exists\", value = \"x\" }]"
                          "\n[thresholds]"), "gpu_tolerations[0]: operator = 'Exists' takes no value"),
        (("[thresholds]", "[kubernetes]\ngpu_tolerations = [{ value = \"x\" }]\n[thresholds]"),
         "gpu_tolerations[0]: operator 'Equal' needs a key"),
        (("[thresholds]", "[kubernetes]\ngpu_tolerations = [{ key = \"g\", toleration_seconds = 60 }]\n"
                          "[thresholds]"), "gpu_tolerations[0]: toleration_seconds needs effect = 'NoExecute'"),
        (("[thresholds]", "[kubernetes]\nstartup_timeout_seconds = -5\n[thresholds]"),
         "[kubernetes] startup_timeout_seconds must be at least 1"),
        (("[thresholds]", "[kubernetes]\ngpu_tolerations = [{ kye = \"nvidia.com/gpu\" }]\n[thresholds]"),
         "[kubernetes] gpu_tolerations[0]: unknown field(s) kye; a toleration has key, operator, value, effect, "
         "toleration_seconds"),
        (("[thresholds]", "[kubernetes]\ngpu_tolerations = [{ key = \"g\", effect = \"NoSchedul\" }]\n"
                          "[thresholds]"),
         "gpu_tolerations[0]: effect = 'NoSchedul' is not one of NoSchedule, PreferNoSchedule, NoExecute"),
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


def test_thresholds_on_task_metrics_per_class_and_keras_metrics(tmp_path):
    text = VALID.replace("[thresholds]\nauc = { min = 0.7 }", """
[task]
type = "multiclass"
classes = ["a", "b", "c"]
keras_metrics = ["sparse_top_k_categorical_accuracy"]
[thresholds]
accuracy = { min = 0.5 }
"recall/b" = { min = 0.2 }
sparse_top_k_categorical_accuracy = { min = 0.9 }
""")
    config = load_model_config(write(tmp_path, text))
    assert config.task.type == "multiclass" and config.task.classes == ("a", "b", "c")
    assert {b.metric for b in config.thresholds} == {"accuracy", "recall/b", "sparse_top_k_categorical_accuracy"}
    with pytest.raises(ConfigError, match="'recall/d' is not a metric of a multiclass task"):
        load_model_config(write(tmp_path, text.replace('"recall/b"', '"recall/d"')))
    vocabulary = text.replace('classes = ["a", "b", "c"]', 'label_vocabulary = "label"').replace('"recall/b"', '"recall/d"')
    assert load_model_config(write(tmp_path, vocabulary)).task.label_vocabulary == "label"  # classes known later


def test_nan_never_meets_a_threshold():
    from pipelines.config import Bound

    for value in (float("nan"), float("inf"), None):
        assert "is not a finite number" in Bound("auc", min=0.5).violation(value)
        assert "is not a finite number" in Bound("log_loss", max=0.5).violation(value)
    assert Bound("auc", min=0.5).violation(0.6) is None
