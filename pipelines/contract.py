"""The model-module contract, checked when a module loads, with errors that say what is missing.

A model is a folder with ``config.toml``, ``features.py`` (TF-free) and ``model.py``:

- ``features.py``: ``SCHEMA`` (a ``RawSchema``), ``LABEL_KEY`` (the label's name: a raw column, or a
  label ``preprocessing_fn`` derives from ``SCHEMA.training_only`` columns) and
  ``transformed_name(key) -> str``;
- ``model.py``: ``preprocessing_fn(inputs) -> dict`` (TFT; its outputs include
  ``transformed_name(LABEL_KEY)``) and ``build_model(tf_transform_output, *, learning_rate) -> tf_keras.Model``
  whose inputs are transformed features and whose output fits the task type (binary: one
  probability; multiclass: one score per class; regression: one value).

``ModelModule`` and ``FeaturesModule`` state the same as Protocols, for type checkers and readers.
``check_model_source`` reads model.py's syntax tree, so a missing function fails at DAG parse
without importing TensorFlow.
"""

from __future__ import annotations

import ast
import inspect
from collections.abc import Callable
from types import ModuleType
from typing import TYPE_CHECKING, Any, Protocol

from pipelines.schema import RawSchema

if TYPE_CHECKING:
    from pipelines.config import ModelConfig

MODEL_FUNCTIONS = {
    "preprocessing_fn": "preprocessing_fn(inputs: dict) -> dict (TFT: raw tensors in, transformed tensors out)",
    "build_model": "build_model(tf_transform_output, *, learning_rate: float) -> tf_keras.Model",
}


class FeaturesModule(Protocol):
    SCHEMA: RawSchema
    LABEL_KEY: str

    def transformed_name(self, key: str) -> str: ...


class ModelModule(Protocol):
    def preprocessing_fn(self, inputs: dict[str, Any]) -> dict[str, Any]: ...

    def build_model(self, tf_transform_output: Any, *, learning_rate: float) -> Any: ...


def _error(config: ModelConfig, message: str) -> Exception:
    from pipelines.config import ConfigError

    return ConfigError(f"model {config.name!r} ({config.source}): {message}")


def check_features_module(module: ModuleType, config: ModelConfig) -> ModuleType:
    where = getattr(module, "__file__", module.__name__)
    schema = getattr(module, "SCHEMA", None)
    if not isinstance(schema, RawSchema):
        raise _error(config, f"{where} must define SCHEMA = RawSchema(...) (got {type(schema).__name__})")
    label = getattr(module, "LABEL_KEY", None)
    if label != schema.label:
        raise _error(config, f"{where} must define LABEL_KEY = {schema.label!r}, the label of its SCHEMA "
                             f"(got {label!r})")
    if not callable(getattr(module, "transformed_name", None)):
        raise _error(config, f"{where} must define transformed_name(key: str) -> str")
    return module


def check_model_source(config: ModelConfig) -> None:
    """model.py exists and defines the contract's functions (read as source: no TensorFlow import)."""
    spec = _find_spec(f"{config.module}.model", config)
    if spec is None or not spec.origin:
        raise _error(config, f"{config.module}.model not found: a model needs model.py with "
                             + " and ".join(MODEL_FUNCTIONS))
    tree = ast.parse(open(spec.origin, encoding="utf-8").read(), spec.origin)
    defined = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
    defined |= {t.id for n in tree.body if isinstance(n, ast.Assign) for t in n.targets if isinstance(t, ast.Name)}
    defined |= {a.asname or a.name for n in tree.body if isinstance(n, ast.ImportFrom) for a in n.names}
    missing = [name for name in MODEL_FUNCTIONS if name not in defined]
    if missing:
        raise _error(config, f"{spec.origin} is missing " + "; ".join(f"{m}: define {MODEL_FUNCTIONS[m]}"
                                                                        for m in missing))
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == "build_model":
            args = node.args
            named = [a.arg for a in args.posonlyargs + args.args + args.kwonlyargs]
            if "learning_rate" not in named and args.kwarg is None or not (args.posonlyargs + args.args):
                raise _error(config, f"{spec.origin}:{node.lineno}: build_model({', '.join(named)}) must be "
                                     f"{MODEL_FUNCTIONS['build_model']}")


def _find_spec(name: str, config: ModelConfig):
    import importlib.util

    from pipelines.config import _import

    _import(config.module, config.source)  # the package itself (and its models folder on sys.path)
    return importlib.util.find_spec(name)


def _takes(function: Callable, positional: int, keywords: tuple[str, ...]) -> bool:
    try:
        signature = inspect.signature(function)
        signature.bind(*([None] * positional), **{k: None for k in keywords})
    except (TypeError, ValueError):
        return False
    return True


def check_model_module(module: ModuleType, config: ModelConfig) -> ModuleType:
    for name, contract in MODEL_FUNCTIONS.items():
        function = getattr(module, name, None)
        if not callable(function):
            raise _error(config, f"{module.__file__} must define {contract}")
    if not _takes(module.preprocessing_fn, 1, ()):
        raise _error(config, f"{module.__file__}: preprocessing_fn must take one argument, the dict of raw inputs")
    if not _takes(module.build_model, 1, ("learning_rate",)):
        raise _error(config, f"{module.__file__}: build_model must be {MODEL_FUNCTIONS['build_model']}")
    return module
