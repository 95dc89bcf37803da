"""Model configuration: the light, TensorFlow-free part of a model module.

A model is a folder ``pipelines/models/<name>/`` holding ``config.toml`` (read
here, also by the DAG factory at parse time), ``features.py`` (the raw schema and
feature contract, TF-free) and ``model.py`` (``preprocessing_fn`` and
``build_model``; imported only inside the TF steps).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import difflib
import importlib
import math
import os
import re
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

MODELS_DIR = Path(__file__).parent / "models"
# more model folders (os.pathsep-separated), e.g. a repository of the team's models outside this one
MODELS_PATH_ENV = "SKEWFREE_MODELS_DIR"
DATA_FORMATS = ("csv", "parquet")

TASK_TYPES = ("binary", "multiclass", "regression")
# what evaluate computes for each task type (through the serving signature), the names thresholds may use;
# multi-class also has per-class "recall/<class>" and "precision/<class>"
TASK_METRICS: dict[str, tuple[str, ...]] = {
    "binary": ("auc", "pr_auc", "log_loss", "accuracy", "calibration", "label_mean", "prediction_mean"),
    "multiclass": ("accuracy", "log_loss", "macro_recall", "macro_precision"),
    "regression": ("mae", "rmse", "r2", "label_mean", "prediction_mean"),
}
COMMON_METRICS = ("examples", "max_abs_skew")
PER_CLASS_METRICS = ("recall", "precision")
# the one metric that sums a version up (the versions table, the UI's history chart)
HEADLINE_METRIC = {"binary": "auc", "multiclass": "accuracy", "regression": "rmse"}
# the served output a task's predictions are compared on (skew gate, canary)
PRIMARY_OUTPUT = {"binary": "probability", "multiclass": "scores", "regression": "value"}


class ConfigError(ValueError):
    """A model config is missing a field or has a bad value; the message names both and the file."""


# which way is better, for metrics whose change thresholds need no explicit direction
HIGHER_IS_BETTER = ("auc", "pr_auc", "accuracy", "r2", "macro_recall", "macro_precision", "recall/", "precision/")
LOWER_IS_BETTER = ("log_loss", "mae", "rmse")


def default_direction(metric: str) -> str | None:
    if metric in LOWER_IS_BETTER:
        return "lower"
    if metric in HIGHER_IS_BETTER or metric.startswith(("recall/", "precision/")):
        return "higher"
    return None


@dataclass(frozen=True)
class ChangeThreshold:
    """How much worse than the baseline (the version serving as ``stable``) a metric may get, as TFMA's
    ``GenericChangeThreshold``: ``absolute`` in the metric's units and/or ``relative`` to the baseline.

    :param direction: ``higher`` (higher is better, e.g. AUC) or ``lower`` (e.g. log loss).
    """

    direction: str
    absolute: float | None = None
    relative: float | None = None

    def violation(self, metric: str, candidate: float | None, baseline: float | None, version: int) -> str | None:
        """Why ``candidate`` is too much worse than ``baseline``, naming both; fails closed on NaN."""
        numbers = [candidate, baseline]
        if any(v is None or not math.isfinite(v) for v in numbers):
            return (f"{metric}: candidate {candidate} vs baseline {baseline} (version {version}): not finite "
                    "numbers, so the change threshold cannot be met")
        worse = baseline - candidate if self.direction == "higher" else candidate - baseline
        limits = []
        if self.absolute is not None and worse > self.absolute:
            limits.append(f"more than the allowed {self.absolute}")
        if self.relative is not None and baseline and worse / abs(baseline) > self.relative:
            limits.append(f"{worse / abs(baseline):.2%} of the baseline, more than the allowed {self.relative:.2%}")
        if not limits:
            return None
        return (f"{metric}: candidate {candidate:.4f} vs baseline {baseline:.4f} (version {version}): worse by "
                f"{worse:.4f}, " + " and ".join(limits) + f" ({self.direction} is better)")


@dataclass(frozen=True)
class Bound:
    """A value threshold on one metric: ``min <= value <= max`` (either side optional), and optionally a
    change threshold against the baseline."""

    metric: str
    min: float | None = None
    max: float | None = None
    change: ChangeThreshold | None = None

    def violation(self, value: float | None) -> str | None:
        """Why ``value`` breaks the bound, or None. Fails closed: NaN, inf or no value is a violation."""
        if value is None or not math.isfinite(value):
            return f"{self.metric}={value} is not a finite number, so it cannot meet its threshold"
        if self.min is not None and value < self.min:
            return f"{self.metric}={value:.4f} is below the minimum {self.min}"
        if self.max is not None and value > self.max:
            return f"{self.metric}={value:.4f} is above the maximum {self.max}"
        return None


@dataclass(frozen=True)
class TaskConfig:
    """What the model predicts, which decides its served outputs and its metrics.

    :param type: ``binary`` (served: ``probability``), ``multiclass`` (``scores``, ``class_ids``,
        ``classes``) or ``regression`` (``value``).
    :param classes: multi-class: the class names in label-id order (the transformed label is the id).
    :param label_vocabulary: multi-class: the ``vocab_filename`` of the TFT vocabulary ``preprocessing_fn``
        computes for the label (the transformed label is its id); the class names are read from it.
    :param keras_metrics: more tf_keras metrics by name (e.g. ``mean_absolute_percentage_error``),
        computed on the serving path; thresholds may use them.
    """

    type: str = "binary"
    classes: tuple[str, ...] = ()
    label_vocabulary: str | None = None
    keras_metrics: tuple[str, ...] = ()

    def metric_names(self) -> tuple[str, ...]:
        per_class = tuple(f"{m}/{c}" for m in PER_CLASS_METRICS for c in self.classes)
        return TASK_METRICS[self.type] + COMMON_METRICS + self.keras_metrics + per_class

    def knows_metric(self, name: str) -> bool:
        if name in self.metric_names():
            return True
        # class names from a vocabulary are known only once transform has run
        head, _, rest = name.partition("/")
        return self.type == "multiclass" and bool(self.label_vocabulary) and head in PER_CLASS_METRICS and bool(rest)


@dataclass(frozen=True)
class DataConfig:
    location: str  # pattern with {data_root} and {date}
    format: str = "csv"
    lookback_days: int = 6
    eval_days: int = 1


STRATEGIES = ("default", "mirrored", "multi_worker")
MAX_WORKERS = 64


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 3
    batch_size: int = 256
    learning_rate: float = 0.003
    seed: int = 42
    strategy: str = "default"  # default | mirrored (all local GPUs) | multi_worker (TF_CONFIG)
    mixed_precision: bool = False
    # transformed data up to this size (TFRecord bytes) is trained from memory: fit() shuffles and slices
    # arrays with no per-example ops (benchmarks/train_input.py: ~1.2x the TFRecord stream); larger data,
    # and multi_worker (each worker reads its shard), stream from the TFRecords
    in_memory_max_mb: int = 2048
    # pods training together on the kubernetes backend (an Indexed Job, MultiWorkerMirroredStrategy); the
    # local backend trains in one process
    workers: int = 1


@dataclass(frozen=True)
class TransformConfig:
    # Beam pipeline options, passed to the pipeline unchanged; empty: the local FnApiRunner in memory.
    # e.g. ["--runner=PortableRunner", "--job_endpoint=localhost:8099", "--environment_type=EXTERNAL", ...];
    # transform refuses a runner whose workers cannot reach its paths (transform.worker_location)
    beam_args: tuple[str, ...] = ()


@dataclass(frozen=True)
class RolloutConfig:
    keep_versions: int = 3  # versions kept loaded for an instant rollback (stable and previous at least)
    load_timeout_seconds: float = 120.0
    label_timeout_seconds: float = 60.0
    canary_rows: int = 32
    canary_tolerance: float = 1e-5
    latency_budget_ms: float = 500.0  # per canary request, end to end
    approval_timeout_minutes: float = 1440.0  # a pending approval is rejected at this deadline
    approval_assignees: tuple[str, ...] = ()  # Airflow user ids who may answer; empty: any user


UNKNOWN_COLUMN_POLICIES = ("error", "ignore")


@dataclass(frozen=True)
class FeatureChecks:
    """Drift thresholds for one column, each a number in (0, 1]; ``None`` switches that check off.

    :param categorical_drift: largest allowed change of one value's share (L-infinity distance).
    :param numeric_drift: largest allowed Jensen-Shannon divergence (base 2) of the histograms.
    :param new_values: largest allowed share of rows with a value the reference window never had.
    :param null_increase: largest allowed rise of the share of missing values.
    """

    categorical_drift: float | None = 0.1
    numeric_drift: float | None = 0.1
    new_values: float | None = 0.1
    null_increase: float | None = 0.1


@dataclass(frozen=True)
class ValidationConfig:
    """The data gate's settings (``[validation]``); see ``pipelines.validate``.

    :param unknown_columns: ``error`` (default) or ``ignore`` a column the schema does not declare.
    :param compare_days: the newest days checked for volume and drift against the rest of the window.
    :param min_volume_ratio: a compared day's rows / the reference days' median must be at least this.
    :param max_volume_ratio: ... and at most this (``None``: no bound).
    :param defaults: drift thresholds for every column; ``features`` overrides them per column.
    """

    unknown_columns: str = "error"
    compare_days: int = 1
    min_volume_ratio: float | None = 0.5
    max_volume_ratio: float | None = 3.0
    defaults: FeatureChecks = FeatureChecks()
    features: dict[str, FeatureChecks] = field(default_factory=dict)

    def checks(self, column: str) -> FeatureChecks:
        return self.features.get(column, self.defaults)


MAX_CANARY_ROWS = 1000


@dataclass(frozen=True)
class SliceSpec:
    """A slicing of the eval rows by one raw feature: each of its ``top_k`` most frequent values (categorical),
    or the intervals between ``boundaries`` (numeric). Rows missing the feature form their own slice."""

    feature: str
    top_k: int = 10
    boundaries: tuple[float, ...] = ()


@dataclass(frozen=True)
class EvaluationConfig:
    """The evaluate gate's settings (``[evaluation]``).

    :param skew_tolerance: largest allowed |training path - serving path| per eval row (relative above 1).
    :param slices: ``[[evaluation.slices]]``: per-slice metrics and example counts in the result and report.
    :param slice_thresholds: value bounds every slice with at least ``slice_min_examples`` rows must meet.
    :param slice_min_examples: smaller slices are reported, not judged.
    """

    skew_tolerance: float = 1e-5
    slices: tuple[SliceSpec, ...] = ()
    slice_thresholds: tuple[Bound, ...] = ()
    slice_min_examples: int = 100


@dataclass(frozen=True)
class StepResources:
    """Requests (= limits) for one step's pod; ``gpus`` becomes an ``nvidia.com/gpu`` limit."""

    cpu: str = "1"
    memory: str = "2Gi"
    gpus: int = 0
    active_deadline_seconds: int = 3600


