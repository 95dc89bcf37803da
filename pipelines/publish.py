"""publish: copy a blessed SavedModel to ``{serving_root}/{model}/{version}/``, never half-written.

Versions are integers ``YYYYMMDDnn``: the data interval's date and a sequence
number, so a model trained on newer data always has a higher version and no
version is ever reused. On a local serving root the copy is built in a
non-numeric hidden directory (TF Serving ignores those) and renamed into place;
on S3 every object is written only if absent and ``saved_model.pb`` goes last, so
a version is loadable only once it is complete. An existing version is never
overwritten. Re-publishing the same content for the same interval is a no-op.
"""

from __future__ import annotations

import datetime as dt
import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from pipelines.config import ModelConfig
from pipelines.lineage import chain_problem, code_version, model_digest, model_fingerprint
from pipelines.objectstore import MANIFEST, SAVED_MODEL, VERSION_ORDER, Store, manifest_files, open_store
from pipelines.runs import Run, write_result
from pipelines.serving.models import labels_in
from pipelines.staging import active_mirror
from pipelines.storage import check_commit, read_json, staged_dir, write_json

log = logging.getLogger(__name__)

CANARY = "canary.json"
REPORT = "report.html"
MODEL_CONFIG = "models.config"  # TF Serving's model config file, in its default place under the serving root
MAX_VERSIONS_PER_DAY = 100
PUBLISH_ATTEMPTS = 5  # numbers tried when concurrent publishes of one model and day take them first


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


def day_versions(interval: dt.date) -> range:
    first = int(interval.strftime("%Y%m%d")) * MAX_VERSIONS_PER_DAY
    return range(first, first + MAX_VERSIONS_PER_DAY)


def next_version(day: range, complete: list[int], taken: list[int]) -> int | None:
    """The day's next number: above every complete version of the day, on no existing directory (a partial
    one is never overwritten, and never makes the day look full)."""
    floor = max(complete, default=day.start - 1)
    return next((v for v in day if v > floor and v not in set(taken)), None)


def baseline_version(store: Store, model: str) -> int | None:
    """The version the ``stable`` label points at in ``{serving_root}/models.config``, if any."""
    text = store.read_bytes(MODEL_CONFIG)
    return labels_in(None if text is None else text.decode(), model, store.url(MODEL_CONFIG)).get("stable")


def publish(config: ModelConfig, *, interval: dt.date, artifact_root: Path, serving_root: str,
            run_id: str = "", image: str = "local") -> PublishResult:
    run = Run(artifact_root, config.name, interval)
    evaluation = run.read_result("evaluate")
    trained = run.read_result("train")
    validation = run.read_result("validate")
    if (problem := chain_problem(config, interval, run, through="train")) is not None:
        # the blessing and the model are from before (a step failed since): their lineage would be this run's
        raise NotBlessedError(f"{problem}, then evaluate, before publishing")
    if not evaluation["blessed"]:
        raise NotBlessedError(
            f"{config.name} for interval {interval} was not blessed, refusing to publish: "
            + "; ".join(evaluation["reasons"])
        )
    source = Path(evaluation["saved_model"])
    if not (source / SAVED_MODEL).is_file():
        raise FileNotFoundError(f"no SavedModel at {source}")
    judged, found = evaluation.get("model_fingerprint"), model_fingerprint(source)
    if judged is None or found != judged:
        raise NotBlessedError(
            f"{config.name} for interval {interval}: the SavedModel at {source} (fingerprint {str(found)[:12]}) is not "
            f"the one evaluate blessed (fingerprint {str(judged)[:12]}); it was retrained or replaced after "
            "evaluate. Run evaluate again before publishing")
    digest = model_digest(source)
    store = open_store(serving_root)

    day = day_versions(interval)
    # a held version is reused when it ships the rows a rollout checks, or as many as evaluate has (a small eval
    # split: no version could ship more, and each re-run would publish another copy)
    wanted = min(config.rollout.canary_rows, len(read_json(Path(evaluation["canary"]))))
    if (held := _holding(store, config.name, day, digest, wanted)[1]) is not None:  # before copying anything
        return _finish(run, config, interval, held, store, digest, reused=True)
    with tempfile.TemporaryDirectory(prefix="skewfree-publish-") as tmp:
        build = Path(tmp) / "version"
        shutil.copytree(source, build)
        # real eval rows and their offline predictions travel with the version: any rollout or
        # rollback to it can canary-check it, even after its run directory is gone
        shutil.copy(evaluation["canary"], build / CANARY)
        if evaluation.get("report") and Path(evaluation["report"]).is_file():  # the evidence travels with it
            shutil.copy(evaluation["report"], build / REPORT)
        files = manifest_files(build)
        lost: list[int] = []  # numbers another writer took first (a file there is no version directory)
        for _attempt in range(PUBLISH_ATTEMPTS):
            complete, held = _holding(store, config.name, day, digest, wanted)  # again: a rival may have published it
            if held is not None:
                return _finish(run, config, interval, held, store, digest, reused=True)
            version = next_version(day, complete, taken=[*store.version_dirs(config.name), *lost])
            if version is None:
                raise ValueError(f"{config.name} has no version number left for {interval}: {len(complete)} complete "
                                 f"version(s) of that day, the highest {max(complete, default='none')}, and "
                                 f"directories up to {day[-1]} are taken (partial ones: "
                                 f"{sorted(v for v in store.partial_versions(config.name) if v in day)})")
            write_json(build / MANIFEST, _manifest(config, interval, version, files, digest, store, run_id, image,
                                                   evaluation, trained, validation, source))
            try:
                # renamed into place locally; on S3 saved_model.pb then the manifest go last; an existing
                # version (even a partial one) is never overwritten (FileExistsError)
                check_commit()  # a run that lost its interval to another run publishes nothing
                store.put_dir(build, config.name, str(version), last=VERSION_ORDER)
                break
            except FileExistsError:
                lost.append(version)
                log.warning("version %d of %s was taken by another publish meanwhile; looking again", version,
                            config.name)
        else:
            raise RuntimeError(f"{config.name}: {PUBLISH_ATTEMPTS} version numbers for {interval} were each taken "
                               "by another publish while this one wrote; nothing was overwritten. Retry the task")
    log.info("published %s version %d to %s", config.name, version, store.url(config.name, str(version)))
    return _finish(run, config, interval, version, store, digest, reused=False)


