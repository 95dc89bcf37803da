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
    return _parse(raw, source)