@dataclass(frozen=True)
class KubernetesConfig:
    """How a model's steps run as pods (the kubernetes backend)."""

    resources: dict[str, StepResources] = field(default_factory=dict)
    gpu_node_selector: dict[str, str] = field(default_factory=dict)
    gpu_tolerations: tuple[dict[str, str], ...] = ()
    startup_timeout_seconds: int = 600

    def for_step(self, step: str) -> StepResources:
        return self.resources.get(step, StepResources())


@dataclass(frozen=True)
class ModelConfig:
    name: str
    module: str
    schedule: str
    start_date: dt.date
    data: DataConfig
    train: TrainConfig
    thresholds: tuple[Bound, ...]
    source: Path = field(compare=False)
    task: TaskConfig = TaskConfig()
    evaluation: EvaluationConfig = EvaluationConfig()
    rollout: RolloutConfig = RolloutConfig()
    kubernetes: KubernetesConfig = KubernetesConfig()
    transform: TransformConfig = TransformConfig()
    validation: ValidationConfig = ValidationConfig()
    owner: str = "skewfree"  # the DAGs' owner in the Airflow UI (a team or a person)

    # -- data windows -------------------------------------------------------
    def window(self, interval: dt.date) -> list[dt.date]:
        """Partitions a run for ``interval`` reads: ``[interval - lookback, interval]``, oldest first."""
        return [interval - dt.timedelta(days=n) for n in range(self.data.lookback_days, -1, -1)]

    def split_window(self, interval: dt.date) -> tuple[list[dt.date], list[dt.date]]:
        """(train dates, eval dates): the newest ``eval_days`` partitions are held out for evaluation."""
        days = self.window(interval)
        return days[: -self.data.eval_days], days[-self.data.eval_days :]

    def with_data_dir(self, directory: str) -> ModelConfig:
        """The same model reading partitions ``{directory}/dt=...`` instead of its configured location."""
        tail = Path(self.data.location).name  # e.g. "dt={date}"
        return dataclasses.replace(self, data=dataclasses.replace(self.data, location=f"{directory}/{tail}"))

    def partition_path(self, data_root: str, day: dt.date) -> str:
        return self.data.location.format(data_root=str(data_root).rstrip("/"), date=day.isoformat())

    # -- model code ---------------------------------------------------------
    def features_module(self) -> ModuleType:
        """The TF-free feature contract (raw schema, label, transformed names), checked on load."""
        from pipelines.contract import check_features_module

        return check_features_module(_import(f"{self.module}.features", self.source), self)

    def model_module(self) -> ModuleType:
        """``preprocessing_fn`` and ``build_model``; imports TensorFlow; checked on load."""
        from pipelines.contract import check_model_module

        return check_model_module(_import(f"{self.module}.model", self.source), self)

    def module_dir(self) -> Path:
        """The folder of the model's Python package (its own code: features.py, model.py, ...)."""
        return Path(self.features_module().__file__).parent


