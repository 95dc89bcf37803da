"""Digests for caching and lineage: what a step's output was computed from."""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import re
from pathlib import Path
from typing import Any

from pipelines.config import ModelConfig
from pipelines.runs import Run
from pipelines.storage import file_digest, read_json, write_json

log = logging.getLogger(__name__)
_PACKAGE = Path(__file__).parent


# the ML stack whose versions change what a step computes
STACK = ("tensorflow", "tf-keras", "tensorflow-transform", "apache-beam", "tfx-bsl", "pyarrow")


@functools.cache
def _files_digest(*roots: Path, skip: Path | None = None) -> str:
    """The Python files under ``roots`` (but ``skip``), by relative path and content."""
    h = hashlib.sha256()
    for root in roots:
        for path in sorted(p for p in root.rglob("*") if p.suffix == ".py" and p.is_file()):
            if skip is not None and skip in path.parents:
                continue
            h.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()


@functools.cache
def stack_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in STACK:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = "absent"
    return found


# config.toml's keys that change no step's output: evaluate's verdict (VERDICT_KEYS, in its own digest) and
# the operations' settings (when runs start, the owner, validate's drift limits, rollout, pods). Editing them
# reuses transform's and train's outputs, and leaves the code version a manifest records as it was.
VERDICT_KEYS = ("thresholds", "evaluation")
OPERATION_KEYS = ("schedule", "start_date", "owner", "validation", "rollout", "kubernetes")


def config_part(config: ModelConfig, keys: tuple[str, ...] | None = None) -> str:
    """A digest of the model config's settings (``keys``; default: those outputs depend on), as parsed TOML:
    a comment or a reformatted line changes nothing."""
    import tomllib

    raw = tomllib.loads(Path(config.source).read_text())
    kept = {k: v for k, v in raw.items() if (k in keys if keys is not None else
                                             k not in VERDICT_KEYS + OPERATION_KEYS)}
    return input_digest(config=kept)


def code_version(config: ModelConfig) -> str:
    """What a model's outputs were computed with: the shared pipeline code (not other models' folders),
    this model's own code, the settings of its config that outputs depend on (``config_part``) and the ML
    stack's versions. Editing one model's ``model.py`` leaves every other model's caches and lineage as they
    were; editing a threshold leaves this model's transform and train outputs too."""
    h = hashlib.sha256()
    h.update(transform_code(config).encode())
    h.update(b"config\0" + config_part(config).encode())
    h.update(json.dumps(stack_versions(), sort_keys=True).encode())
    return h.hexdigest()[:16]


def transform_code(config: ModelConfig) -> str:
    """The code a transform output was made with: the pipeline's and the model's Python (``preprocessing_fn`` and
    what it imports), not its config. Recorded by transform; a later step refuses an output of other code."""
    h = hashlib.sha256()
    h.update(_files_digest(_PACKAGE, skip=(_PACKAGE / "models")).encode())
    h.update(_files_digest(config.module_dir()).encode())
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


# TFT writes vocabularies under the transform's temp directory, and TensorFlow names each lookup table after its
# file: "hash_table_tf.Tensor(b'<temp dir>/tftransform_tmp/<vocabulary>', ...)". That directory is new each
# transform run (and on S3 roots, each local mirror), so two saves of one model differ in saved_model.pb by it.
_TFT_TEMP_PATH = re.compile(rb"b'[^']*/tftransform_tmp/")
_MODEL_DIGEST_SKIPS = {"fingerprint.pb"}  # a random uuid each save; its other fields are checksums of the rest


def model_digest(saved_model_dir: str | Path) -> str:
    """What a SavedModel computes, the same for two saves of the same model: publish's content digest, so that a
    re-run that trains the same model again publishes nothing new (and gets the version that holds it, with its
    ``rejected.json`` if it was rolled back from). Every file's path and bytes but ``fingerprint.pb``, with the
    transform's temp directory left out of lookup tables' names in ``saved_model.pb``."""
    root = Path(saved_model_dir)
    h = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        name = str(path.relative_to(root))
        if name in _MODEL_DIGEST_SKIPS:
            continue
        digest = (hashlib.sha256(_TFT_TEMP_PATH.sub(b"b'/tftransform_tmp/", path.read_bytes())).hexdigest()
                  if name == "saved_model.pb" else file_digest(path))
        h.update(name.encode() + b"\0" + digest.encode() + b"\n")
    return h.hexdigest()


def transform_files(config: ModelConfig, interval, validation: dict[str, Any]) -> dict[str, list[str]]:
    """The validated files transform reads, by split (the window's partitions, as validate listed them)."""
    train_dates, eval_dates = config.split_window(interval)
    return {split: [f for d in dates for f in validation["partitions"][d.isoformat()]]
            for split, dates in (("train", train_dates), ("eval", eval_dates))}


def transform_data(config: ModelConfig, interval, validation: dict[str, Any]) -> dict[str, list[str]]:
    """The digests of the validated files transform reads, by split: what its output was computed from."""
    return {split: [validation["file_digests"][f] for f in files]
            for split, files in transform_files(config, interval, validation).items()}


def chain_problem(config: ModelConfig, interval, run: Run, *, through: str) -> str | None:
    """Why this run's outputs up to ``through`` (``"train"``) are not one chain, or None: the transform output
    must be of the files validate passed last, and the train output of that transform output. A step that failed,
    or was not run again, after an earlier one changed leaves an output of other inputs (the model before), which
    evaluate would judge and publish ship as this run's. The transform output must also be of this code
    (``transform_code``): with ``model.py`` edited since, train would fit the new ``build_model`` behind the old
    TFT graph, and the manifest would record code that is not what serves. Config may differ: the settings
    outputs depend on are in every step's cache digest (``code_version``), and editing a threshold asks for
    no retraining (``config_part``)."""
    validation, transformed = run.read_result("validate"), run.read_result("transform")
    try:
        data = input_digest(data=transform_data(config, interval, validation))
    except KeyError as exc:
        data = f"unknown: validate has no {exc}"
    if transformed.get("data_digest") != data:
        return (f"the transform output of {config.name} {interval} is not of the files validate passed last "
                "(validate ran since, or the last transform failed): run transform again")
    if transformed.get("code", transform_code(config)) != transform_code(config):  # (older outputs: unrecorded)
        return (f"the transform output of {config.name} {interval} was made with other code: model.py (its "
                "preprocessing_fn), features.py or the pipeline changed since: run transform again")
    if through == "train" and run.read_result("train").get("transform_digest") != transformed["input_digest"]:
        return (f"the train output of {config.name} {interval} was not trained on this run's transform output "
                "(transform ran since, or the last train failed): run train again")
    return None


def step_inputs(config: ModelConfig) -> dict[str, Any]:
    return {"model": config.name, "code": code_version(config)}
