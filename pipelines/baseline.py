"""The baseline an evaluation compares with: the version that serves as ``stable``.

Resolved from the model server's config file (``--stable-version``: its ``stable`` label as the caller read
it, for a pod that cannot read the file; else ``--model-server-config``, TF Serving's ``--model_config_file``),
else ``{serving_root}/models.config``; with no ``stable`` label in either,
the newest complete version under the serving root; none on a model's first run. The baseline is
scored through its own serving signature on the candidate's raw eval rows, so both are judged on
exactly the same requests.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipelines.objectstore import LocalStore, Mirror, open_store
from pipelines.publish import MANIFEST, MODEL_CONFIG
from pipelines.runs import StepError
from pipelines.serving.models import labels_in

log = logging.getLogger(__name__)



@dataclass(frozen=True)
class Baseline:
    version: int
    how: str  # where it was resolved from, for the log and the report
    content_digest: str | None  # the published version's digest (part of evaluate's cache key)
    classes: list[str] | None  # a multi-class baseline's class names in its score order, if recorded
    interval: str | None = None  # the data interval it was trained for


def resolve_baseline(model: str, serving_root: str, server_config: str | None = None,
                     stable_version: int | None = None) -> Baseline | None:
    store = open_store(serving_root)
    complete = store.complete_versions(model)
    if not complete:
        return None
    stable, where = (stable_version, "the model server's config file (--stable-version)") \
        if stable_version is not None else _stable_label(store, model, server_config)
    if stable is not None and stable not in complete:  # comparing with another version would judge against
        # something that does not serve (after a rollback: the rejected version)
        raise StepError(f"the 'stable' label in {where} names {model} version {stable}, which is not a complete "
                        f"version under {store.url(model)} ({store.version_problem(model, str(stable))}): evaluate "
                        "compares a candidate with the version that serves. Restore it, or label a complete version "
                        "stable (a rollback), then run evaluate again")
    if stable is not None:
        version, how = stable, f"label 'stable' in {where}"
    else:
        version, how = max(complete), f"the newest complete version under {store.url(model)} (no 'stable' label)"
    manifest: dict[str, Any] = store.read_json(model, str(version), MANIFEST) or {}
    return Baseline(version=version, how=how, content_digest=manifest.get("content_digest"),
                    classes=manifest.get("classes"), interval=manifest.get("interval"))


def _stable_label(store, model: str, server_config: str | None) -> tuple[int | None, str | None]:
    """The ``stable`` label of ``model`` in the server's config file, else in ``{serving_root}/models.config``."""
    if server_config and Path(server_config).is_file():
        stable = labels_in(Path(server_config).read_text(), model, server_config).get("stable")
        if stable is not None:
            return stable, server_config
    raw = store.read_bytes(MODEL_CONFIG)
    if raw is not None and (stable := labels_in(raw.decode(), model, store.url(MODEL_CONFIG)).get("stable")) is not None:
        return stable, store.url(MODEL_CONFIG)
    return None, None


@contextlib.contextmanager
def local_copy(serving_root: str, model: str, version: int) -> Iterator[Path]:
    """The baseline SavedModel as a local directory (downloaded when the serving root is on S3)."""
    store = open_store(serving_root)
    if isinstance(store, LocalStore):
        yield store.path(model, str(version))
        return
    with tempfile.TemporaryDirectory(prefix="skewfree-baseline-") as tmp:
        yield Mirror(tmp).pull(store.url(model, str(version)))


def in_candidate_order(scores: np.ndarray, class_ids: np.ndarray, names: np.ndarray, baseline_classes: list[str] | None,
                       candidate_classes: list[str]) -> np.ndarray:
    """A multi-class baseline's scores with columns in the candidate's class order (vocabularies ordered by
    frequency may differ between versions). Fails when a candidate class has no baseline column."""
    if baseline_classes is None:  # read the order off the served outputs: class_ids[i] names names[i]
        seen = {int(i): n.decode() if isinstance(n, bytes) else str(n) for i, n in zip(class_ids, names, strict=True)}
        if len(seen) < scores.shape[1]:
            raise ValueError(f"cannot tell the baseline's class order: its predictions name only {sorted(seen.values())}")
        baseline_classes = [seen[i] for i in range(scores.shape[1])]
    missing = [c for c in candidate_classes if c not in baseline_classes]
    if missing:
        raise ValueError(f"the baseline has no class {missing} (its classes: {baseline_classes})")
    return scores[:, [baseline_classes.index(c) for c in candidate_classes]]