def _import(name: str, source: Path) -> ModuleType:
    """Import a model's module; a model kept outside this repository is importable from its models folder."""
    for folder in model_dirs()[1:]:
        if folder.resolve() in Path(source).resolve().parents and str(folder) not in sys.path:
            sys.path.insert(0, str(folder))
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name and name.startswith(exc.name):
            raise ConfigError(f"{source}: module {name!r} not found (set 'module' to the model's package, "
                              f"e.g. 'pipelines.models.<name>', or keep the model in a models folder)") from None
        raise


def _section(raw: dict[str, Any], key: str, source: Path) -> dict[str, Any]:
    value = raw.get(key, {})
    if not isinstance(value, dict):
        raise ConfigError(f"{source}: [{key}] must be a table")
    return value


def _build(cls: type, values: dict[str, Any], section: str, source: Path) -> Any:
    known = set(cls.__dataclass_fields__)
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"{source}: unknown field(s) in [{section}]: {', '.join(unknown)}")
    try:
        obj = cls(**values)
    except TypeError as exc:
        raise ConfigError(f"{source}: [{section}] {exc}") from None
    for name, f in cls.__dataclass_fields__.items():
        want = {"int": int, "float": (int, float), "str": str}.get(str(f.type))
        value = getattr(obj, name)
        if want and (not isinstance(value, want) or isinstance(value, bool)):
            raise ConfigError(f"{source}: [{section}] {name} must be {f.type}, got {value!r}")
    return obj