def _holding(store: Store, model: str, day: range, digest: str, canary_rows: int) -> tuple[list[int], int | None]:
    """The day's complete versions, and the one among them that already holds this model (its digest) with at
    least ``canary_rows`` canary rows (what a rollout to it checks, or all evaluate has). A version of the same
    model that ships fewer (published before [rollout] canary_rows grew) is not reused: a rollout would refuse it."""
    complete = [v for v in store.complete_versions(model) if v in day]  # partial ones are logged
    for version in complete:
        manifest = store.read_json(model, str(version), MANIFEST)
        if manifest is None or manifest.get("content_digest") != digest:
            continue
        try:
            rows = store.read_json(model, str(version), CANARY)
        except ValueError:  # unreadable JSON: not a version to roll out to either
            rows = None
        if not isinstance(rows, list) or len(rows) < canary_rows:
            log.info("version %d holds this model but ships %s canary rows, fewer than [rollout] canary_rows = %d: "
                     "publishing it again under a new number, with evaluate's rows", version,
                     len(rows) if isinstance(rows, list) else "no readable", canary_rows)
            continue
        log.info("version %d already holds this model (digest %s); nothing to publish", version, digest[:12])
        return complete, version
    return complete, None


def _manifest(config: ModelConfig, interval: dt.date, version: int, files: dict, digest: str, store: Store,
              run_id: str, image: str, evaluation: dict, trained: dict, validation: dict, source: Path) -> dict:
    manifest = {
        "model": config.name,
        "version": version,
        "interval": interval.isoformat(),
        "content_digest": digest,
        "input_digests": validation["file_digests"],
        # drift-like data anomalies this run accepted (trigger param accept_anomalies)
        "accepted_anomalies": validation.get("accepted", []),
        "code_version": code_version(config),
        "image": image,
        "params": trained["params"],
        "metrics": evaluation["metrics"],
        "classes": evaluation.get("classes"),
        "model_fingerprint": evaluation.get("model_fingerprint"),
        "evaluated_against": evaluation.get("baseline", {}),
        "baseline_version": baseline_version(store, config.name),
        "run_id": run_id,
        "published_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "source": str(source),
    }
    # with roots on S3 the step ran on a local mirror: lineage names the S3 objects, not the copies
    manifest = mirror.to_urls(manifest) if (mirror := active_mirror()) else manifest
    manifest["files"] = files  # what makes the version complete (Store.version_problem)
    return manifest


def _finish(run: Run, config: ModelConfig, interval: dt.date, version: int, store: Store, digest: str,
            *, reused: bool) -> PublishResult:
    result = PublishResult(
        model=config.name,
        interval=interval.isoformat(),
        version=version,
        path=store.url(config.name, str(version)),
        content_digest=digest,
        reused=reused,
    )
    with staged_dir(run.step_dir("publish")) as out:
        write_result(out, result)
    return result


def list_versions(serving_root: str, model: str, store: Store | None = None) -> list[dict]:
    """Every published version with its lineage, newest first, and the labels pointing at it (``store``: the
    serving root opened another way, e.g. through Airflow's S3 hook)."""
    store = store or open_store(serving_root)
    text = store.read_bytes(MODEL_CONFIG)
    labels = labels_in(None if text is None else text.decode(), model, store.url(MODEL_CONFIG))
    rows = []
    partial = store.partial_versions(model)
    for version in sorted(store.version_dirs(model), reverse=True):
        manifest = store.read_json(model, str(version), MANIFEST) or {}
        rows.append({
            "version": version,
            "labels": ",".join(sorted(k for k, v in labels.items() if v == version)),
            "interval": manifest.get("interval", "?"),
            "auc": manifest.get("metrics", {}).get("auc"),
            "metrics": manifest.get("metrics", {}),
            "code": manifest.get("code_version", "?"),
            "image": manifest.get("image", "?"),
            "params": manifest.get("params", {}),
            "baseline": manifest.get("baseline_version"),
            "run_id": manifest.get("run_id", ""),
            "inputs": len(manifest.get("input_digests", {})),
            "rejected": store.read_json(model, str(version), "rejected.json") is not None,
            "partial": partial.get(version),  # why it is not a complete version (None: complete)
            # what it was made from (the manifest without its file list and metrics)
            "lineage": {k: v for k, v in manifest.items() if k not in ("files", "metrics")},
        })
    return rows
