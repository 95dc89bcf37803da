"""Digests for caching and lineage: what a step's output was computed from."""

from __future__ import annotations

import functools
import hashlib
import json
import logging
from pathlib import Path
from typing import Any

from pipelines.config import ModelConfig
from pipelines.runs import Run
from pipelines.storage import read_json, write_json

log = logging.getLogger(__name__)
_PACKAGE = Path(__file__).parent


@functools.cache
def code_version(config_source: Path | None = None) -> str:
    """Digest of the pipelines code (every .py file) and, if given, the model's config file."""
    h = hashlib.sha256()
    for path in sorted(_PACKAGE.rglob("*.py")):
        h.update(str(path.relative_to(_PACKAGE)).encode() + b"\0" + path.read_bytes() + b"\0")
    if config_source is not None:
        h.update(b"config\0" + Path(config_source).read_bytes())
    return h.hexdigest()[:16]


def input_digest(**parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def cached_result(run: Run, step: str, digest: str, *, force: bool) -> dict[str, Any] | None:
    """The step's completed result if it was computed from the same inputs (and not forced)."""
    path = run.result_path(step)
    if force or not path.is_file():
        return None
    result = read_json(path)
    if result.get("input_digest") != digest:
        return None
    result["cached"] = True
    write_json(path, result)  # the result file says this run reused it
    log.info("cache hit: %s for %s %s reused (input digest %s); pass --force to recompute",
             step, run.model, run.interval, digest[:12])
    return result


def model_fingerprint(saved_model_dir: str | Path) -> str | None:
    """Digest of the SavedModel's fingerprint.pb (checksums of its graph and variables, written by
    tf.saved_model.save): a retrained model differs even when its inputs and params did not."""
    path = Path(saved_model_dir) / "fingerprint.pb"
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None


def step_inputs(config: ModelConfig) -> dict[str, Any]:
    return {"model": config.name, "code": code_version(config.source)}