def default_module(source: Path) -> str:
    """A model folder's package: ``pipelines.models.<folder>`` here, ``<folder>`` in another models folder."""
    folder = Path(source).resolve().parent
    return f"pipelines.models.{folder.name}" if folder.parent == MODELS_DIR.resolve() else folder.name


def _task(raw: dict[str, Any], source: Path) -> TaskConfig:
    raw = dict(raw)
    for key in ("classes", "keras_metrics"):
        if key in raw:
            if not isinstance(raw[key], list) or not all(isinstance(v, str) and v for v in raw[key]):
                raise ConfigError(f"{source}: [task] {key} must be a list of names, got {raw[key]!r}")
            raw[key] = tuple(raw[key])
    task = _build(TaskConfig, raw, "task", source)
    if task.type not in TASK_TYPES:
        raise ConfigError(f"{source}: [task] type must be one of {TASK_TYPES}, got {task.type!r}")
    if task.type == "multiclass":
        if bool(task.classes) == bool(task.label_vocabulary):
            raise ConfigError(f"{source}: [task] a multiclass task needs either classes = [...] (names in label-id "
                              "order) or label_vocabulary = \"<vocab_filename of the label's TFT vocabulary>\"")
        if task.classes and (len(task.classes) < 2 or len(set(task.classes)) != len(task.classes)):
            raise ConfigError(f"{source}: [task] classes must be at least 2 distinct names, got {list(task.classes)}")
    elif task.classes or task.label_vocabulary:
        raise ConfigError(f"{source}: [task] classes and label_vocabulary are for type = \"multiclass\" only")
    bad = [m for m in task.keras_metrics if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", m)]
    if bad:
        raise ConfigError(f"{source}: [task] keras_metrics must be tf_keras metric names, got {bad}")
    return task


TOP_LEVEL = ("name", "module", "schedule", "start_date", "owner", "task", "data", "train", "thresholds", "evaluation",
             "validation", "rollout", "kubernetes", "transform")


def _parse(raw: dict[str, Any], source: Path) -> ModelConfig:
    unknown = sorted(set(raw) - set(TOP_LEVEL))
    if unknown:  # a misspelt [thresholds] must not switch the gate off silently
        raise ConfigError(f"{source}: unknown section(s) or field(s) {', '.join(unknown)}; valid: {', '.join(TOP_LEVEL)}")
    raw = {"name": Path(source).parent.name, "module": default_module(source), **raw}
    for key in ("schedule", "start_date"):
        if key not in raw:
            raise ConfigError(f"{source}: missing required field '{key}'")
    if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]*", str(raw["name"])):
        raise ConfigError(f"{source}: name {raw['name']!r} must be letters, digits, '_', '.' or '-' (it names DAGs "
                          "and served models)")
    task = _task(_section(raw, "task", source), source)
    data = _build(DataConfig, _section(raw, "data", source), "data", source)
    if "{date}" not in data.location:
        raise ConfigError(f"{source}: [data] location must contain '{{date}}', got {data.location!r}")
    if data.format not in DATA_FORMATS:
        raise ConfigError(f"{source}: [data] format must be one of {DATA_FORMATS}, got {data.format!r}")
    if data.lookback_days < 1 or not 1 <= data.eval_days <= data.lookback_days:
        raise ConfigError(
            f"{source}: [data] needs lookback_days >= 1 and 1 <= eval_days <= lookback_days "
            f"(got lookback_days={data.lookback_days}, eval_days={data.eval_days})"
        )
    train = _build(TrainConfig, _section(raw, "train", source), "train", source)
    if train.epochs < 1 or train.batch_size < 1 or train.learning_rate <= 0:
        raise ConfigError(f"{source}: [train] epochs, batch_size and learning_rate must be positive")
    if train.strategy not in STRATEGIES or not isinstance(train.mixed_precision, bool):
        raise ConfigError(f"{source}: [train] strategy must be one of {STRATEGIES} and mixed_precision a "
                          f"boolean (got {train.strategy!r}, {train.mixed_precision!r})")
    if not isinstance(train.workers, int) or not 1 <= train.workers <= MAX_WORKERS:
        raise ConfigError(f"{source}: [train] workers must be an integer 1..{MAX_WORKERS}, got {train.workers!r}")
    if train.workers > 1 and train.strategy != "multi_worker":
        raise ConfigError(f"{source}: [train] workers = {train.workers} trains on {train.workers} pods, which needs "
                          f"strategy = \"multi_worker\" (got {train.strategy!r})")
    beam_args = _section(raw, "transform", source).get("beam_args", [])
    if not isinstance(beam_args, list) or not all(isinstance(a, str) and a.startswith("--") for a in beam_args):
        raise ConfigError(f"{source}: [transform] beam_args must be a list of '--option=value' strings")
    if set(_section(raw, "transform", source)) - {"beam_args"}:
        raise ConfigError(f"{source}: [transform] only takes beam_args")
    rollout_raw = dict(_section(raw, "rollout", source))
    assignees = rollout_raw.get("approval_assignees", [])
    if not isinstance(assignees, list) or not all(isinstance(a, str) and a for a in assignees):
        raise ConfigError(f"{source}: [rollout] approval_assignees must be a list of Airflow user ids")
    rollout_raw["approval_assignees"] = tuple(assignees)
    rollout = _build(RolloutConfig, rollout_raw, "rollout", source)
    if not rollout.approval_timeout_minutes > 0:
        raise ConfigError(f"{source}: [rollout] approval_timeout_minutes must be positive (a pending approval is "
                          f"rejected at that deadline), got {rollout.approval_timeout_minutes}")
    if rollout.keep_versions < 2:
        raise ConfigError(f"{source}: [rollout] keep_versions must be at least 2 (stable and previous)")
    if min(rollout.load_timeout_seconds, rollout.label_timeout_seconds, rollout.latency_budget_ms) <= 0:
        raise ConfigError(f"{source}: [rollout] timeouts and latency_budget_ms must be positive")
    if not 1 <= rollout.canary_rows <= MAX_CANARY_ROWS:
        raise ConfigError(f"{source}: [rollout] canary_rows must be between 1 and {MAX_CANARY_ROWS} (evaluate ships "
                          f"that many eval rows with each version), got {rollout.canary_rows}")
    if not (math.isfinite(rollout.canary_tolerance) and rollout.canary_tolerance > 0):
        raise ConfigError(f"{source}: [rollout] canary_tolerance must be a positive number, got {rollout.canary_tolerance}")
    evaluation = _evaluation(_section(raw, "evaluation", source), task, source)
    kubernetes = _kubernetes(_section(raw, "kubernetes", source), source)
    validation = _validation(_section(raw, "validation", source), data, source)
    bounds = []
    for metric, spec in _section(raw, "thresholds", source).items():
        if not isinstance(spec, dict) or not spec or set(spec) - {"min", "max", "change"}:
            raise ConfigError(f"{source}: [thresholds] {metric} must be a table with 'min', 'max' and/or 'change'")
        if not task.knows_metric(metric):
            raise ConfigError(f"{source}: [thresholds] {metric!r} is not a metric of a {task.type} task; valid: "
                              f"{', '.join(task.metric_names())}"
                              + (", recall/<class>, precision/<class>" if task.label_vocabulary else ""))
        spec = dict(spec)
        change = _change(metric, spec.pop("change", None), source)
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in spec.values()):
            raise ConfigError(f"{source}: [thresholds] {metric} min/max must be numbers, got {spec}")
        bounds.append(Bound(metric=metric, min=spec.get("min"), max=spec.get("max"), change=change))
    start = raw["start_date"]
    if isinstance(start, str):
        try:
            start = dt.date.fromisoformat(start)
        except ValueError:
            raise ConfigError(f"{source}: start_date must be YYYY-MM-DD, got {start!r}") from None
    if not isinstance(start, dt.date):
        raise ConfigError(f"{source}: start_date must be a date, got {start!r}")
    return ModelConfig(
        name=str(raw["name"]),
        module=str(raw["module"]),
        schedule=str(raw["schedule"]),
        start_date=start,
        data=data,
        train=train,
        thresholds=tuple(bounds),
        source=source,
        rollout=rollout,
        kubernetes=kubernetes,
        transform=TransformConfig(beam_args=tuple(beam_args)),
        validation=validation,
        task=task,
        evaluation=evaluation,
        owner=_owner(raw.get("owner", "skewfree"), source),
    )


