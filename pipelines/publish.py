"""publish: copy a blessed SavedModel to ``{serving_root}/{model}/{version}/`` atomically.

Versions are integers ``YYYYMMDDnn``: the data interval's date and a sequence
number, so a model trained on newer data always has a higher version and no
version is ever reused. The copy is built in a non-numeric temporary directory
(TF Serving ignores those) and renamed into place; an existing version is never
overwritten. Re-publishing the same content for the same interval is a no-op.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

from pipelines.config import ModelConfig
from pipelines.lineage import code_version
from pipelines.runs import Run, write_result
from pipelines.serving.models import version_labels
from pipelines.storage import read_json, staged_dir, tree_digest, write_json

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
CANARY = "canary.json"
MAX_VERSIONS_PER_DAY = 100


class NotBlessedError(ValueError):
    """The evaluation gate did not bless this model."""


@dataclass
class PublishResult:
    model: str
    interval: str
    version: int
    path: str
    content_digest: str
    reused: bool


def existing_versions(model_base: Path) -> list[int]:
    """Integer-named version directories, as TF Serving sees them."""
    if not model_base.is_dir():
        return []
    return sorted(int(p.name) for p in model_base.iterdir() if p.is_dir() and p.name.isdigit())


def day_versions(interval: dt.date) -> range:
    first = int(interval.strftime("%Y%m%d")) * MAX_VERSIONS_PER_DAY
    return range(first, first + MAX_VERSIONS_PER_DAY)


def publish(config: ModelConfig, *, interval: dt.date, artifact_root: Path, serving_root: Path,
            run_id: str = "", image: str = "local") -> PublishResult:
    run = Run(artifact_root, config.name, interval)
    evaluation = run.read_result("evaluate")
    trained = run.read_result("train")
    validation = run.read_result("validate")
    if not evaluation["blessed"]:
        raise NotBlessedError(
            f"{config.name} for interval {interval} was not blessed, refusing to publish: "
            + "; ".join(evaluation["reasons"])
        )
    source = Path(evaluation["saved_model"])
    if not (source / "saved_model.pb").is_file():
        raise FileNotFoundError(f"no SavedModel at {source}")
    digest = tree_digest(source)
    model_base = Path(serving_root) / config.name
    model_base.mkdir(parents=True, exist_ok=True)

    same_day = [v for v in existing_versions(model_base) if v in day_versions(interval)]
    for version in same_day:
        manifest = model_base / str(version) / MANIFEST
        if manifest.is_file() and read_json(manifest).get("content_digest") == digest:
            log.info("version %d already holds this model (digest %s); nothing to publish", version, digest[:12])
            return _finish(run, config, interval, version, model_base, digest, reused=True)

    version = (max(same_day) + 1) if same_day else day_versions(interval).start
    if version not in day_versions(interval):
        raise ValueError(f"{config.name} already has {MAX_VERSIONS_PER_DAY} versions for {interval}")
    tmp = model_base / f".publishing-{version}-{uuid.uuid4().hex[:8]}"
    try:
        shutil.copytree(source, tmp)
        # real eval rows and their offline predictions travel with the version: any rollout or
        # rollback to it can canary-check it, even after its run directory is gone
        shutil.copy(evaluation["canary"], tmp / CANARY)
        write_json(tmp / MANIFEST, {
            "model": config.name,
            "version": version,
            "interval": interval.isoformat(),
            "content_digest": digest,
            "input_digests": validation["file_digests"],
            "code_version": code_version(config.source),
            "image": image,
            "params": trained["params"],
            "metrics": evaluation["metrics"],
            "baseline_version": version_labels(Path(serving_root) / "models.config", config.name).get("stable"),
            "run_id": run_id,
            "published_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "source": str(source),
        })
        # rename() onto an existing non-empty directory fails: a version is never overwritten
        os.rename(tmp, model_base / str(version))
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("published %s version %d", config.name, version)
    return _finish(run, config, interval, version, model_base, digest, reused=False)


def _finish(run: Run, config: ModelConfig, interval: dt.date, version: int, model_base: Path, digest: str,
            *, reused: bool) -> PublishResult:
    result = PublishResult(
        model=config.name,
        interval=interval.isoformat(),
        version=version,
        path=str(model_base / str(version)),
        content_digest=digest,
        reused=reused,
    )
    with staged_dir(run.step_dir("publish")) as out:
        write_result(out, result)
    return result


def list_versions(serving_root: Path, model: str) -> list[dict]:
    """Every published version with its lineage, newest first, and the labels pointing at it."""
    base = Path(serving_root) / model
    labels = version_labels(Path(serving_root) / "models.config", model)
    rows = []
    for version in sorted(existing_versions(base), reverse=True):
        manifest_path = base / str(version) / MANIFEST
        manifest = read_json(manifest_path) if manifest_path.is_file() else {}
        rows.append({
            "version": version,
            "labels": ",".join(sorted(k for k, v in labels.items() if v == version)),
            "interval": manifest.get("interval", "?"),
            "auc": manifest.get("metrics", {}).get("auc"),
            "code": manifest.get("code_version", "?"),
            "image": manifest.get("image", "?"),
            "params": manifest.get("params", {}),
            "baseline": manifest.get("baseline_version"),
            "run_id": manifest.get("run_id", ""),
            "inputs": len(manifest.get("input_digests", {})),
        })
    return rows
