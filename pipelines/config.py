"""Model configuration: the light, TensorFlow-free part of a model module.

A model is a folder ``pipelines/models/<name>/`` holding ``config.toml`` (read
here, also by the DAG factory at parse time), ``features.py`` (the raw schema and
feature contract, TF-free) and ``model.py`` (``preprocessing_fn`` and
``build_model``; imported only inside the TF steps).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import importlib
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

MODELS_DIR = Path(__file__).parent / "models"
DATA_FORMATS = ("csv", "parquet")


class ConfigError(ValueError):
    """A model config is missing a field or has a bad value; the message names both and the file."""


@dataclass(frozen=True)
class Bound:
    """A value threshold on one metric: ``min <= value <= max`` (either side optional)."""

    metric: str
    min: float | None = None
    max: float | None = None

    def violation(self, value: float) -> str | None:
        if self.min is not None and value < self.min:
            return f"{self.metric}={value:.4f} is below the minimum {self.min}"
        if self.max is not None and value > self.max:
            return f"{self.metric}={value:.4f} is above the maximum {self.max}"
        return None


@dataclass(frozen=True)
class DataConfig:
    location: str  # pattern with {data_root} and {date}
    format: str = "csv"
    lookback_days: int = 6
    eval_days: int = 1


STRATEGIES = ("default", "mirrored", "multi_worker")


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 3
    batch_size: int = 256
    learning_rate: float = 0.003
    seed: int = 42
    strategy: str = "default"  # default | mirrored (all local GPUs) | multi_worker (TF_CONFIG)
    mixed_precision: bool = False


@dataclass(frozen=True)
class TransformConfig:
    # Beam pipeline options, passed to the pipeline unchanged; empty: DirectRunner in memory.
    # e.g. ["--runner=DataflowRunner", "--project=...", "--region=...", "--temp_location=gs://..."]
    beam_args: tuple[str, ...] = ()


@dataclass(frozen=True)
class RolloutConfig:
    keep_versions: int = 3  # versions kept loaded for an instant rollback (stable and previous at least)
    load_timeout_seconds: float = 120.0
    label_timeout_seconds: float = 60.0
    canary_rows: int = 32
    canary_tolerance: float = 1e-5
    latency_budget_ms: float = 500.0  # per canary request, end to end


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
    rollout: RolloutConfig = RolloutConfig()
    kubernetes: KubernetesConfig = KubernetesConfig()
    transform: TransformConfig = TransformConfig()
    validation: ValidationConfig = ValidationConfig()

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
        """The TF-free feature contract (raw schema, label, transformed names)."""
        return importlib.import_module(f"{self.module}.features")

    def model_module(self) -> ModuleType:
        """``preprocessing_fn`` and ``build_model``; imports TensorFlow."""
        return importlib.import_module(f"{self.module}.model")


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


def _parse(raw: dict[str, Any], source: Path) -> ModelConfig:
    for key in ("name", "module", "schedule", "start_date"):
        if key not in raw:
            raise ConfigError(f"{source}: missing required field '{key}'")
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
    beam_args = _section(raw, "transform", source).get("beam_args", [])
    if not isinstance(beam_args, list) or not all(isinstance(a, str) and a.startswith("--") for a in beam_args):
        raise ConfigError(f"{source}: [transform] beam_args must be a list of '--option=value' strings")
    if set(_section(raw, "transform", source)) - {"beam_args"}:
        raise ConfigError(f"{source}: [transform] only takes beam_args")
    rollout = _build(RolloutConfig, _section(raw, "rollout", source), "rollout", source)
    if rollout.keep_versions < 2:
        raise ConfigError(f"{source}: [rollout] keep_versions must be at least 2 (stable and previous)")
    if min(rollout.load_timeout_seconds, rollout.label_timeout_seconds, rollout.latency_budget_ms) <= 0:
        raise ConfigError(f"{source}: [rollout] timeouts and latency_budget_ms must be positive")
    kubernetes = _kubernetes(_section(raw, "kubernetes", source), source)
    validation = _validation(_section(raw, "validation", source), data, source)
    bounds = []
    for metric, spec in _section(raw, "thresholds", source).items():
        if not isinstance(spec, dict) or not spec or set(spec) - {"min", "max"}:
            raise ConfigError(f"{source}: [thresholds] {metric} must be a table with 'min' and/or 'max'")
        bounds.append(Bound(metric=metric, min=spec.get("min"), max=spec.get("max")))
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
    )


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


def _kubernetes(raw: dict[str, Any], source: Path) -> KubernetesConfig:
    raw = dict(raw)
    resources = {}
    for step, values in raw.pop("resources", {}).items():
        if not isinstance(values, dict):
            raise ConfigError(f"{source}: [kubernetes.resources.{step}] must be a table")
        res = _build(StepResources, values, f"kubernetes.resources.{step}", source)
        if res.gpus < 0 or res.active_deadline_seconds < 1:
            raise ConfigError(f"{source}: [kubernetes.resources.{step}] gpus >= 0 and active_deadline_seconds >= 1")
        resources[step] = res
    selector = raw.pop("gpu_node_selector", {})
    tolerations = raw.pop("gpu_tolerations", [])
    if not isinstance(selector, dict) or not all(isinstance(v, str) for v in selector.values()):
        raise ConfigError(f"{source}: [kubernetes] gpu_node_selector must be a table of strings")
    if not isinstance(tolerations, list) or not all(isinstance(t, dict) for t in tolerations):
        raise ConfigError(f"{source}: [kubernetes] gpu_tolerations must be a list of tables")
    rest = _build(KubernetesConfig, raw, "kubernetes", source)
    return dataclasses.replace(rest, resources=resources, gpu_node_selector=selector,
                               gpu_tolerations=tuple(tolerations))


def resolve_config_path(model: str | Path) -> Path:
    """A registered model name (``taxi``) or a path to a ``config.toml``."""
    path = Path(model)
    if path.suffix == ".toml":
        if not path.is_file():
            raise ConfigError(f"model config file not found: {path}")
        return path.resolve()
    candidate = MODELS_DIR / str(model) / "config.toml"
    if not candidate.is_file():
        known = sorted(p.parent.name for p in MODELS_DIR.glob("*/config.toml"))
        raise ConfigError(f"unknown model {model!r}; known models: {', '.join(known) or 'none'}")
    return candidate


def load_model_config(model: str | Path) -> ModelConfig:
    source = resolve_config_path(model)
    try:
        raw = tomllib.loads(source.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}") from None
    config = _parse(raw, source)
    _check_against_schema(config)
    return config


def _check_against_schema(config: ModelConfig) -> None:
    """Settings that name columns must name columns of the model's (TF-free) schema."""
    schema = config.features_module().SCHEMA
    unknown = sorted(set(config.validation.features) - set(schema.names))
    if unknown:
        raise ConfigError(f"{config.source}: [validation.features] names column(s) the schema of "
                          f"{config.module} does not have: {', '.join(unknown)} (columns: {', '.join(schema.names)})")