def _owner(value: Any, source: Path) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{source}: owner must be a non-empty string (a team or a person), got {value!r}")
    return value.strip()


def _change(metric: str, raw: Any, source: Path) -> ChangeThreshold | None:
    if raw is None:
        return None
    where = f"{source}: [thresholds] {metric}.change"
    if not isinstance(raw, dict) or set(raw) - {"direction", "absolute", "relative"}:
        raise ConfigError(f"{where} must be a table of direction, absolute and/or relative, e.g. "
                          "change = { absolute = 0.01 } (the metric may get worse than the baseline by at most 0.01)")
    direction = raw.get("direction", default_direction(metric))
    if direction not in ("higher", "lower"):
        raise ConfigError(f"{where}: direction must be \"higher\" or \"lower\" (which way is better) "
                          f"for {metric!r}, got {direction!r}")
    limits = {k: raw[k] for k in ("absolute", "relative") if k in raw}
    if not limits or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 0
                             for v in limits.values()):
        raise ConfigError(f"{where} needs absolute and/or relative, numbers >= 0 (how much worse than the baseline "
                          f"the metric may get), got {raw!r}")
    return ChangeThreshold(direction=direction, **{k: float(v) for k, v in limits.items()})


def _evaluation(raw: dict[str, Any], task: TaskConfig, source: Path) -> EvaluationConfig:
    raw = dict(raw)
    slices = []
    for i, spec in enumerate(raw.pop("slices", [])):
        if not isinstance(spec, dict):
            raise ConfigError(f"{source}: [[evaluation.slices]] entry {i} must be a table with 'feature'")
        spec = dict(spec)
        if "boundaries" in spec:
            bounds = spec["boundaries"]
            if not isinstance(bounds, list) or not bounds or not all(
                    isinstance(b, (int, float)) and not isinstance(b, bool) for b in bounds) or bounds != sorted(set(bounds)):
                raise ConfigError(f"{source}: [[evaluation.slices]] {spec.get('feature')!r}: boundaries must be "
                                  f"increasing numbers, got {bounds!r}")
            spec["boundaries"] = tuple(float(b) for b in bounds)
        slice_spec = _build(SliceSpec, spec, f"evaluation.slices[{i}]", source)
        if slice_spec.top_k < 1:
            raise ConfigError(f"{source}: [[evaluation.slices]] {slice_spec.feature!r}: top_k must be at least 1")
        slices.append(slice_spec)
    bounds = []
    for metric, spec in raw.pop("slice_thresholds", {}).items():
        if not isinstance(spec, dict) or not spec or set(spec) - {"min", "max"} or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) for v in spec.values()):
            raise ConfigError(f"{source}: [evaluation.slice_thresholds] {metric} must be {{ min = ..., max = ... }}")
        if not task.knows_metric(metric):
            raise ConfigError(f"{source}: [evaluation.slice_thresholds] {metric!r} is not a metric of a {task.type} "
                              f"task; valid: {', '.join(task.metric_names())}")
        bounds.append(Bound(metric=metric, min=spec.get("min"), max=spec.get("max")))
    if bounds and not slices:
        raise ConfigError(f"{source}: [evaluation] slice_thresholds need [[evaluation.slices]] to judge")
    evaluation = dataclasses.replace(_build(EvaluationConfig, raw, "evaluation", source), slices=tuple(slices),
                                     slice_thresholds=tuple(bounds))
    if not (math.isfinite(evaluation.skew_tolerance) and 0 < evaluation.skew_tolerance <= 0.01):
        raise ConfigError(f"{source}: [evaluation] skew_tolerance must be in (0, 0.01], got {evaluation.skew_tolerance}")
    if evaluation.slice_min_examples < 1:
        raise ConfigError(f"{source}: [evaluation] slice_min_examples must be at least 1")
    return evaluation


