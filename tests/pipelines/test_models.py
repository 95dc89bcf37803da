"""Any model in one module: the contract checked at load, per-model code versions, a derived label,
and the single-row serving check."""

from __future__ import annotations

import shutil
import sys

import numpy as np
import pytest

from pipelines.config import ConfigError, load_model_config
from tests.conftest import END, ROOT

FIXTURES = ROOT / "tests" / "fixtures" / "models"


@pytest.fixture
def models_dir(tmp_path, monkeypatch):
    """A team's models folder outside the repository, holding a copy of the ``late`` fixture."""
    folder = tmp_path / "team_models"
    shutil.copytree(FIXTURES / "late", folder / "late", ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setenv("SKEWFREE_MODELS_DIR", str(folder))
    monkeypatch.setattr(sys, "path", list(sys.path))

    def forget() -> None:  # each test imports its own copy of the package
        for name in [m for m in sys.modules if m.split(".")[0] in ("late", "late2")]:
            del sys.modules[name]

    forget()
    yield folder
    forget()


@pytest.mark.parametrize("name", ["taxi", "penguins", "delivery"])
def test_example_models_generate_data_that_passes_their_own_gate(name, tmp_path):
    from pipelines.datagen import generate_data
    from pipelines.validate import validate

    config = load_model_config(name)
    generate_data(config, data_root=str(tmp_path), end=END, days=7, rows_per_day=1500)
    assert validate(config, interval=END, data_root=str(tmp_path), artifact_root=tmp_path / "art").anomalies == []


def test_a_module_missing_build_model_fails_at_load_naming_it(models_dir):
    model_py = models_dir / "late" / "model.py"
    model_py.write_text(model_py.read_text().replace("def build_model(", "def make_model("))
    with pytest.raises(ConfigError) as err:
        load_model_config("late")
    assert f"{model_py} is missing build_model: define build_model(tf_transform_output, *, learning_rate" in str(err.value)


def test_a_build_model_without_learning_rate_fails_at_load(models_dir):
    model_py = models_dir / "late" / "model.py"
    model_py.write_text(model_py.read_text().replace("def build_model(tf_transform_output, *, learning_rate):",
                                                     "def build_model(tf_transform_output, lr):"))
    with pytest.raises(ConfigError, match=r"model.py:\d+: build_model\(tf_transform_output, lr\) must be build_model"):
        load_model_config("late")


@pytest.mark.slow
def test_a_sparse_transformed_feature_fails_in_transform_naming_it(models_dir, tmp_path):
    from pipelines.datagen import generate_data
    from pipelines.runs import StepError
    from pipelines.transform import transform
    from pipelines.validate import validate

    model_py = models_dir / "late" / "model.py"
    model_py.write_text(model_py.read_text().replace(
        "    return outputs\n", "    outputs['rating_raw_xf'] = inputs['courier_rating']  # nullable: sparse\n"
                               "    return outputs\n", 1))
    config = load_model_config("late")
    generate_data(config, data_root=str(tmp_path / "data"), end=END, days=7, rows_per_day=300)
    validate(config, interval=END, data_root=str(tmp_path / "data"), artifact_root=tmp_path / "art",
             accept=["volume", "categorical_drift", "new_values", "numeric_drift", "null_increase"])
    with pytest.raises(StepError, match=r"preprocessing_fn returns \['rating_raw_xf'\] as sparse tensors"):
        transform(config, interval=END, artifact_root=tmp_path / "art")
    assert not (tmp_path / "art" / "late" / "runs" / str(END) / "transform" / "result.json").exists()


def test_a_features_module_without_schema_fails_at_load(models_dir):
    features = models_dir / "late" / "features.py"
    features.write_text(features.read_text().replace("SCHEMA = RawSchema(", "THE_SCHEMA = RawSchema("))
    with pytest.raises(ConfigError, match=r"features.py must define SCHEMA = RawSchema\(...\) \(got NoneType\)"):
        load_model_config("late")


def test_editing_one_models_code_changes_only_its_code_version(models_dir):
    from pipelines import lineage

    shutil.copytree(models_dir / "late", models_dir / "late2", ignore=shutil.ignore_patterns("__pycache__"))
    for path in (models_dir / "late2").glob("*.py"):  # the copy's own package name
        path.write_text(path.read_text().replace("from late import", "from late2 import"))
    before = {name: lineage.code_version(load_model_config(name)) for name in ("late", "late2", "taxi")}
    model_py = models_dir / "late" / "model.py"
    model_py.write_text(model_py.read_text().replace("LATE_AFTER_MINUTES", "LATE_AFTER_MINUTES + 5"))
    lineage._files_digest.cache_clear()
    after = {name: lineage.code_version(load_model_config(name)) for name in ("late", "late2", "taxi")}
    assert after["late"] != before["late"]
    assert after["late2"] == before["late2"] and after["taxi"] == before["taxi"]  # their caches still hit
    # a threshold, the owner or a comment is no new code: transform's and train's outputs are reused (a fault
    # trial's threshold edit re-ran both); a [train] setting is
    config_toml = models_dir / "late" / "config.toml"
    text = config_toml.read_text()
    assert "[thresholds]" in text and 'owner = ' not in text
    config_toml.write_text('owner = "someone-else"  # edited\n' + text.replace("[thresholds]", "[thresholds]\n# tuned"))
    assert lineage.code_version(load_model_config("late")) == after["late"]
    config_toml.write_text(text.replace("auc = { min = 0.8 }", "auc = { min = 0.7 }\naccuracy = { min = 0.5 }"))
    assert lineage.code_version(load_model_config("late")) == after["late"]
    config_toml.write_text(text.replace("[train]", "[train]\nseed = 12345", 1))
    assert lineage.code_version(load_model_config("late")) != after["late"]


@pytest.mark.slow
def test_a_derived_label_trains_and_serves_without_its_training_only_column(models_dir, tmp_path):
    import tensorflow as tf

    from pipelines.datagen import generate_data
    from pipelines.evaluate import evaluate
    from pipelines.train import train
    from pipelines.transform import transform
    from pipelines.validate import validate

    config = load_model_config("late")
    schema = config.features_module().SCHEMA
    assert "delivery_minutes" not in [f.name for f in schema.serving_features()]
    generate_data(config, data_root=str(tmp_path / "data"), end=END, days=7, rows_per_day=1000)
    art = tmp_path / "art"
    validate(config, interval=END, data_root=str(tmp_path / "data"), artifact_root=art)
    transform(config, interval=END, artifact_root=art)
    trained = train(config, interval=END, artifact_root=art)
    result = evaluate(config, interval=END, artifact_root=art)
    assert result.blessed, result.reasons
    assert 0.8 < result.metrics["auc"] <= 1.0 and result.metrics["max_abs_skew"] < 1e-5
    raw = tf.saved_model.load(trained.saved_model).signatures["serving_raw"]
    assert set(raw.structured_input_signature[1]) == {"distance_km", "items", "hour", "weather", "courier_rating"}
    out = raw(distance_km=tf.constant([1.0, 12.0]), items=tf.constant([1, 9], tf.int64),
              hour=tf.constant([3, 19], tf.int64), weather=tf.constant(["clear", "snow"]),
              courier_rating=tf.constant([4.9, 3.1]))["probability"].numpy()
    assert out[0] < 0.5 < out[1]  # a short quiet night trip is on time, a long snowy dinner rush is late


def test_the_single_row_check_catches_a_batch_dependent_serving_graph(tmp_path):
    """A preprocessing step that reads column 0 of a densified sparse feature works on batches where
    some row has the value and fails on a row sent alone without it: evaluate refuses such a model."""
    import tensorflow as tf

    from pipelines.evaluate import single_row_reason
    from pipelines.serving.client import encode_example

    class Fragile(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
        def serve(self, examples):
            parsed = tf.io.parse_example(examples, {"x": tf.io.VarLenFeature(tf.float32)})
            return {"value": tf.sparse.to_dense(parsed["x"])[:, 0] * 2.0}

    tf.saved_model.save(Fragile(), str(tmp_path / "m"), signatures={"serving_default": Fragile().serve})
    examples = [encode_example({"x": 1.0}, {"x": "DT_FLOAT"}), encode_example({}, {"x": "DT_FLOAT"})]
    batched = np.array([2.0, 0.0])
    reason = single_row_reason(str(tmp_path / "m"), examples, batched, [1, 0], "value")
    assert reason and reason.startswith("the serving signature fails on eval row 1 sent alone")
    assert "out of bounds" in reason and "preprocessing_fn must handle a batch" in reason
    assert single_row_reason(str(tmp_path / "m"), examples, batched, [0], "value") is None


def test_classes_in_another_order_than_the_labels_vocabulary_are_refused(tmp_path):
    """A user trial: a string label's ids came from a TFT vocabulary (by frequency: urgent, high, medium, low)
    while [task] classes listed low..urgent: every per-class metric and the served `classes` named another
    class, and the model was blessed."""
    import tensorflow_transform as tft

    from pipelines.config import TaskConfig
    from pipelines.runs import StepError
    from pipelines.train import class_names

    assets = tmp_path / "transform_fn" / "assets"
    assets.mkdir(parents=True)
    (assets / "priority").write_text("urgent\nhigh\nmedium\nlow\n")
    (assets / "channel").write_text("email\nphone\n")
    output = tft.TFTransformOutput(str(tmp_path))
    (assets / "previous_priority").write_text("high\nlow\nurgent\nmedium\n")  # a feature's vocabulary
    task = TaskConfig(type="multiclass", classes=("low", "medium", "high", "urgent"))
    with pytest.raises(StepError, match=r"\[task\] classes = \['low', 'medium', 'high', 'urgent'\] are not the "
                                        r"label's ids: TFT vocabulary 'priority' numbers them "
                                        r"\['urgent', 'high', 'medium', 'low'\].*label_vocabulary = 'priority' "
                                        r"instead of classes, and pin the order with fingerprint_shuffle=True: TFT "
                                        r"orders a vocabulary by frequency"):
        class_names(task, output, "priority")
    # a vocabulary in fingerprint_shuffle's order (a user trial was told to pin an order it had pinned)
    (assets / "priority").write_text("medium\nlow\nurgent\nhigh\n")
    with pytest.raises(StepError, match=r"instead of classes \(its order is the one fingerprint_shuffle=True gives, "
                                        r"by a hash of each name; without it"):
        class_names(task, output, "priority")
    (assets / "priority").write_text("urgent\nhigh\nmedium\nlow\n")
    pinned = TaskConfig(type="multiclass", classes=("urgent", "high", "medium", "low"))
    assert class_names(pinned, output, "priority") == ["urgent", "high", "medium", "low"]
    # only the label's vocabulary gives its ids (pinned passed beside previous_priority's other order); a label
    # mapped without one (a static table in the classes' order) is not checked
    assert class_names(task, output, "label_made_without_a_vocabulary") == list(task.classes)
    # a day without 'medium' rows: the vocabulary gives 'low' id 2, which classes name 'medium'
    (assets / "priority").write_text("urgent\nhigh\nlow\n")
    for classes in (task, pinned):
        with pytest.raises(StepError, match="are not the label's ids"):
            class_names(classes, output, "priority")
    (assets / "priority").write_text("urgent\nhigh\nmedium\nlow\nunheard\n")  # a name classes lack
    with pytest.raises(StepError, match="are not the label's ids"):
        class_names(pinned, output, "priority")
    assert class_names(TaskConfig(type="multiclass", classes=("a", "b")), output) == ["a", "b"]  # no label named
    assert class_names(TaskConfig(type="multiclass", label_vocabulary="priority"), output) == \
        ["urgent", "high", "medium", "low", "unheard"]


def test_a_model_without_a_data_generator_says_to_bring_its_data(models_dir, tmp_path, monkeypatch):
    """`./dev demo --model <yours>` without --no-generate ended in a traceback; a datagen module that fails on an
    import of its own is not called missing."""
    from pipelines.datagen import generate_data
    from skewfree import demo

    (models_dir / "late" / "datagen.py").unlink()
    config = load_model_config("late")
    with pytest.raises(ValueError, match=r"model 'late' ships no demo data generator \(late.datagen\): put its "
                                         r"partitions under the data root \(.*\) and run the demo with --no-generate"):
        generate_data(config, data_root=str(tmp_path / "data"), end=END, days=2)
    monkeypatch.setenv("SKEWFREE_HOME", str(tmp_path / "home"))
    with pytest.raises(SystemExit) as exit_:
        demo.main(["--model", "late", "--end", END.isoformat(), "--days", "2"])
    assert str(exit_.value).startswith("error: model 'late' ships no demo data generator")
    (models_dir / "late" / "datagen.py").write_text("import a_package_nobody_installed\n")
    with pytest.raises(ModuleNotFoundError, match="a_package_nobody_installed"):
        generate_data(config, data_root=str(tmp_path / "data"), end=END, days=2)


def test_served_class_names_are_checked_against_the_raw_labels(tmp_path, monkeypatch):
    """A re-trial: [task] classes in another order than the label's ids passed train's check when the label's
    vocabulary had another name than the label (``vocab_filename="species_ids"``): every served ``classes`` name
    was another class's. The eval split now keeps the raw label, and evaluate refuses names that are not it."""
    import numpy as np
    import tensorflow_transform as tft

    from pipelines.datagen import generate_data
    from pipelines.evaluate import class_name_problem, evaluate
    from pipelines.runs import StepError
    from pipelines.train import train
    from pipelines.transform import transform
    from pipelines.validate import validate

    team = tmp_path / "team"
    shutil.copytree(ROOT / "pipelines" / "models" / "penguins", team / "zoo",
                    ignore=shutil.ignore_patterns("__pycache__"))
    model_py = team / "zoo" / "model.py"
    model_py.write_text(model_py.read_text().replace("vocab_filename=F.LABEL_KEY", 'vocab_filename="species_ids"')
                        .replace("vocabulary_size_by_name(F.LABEL_KEY)", 'vocabulary_size_by_name("species_ids")'))
    monkeypatch.setenv("SKEWFREE_MODELS_DIR", str(team))
    monkeypatch.setattr(sys, "path", list(sys.path))
    config_toml = team / "zoo" / "config.toml"
    config = load_model_config("zoo")
    data, art = tmp_path / "data", tmp_path / "art"
    generate_data(config, data_root=str(data), end=END, days=7, rows_per_day=300)
    validate(config, interval=END, data_root=str(data), artifact_root=art)
    transformed = transform(config, interval=END, artifact_root=art)
    ids = [v.decode() for v in tft.TFTransformOutput(transformed.transform_fn).vocabulary_by_name("species_ids")]
    wrong = list(reversed(ids))
    config_toml.write_text(config_toml.read_text().replace(
        'label_vocabulary = "species"', f"classes = {json_list(wrong)}"))
    config = load_model_config("zoo")
    train(config, interval=END, artifact_root=art, overrides={"epochs": 1})  # no vocabulary named 'species'
    with pytest.raises(StepError) as err:
        evaluate(config, interval=END, artifact_root=art)
    assert (f"the class names the model would serve are not the labels of column 'species': rows labelled "
            f"{ids[0]!r} have id 0, which the model names {wrong[0]!r}") in str(err.value)
    assert f"Set [task] classes = {json_list(ids)}, or set label_vocabulary" in str(err.value)
    # train makes the export's checks before an epoch is spent (a user trial waited for the fit to be refused)
    import tf_keras

    config_toml.write_text(config_toml.read_text().replace(json_list(wrong), json_list([*ids, "Emperor"])))
    monkeypatch.setattr(tf_keras.Model, "fit", lambda *args, **kwargs: pytest.fail("fitted before the checks"))
    with pytest.raises(StepError, match=r"a multiclass task needs 4 scores"):
        train(load_model_config("zoo"), interval=END, artifact_root=art, overrides={"epochs": 1})

    # the rule alone: names in id order pass; rows without a raw label (not a string column) are not checked
    raw = np.array([b"b", b"a", b"", b"c"], dtype=object)
    assert class_name_problem(["a", "b", "c"], np.array([1.0, 0.0, 2.0, 2.0]), raw, "y") is None
    swapped = class_name_problem(["a", "b", "c"], np.array([0.0, 1.0, 2.0, 2.0]), raw, "y")
    assert "rows labelled 'b' have id 0, which the model names 'a'" in swapped
    assert 'Set [task] classes = ["b", "a", "c"]' in swapped
    # a label preprocessing_fn normalises before mapping it (lower case, spaces) is its class, not another's
    spelled = np.array([b"Adelie ", b"GENTOO", b"Chinstrap"], dtype=object)
    assert class_name_problem(["adelie", "gentoo", "chinstrap"], np.array([0.0, 1.0, 2.0]), spelled, "y") is None
    assert "rows labelled 'GENTOO' have id 0, which the model names 'adelie'" in class_name_problem(
        ["adelie", "gentoo", "chinstrap"], np.array([1.0, 0.0, 2.0]), spelled, "y")
    # names that are no raw label (codes for names) and ids beyond the classes (an OOV bucket) say nothing of order
    assert class_name_problem(["low", "high"], np.array([0.0, 1.0]), np.array([b"L", b"H"], dtype=object), "y") is None
    assert class_name_problem(["a", "b", "c"], np.array([1.0, 0.0, 2.0, 3.0]), raw, "y") is None
    assert class_name_problem(["a"], np.array([5.0]), np.array([b""], dtype=object), "y") is None


def json_list(values: list[str]) -> str:
    import json

    return json.dumps(values)


@pytest.mark.slow
def test_an_error_in_preprocessing_fn_is_the_modules_named_with_its_line(models_dir, tmp_path):
    """A user trial's preprocessing_fn raised a TypeError while TFT traced it: the step 'crashed (exit 1)' and
    was retried. It is now the step's expected failure, naming the module's line and the error."""
    from pipelines.datagen import generate_data
    from pipelines.runs import StepError
    from pipelines.transform import transform
    from pipelines.validate import validate

    model_py = models_dir / "late" / "model.py"
    model_py.write_text(model_py.read_text().replace(
        "    return outputs\n", "    outputs['mixed_xf'] = tf.cast(inputs['items'], tf.float32) + inputs['hour']\n"
                               "    return outputs\n", 1))
    line = model_py.read_text().splitlines().index(
        "    outputs['mixed_xf'] = tf.cast(inputs['items'], tf.float32) + inputs['hour']") + 1
    config = load_model_config("late")
    generate_data(config, data_root=str(tmp_path / "data"), end=END, days=7, rows_per_day=300)
    validate(config, interval=END, data_root=str(tmp_path / "data"), artifact_root=tmp_path / "art",
             accept=["volume", "categorical_drift", "new_values", "numeric_drift", "null_increase"])
    with pytest.raises(StepError) as err:
        transform(config, interval=END, artifact_root=tmp_path / "art")
    assert str(err.value).startswith(
        f"late: preprocessing_fn failed while TFT traced it at {model_py.resolve()}:{line} (outputs['mixed_xf'] = "
        "tf.cast(inputs['items'], tf.float32) + inputs['hour']): TypeError: "), str(err.value)
    assert "int64" in str(err.value) and str(err.value).endswith("fix preprocessing_fn and run transform again")
    assert not (tmp_path / "art" / "late" / "runs" / str(END) / "transform" / "result.json").exists()


@pytest.mark.slow
def test_train_refuses_a_transform_output_of_other_code(models_dir, tmp_path):
    """A fault trial edited preprocessing_fn after transform and ran train by hand: it fitted the new code behind
    the old TFT graph, and the published manifest named code that was not what served. Train (and evaluate and
    publish) now refuse a transform output made with other code."""
    from pipelines import lineage
    from pipelines.datagen import generate_data
    from pipelines.runs import StepError
    from pipelines.train import train
    from pipelines.transform import transform
    from pipelines.validate import validate

    config = load_model_config("late")
    generate_data(config, data_root=str(tmp_path / "data"), end=END, days=7, rows_per_day=300)
    validate(config, interval=END, data_root=str(tmp_path / "data"), artifact_root=tmp_path / "art",
             accept=["volume", "categorical_drift", "new_values", "numeric_drift", "null_increase"])
    transform(config, interval=END, artifact_root=tmp_path / "art")
    model_py = models_dir / "late" / "model.py"
    model_py.write_text(model_py.read_text().replace("minutes > F.LATE_AFTER_MINUTES", "minutes > 2 * F.LATE_AFTER_MINUTES"))
    lineage._files_digest.cache_clear()  # (each step is a process of its own)
    with pytest.raises(StepError, match=r"the transform output of late .* was made with other code: model.py \(its "
                                        r"preprocessing_fn\), features.py or the pipeline changed since: run "
                                        r"transform again before train"):
        train(load_model_config("late"), interval=END, artifact_root=tmp_path / "art", overrides={"epochs": 1})
    assert not (tmp_path / "art" / "late" / "runs" / str(END) / "train" / "result.json").exists()