def _threshold(value: Any, where: str, source: Path) -> float | None:
    """A drift threshold in (0, 1], or ``false`` to switch the check off."""
    if value is False:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
        raise ConfigError(f"{source}: {where} must be a number in (0, 1] or false to switch it off, got {value!r}")
    return float(value)


def _feature_checks(raw: dict[str, Any], base: FeatureChecks, section: str, source: Path) -> FeatureChecks:
    names = FeatureChecks.__dataclass_fields__
    unknown = sorted(set(raw) - set(names))
    if unknown:
        raise ConfigError(f"{source}: unknown field(s) in [{section}]: {', '.join(unknown)} "
                          f"(valid: {', '.join(names)})")
    return dataclasses.replace(base, **{k: _threshold(v, f"[{section}] {k}", source) for k, v in raw.items()})


def _validation(raw: dict[str, Any], data: DataConfig, source: Path) -> ValidationConfig:
    raw = dict(raw)
    features = raw.pop("features", {})
    if not isinstance(features, dict) or not all(isinstance(v, dict) for v in features.values()):
        raise ConfigError(f"{source}: [validation.features] must hold one table per column, "
                          "e.g. [validation.features.company]")
    defaults = _feature_checks({k: raw.pop(k) for k in list(raw) if k in FeatureChecks.__dataclass_fields__},
                               FeatureChecks(), "validation", source)
    volume = raw.pop("volume_ratio", {"min": 0.5, "max": 3.0})
    if volume is False:
        volume = {}
    if not isinstance(volume, dict) or set(volume) - {"min", "max"} or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 for v in volume.values()):
        raise ConfigError(f"{source}: [validation] volume_ratio must be a table with positive 'min' and/or "
                          f"'max' (e.g. {{ min = 0.5, max = 3.0 }}) or false, got {volume!r}")
    if volume.get("min", 0) > volume.get("max", float("inf")):
        raise ConfigError(f"{source}: [validation] volume_ratio min {volume['min']} is above max {volume['max']}")
    unknown = sorted(set(raw) - {"unknown_columns", "compare_days"})
    if unknown:
        raise ConfigError(f"{source}: unknown field(s) in [validation]: {', '.join(unknown)} (valid: unknown_columns, "
                          f"compare_days, volume_ratio, features, {', '.join(FeatureChecks.__dataclass_fields__)})")
    config = _build(ValidationConfig, raw, "validation", source)
    if config.unknown_columns not in UNKNOWN_COLUMN_POLICIES:
        raise ConfigError(f"{source}: [validation] unknown_columns must be one of {UNKNOWN_COLUMN_POLICIES}, "
                          f"got {config.unknown_columns!r}")
    if not 1 <= config.compare_days <= data.lookback_days:
        raise ConfigError(f"{source}: [validation] compare_days must be between 1 and [data] lookback_days "
                          f"({data.lookback_days}) so that a reference window remains, got {config.compare_days}")
    return dataclasses.replace(
        config, min_volume_ratio=volume.get("min"), max_volume_ratio=volume.get("max"), defaults=defaults,
        features={name: _feature_checks(values, defaults, f"validation.features.{name}", source)
                  for name, values in features.items()},
    )


# A Kubernetes resource quantity: a decimal number with a binary (Ki..Ei) or decimal (m, k..E) suffix, or an exponent
_QUANTITY = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(?:[KMGTPE]i|[mkMGTPE]|[eE][+-]?\d+)?")
_QUANTITY_EXAMPLES = {"cpu": "'2', '1.5' or '500m' (millicores)", "memory": "'2Gi', '512Mi' or '4G'"}
TOLERATION_FIELDS = {"key": str, "operator": str, "value": str, "effect": str, "toleration_seconds": int}
TOLERATION_VALUES = {"operator": ("Equal", "Exists"), "effect": ("NoSchedule", "PreferNoSchedule", "NoExecute")}


def _kubernetes(raw: dict[str, Any], source: Path) -> KubernetesConfig:
    from pipelines.runs import STEPS

    raw = dict(raw)
    resources = {}
    for step, values in raw.pop("resources", {}).items():
        if step not in STEPS:  # a typo would give the step the defaults: no GPU, 2Gi
            close = difflib.get_close_matches(step, STEPS, 1)
            raise ConfigError(f"{source}: [kubernetes.resources.{step}]: no step is named {step!r}"
                              + (f" (did you mean [kubernetes.resources.{close[0]}]?)" if close else "")
                              + f"; the steps are {', '.join(STEPS)}")
        if not isinstance(values, dict):
            raise ConfigError(f"{source}: [kubernetes.resources.{step}] must be a table")
        res = _build(StepResources, values, f"kubernetes.resources.{step}", source)
        if res.gpus < 0 or res.active_deadline_seconds < 1:
            raise ConfigError(f"{source}: [kubernetes.resources.{step}] gpus >= 0 and active_deadline_seconds >= 1")
        for what, example in _QUANTITY_EXAMPLES.items():
            value = getattr(res, what)
            match = _QUANTITY.fullmatch(value)
            if match is None or float(match.group(1)) == 0 or (what == "memory" and value.endswith("m")):
                # (memory "512m" is 0.512 bytes: a container that never starts)
                raise ConfigError(f"{source}: [kubernetes.resources.{step}] {what} = {value!r} is not a positive "
                                  f"Kubernetes quantity, e.g. {example}")
        resources[step] = res
    selector = raw.pop("gpu_node_selector", {})
    tolerations = raw.pop("gpu_tolerations", [])
    if not isinstance(selector, dict) or not all(isinstance(v, str) for v in selector.values()):
        raise ConfigError(f"{source}: [kubernetes] gpu_node_selector must be a table of strings")
    if not isinstance(tolerations, list) or not all(isinstance(t, dict) for t in tolerations):
        raise ConfigError(f"{source}: [kubernetes] gpu_tolerations must be a list of tables")
    for i, toleration in enumerate(tolerations):
        where = f"{source}: [kubernetes] gpu_tolerations[{i}]"
        if unknown := sorted(set(toleration) - set(TOLERATION_FIELDS)):
            raise ConfigError(f"{where}: unknown field(s) {', '.join(unknown)}; a toleration has "
                              f"{', '.join(TOLERATION_FIELDS)}")
        for name, value in toleration.items():
            if not isinstance(value, TOLERATION_FIELDS[name]) or isinstance(value, bool):
                raise ConfigError(f"{where}: {name} must be {TOLERATION_FIELDS[name].__name__}, got {value!r}")
            if name in TOLERATION_VALUES and value not in TOLERATION_VALUES[name]:
                raise ConfigError(f"{where}: {name} = {value!r} is not one of {', '.join(TOLERATION_VALUES[name])}")
        # the API server's own rules, which it would apply to the train pod only, hours in
        if toleration.get("operator") == "Exists" and toleration.get("value"):
            raise ConfigError(f"{where}: operator = 'Exists' takes no value")
        if toleration.get("operator", "Equal") == "Equal" and not toleration.get("key"):
            raise ConfigError(f"{where}: operator 'Equal' needs a key")
        if "toleration_seconds" in toleration and toleration.get("effect") != "NoExecute":
            raise ConfigError(f"{where}: toleration_seconds needs effect = 'NoExecute'")
    rest = _build(KubernetesConfig, raw, "kubernetes", source)
    if rest.startup_timeout_seconds < 1:
        raise ConfigError(f"{source}: [kubernetes] startup_timeout_seconds must be at least 1 (how long a pod may "
                          f"wait to be scheduled and pull its image), got {rest.startup_timeout_seconds}")
    return dataclasses.replace(rest, resources=resources, gpu_node_selector=selector,
                               gpu_tolerations=tuple(tolerations))


def model_dirs() -> list[Path]:
    """Where models live: this package's ``models/`` first, then each folder of ``SKEWFREE_MODELS_DIR``."""
    extra = [Path(p) for p in os.environ.get(MODELS_PATH_ENV, "").split(os.pathsep) if p]
    return [MODELS_DIR, *extra]


def discover_models() -> dict[str, Path]:
    """Every model folder (one with a ``config.toml``) in the models folders: folder name -> config file."""
    found: dict[str, Path] = {}
    for folder in model_dirs():
        for config in sorted(Path(folder).glob("*/config.toml")):
            name = config.parent.name
            if name in found:
                raise ConfigError(f"two models are named {name!r}: {found[name]} and {config}; rename one folder")
            found[name] = config.resolve()
    return found


def resolve_config_path(model: str | Path) -> Path:
    """A registered model name (``taxi``, a folder in a models folder) or a path to a ``config.toml``."""
    path = Path(model)
    if path.suffix == ".toml":
        if not path.is_file():
            raise ConfigError(f"model config file not found: {path}")
        return path.resolve()
    known = discover_models()
    if str(model) not in known:
        raise ConfigError(f"unknown model {model!r}; known models: {', '.join(sorted(known)) or 'none'} "
                          f"(models folders: {', '.join(map(str, model_dirs()))})")
    return known[str(model)]


def load_model_config(model: str | Path, *, check_module: bool = True) -> ModelConfig:
    """The model's config, checked; ``check_module``: against its module too (features.py loads, model.py defines
    its functions, the settings that name columns name the schema's). A rollback needs the config alone: a
    broken model.py must not take it away."""
    source = resolve_config_path(model)
    try:
        raw = tomllib.loads(source.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}") from None
    config = _parse(raw, source)
    if check_module:
        _check_against_schema(config)
    return config


def _check_against_schema(config: ModelConfig) -> None:
    """The module contract (features.py loads, model.py defines its functions) and settings that name
    columns name columns of the model's (TF-free) schema."""
    from pipelines.contract import check_model_source

    check_model_source(config)
    schema = config.features_module().SCHEMA
    unknown = sorted({s.feature for s in config.evaluation.slices} - set(schema.names))
    if unknown:
        raise ConfigError(f"{config.source}: [[evaluation.slices]] names column(s) the schema of {config.module} "
                          f"does not have: {', '.join(unknown)} (columns: {', '.join(schema.names)})")
    unknown = sorted(set(config.validation.features) - set(schema.names))
    if unknown:
        raise ConfigError(f"{config.source}: [validation.features] names column(s) the schema of "
                          f"{config.module} does not have: {', '.join(unknown)} (columns: {', '.join(schema.names)})")
