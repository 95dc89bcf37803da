"""Steps whose data or artifact root is on S3: pull inputs into the local mirror, push outputs back.

A step only ever works on local paths (TensorFlow 2.21 has no ``s3://`` file system). When a root
is an ``s3://`` URL the CLI runs the step on its mirror (``objectstore.Mirror``) and:

* before: pulls the ``result.json`` of each step it reads, then every S3 object those results
  name (data files, the transform graph, TFRecords, the SavedModel); its own ``result.json`` (the
  cache check); for ``train`` the checkpoints of a killed attempt; for ``validate`` the window's
  partitions;
* during ``train``: pushes the checkpoints after every epoch, so a new pod resumes a killed one;
* after success: pushes the step directory with ``result.json`` last (it is removed first, so a
  half-replaced output is never taken for a complete one) and deletes objects the new output no
  longer has. A failed step pushes nothing: the previous output on S3 stays as it was.

Results on S3 name S3 URLs; in the mirror they name local paths. The serving root is not
mirrored: publish writes it through ``objectstore.Store``.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipelines.objectstore import S3, Mirror, is_s3
from pipelines.runs import CACHED_STEPS, STEPS, Run
from pipelines.storage import read_json, write_json

log = logging.getLogger(__name__)

# the earlier steps whose outputs each step reads (through Run.read_result)
STEP_READS: dict[str, tuple[str, ...]] = {
    "validate": (),
    "transform": ("validate",),
    "train": ("validate", "transform"),
    "evaluate": ("validate", "transform", "train"),
    "publish": ("validate", "transform", "train", "evaluate"),
}
# results a step reads for what they say, not for the files they name: publish records validate's digests, and
# train, evaluate and publish check that the outputs are one chain (lineage.chain_problem)
NAMES_ONLY = {("publish", "validate"), ("publish", "transform"), ("evaluate", "validate"), ("train", "validate")}
MIRRORED_ROOTS = ("data", "artifact")
CHECKPOINTS = "train_checkpoints"


def _urls(value: Any) -> list[str]:
    found: list[str] = []
    if isinstance(value, str) and value.startswith(S3):
        found.append(value)
    elif isinstance(value, dict):
        for k, v in value.items():
            found += _urls(k) + _urls(v)
    elif isinstance(value, list):
        for v in value:
            found += _urls(v)
    return found


_active: Mirror | None = None


def active_mirror() -> Mirror | None:
    """The mirror the running step works on (None when its roots are local)."""
    return _active


class Staging:
    """The S3 side of one step invocation; every method is a no-op when no root is on S3.

    Each invocation gets its own empty mirror (under ``SKEWFREE_STAGING_DIR``, default the temp
    directory), removed by ``close()``: a local subprocess stages exactly as a fresh pod does, and
    two steps running at once never share files. Caching does not depend on where the mirror is:
    input digests are over file contents.
    """

    def __init__(self, roots: dict[str, str]):
        self.remote = {name: url.rstrip("/") for name, url in roots.items() if name in MIRRORED_ROOTS and is_s3(url)}
        self.mirror = None
        if self.remote:
            self._open()

    def _open(self) -> Mirror:
        global _active
        if self.mirror is None:
            parent = os.environ.get("SKEWFREE_STAGING_DIR") or None
            if parent:
                Path(parent).mkdir(parents=True, exist_ok=True)
            self._dir = Path(tempfile.mkdtemp(prefix="skewfree-step-", dir=parent))
            self.mirror = _active = Mirror(self._dir)
        return self.mirror

    def close(self) -> None:
        global _active
        if self.mirror is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            if _active is self.mirror:
                _active = None

    def local_roots(self, roots: dict[str, str]) -> dict[str, str]:
        """``roots`` with every S3 root replaced by its place in the mirror."""
        return {name: str(self.mirror.local(self.remote[name])) if name in self.remote else value
                for name, value in roots.items()}

    def describe(self, text: str) -> str:
        """A message with mirror paths written as the S3 URLs they stand for."""
        return text.replace(str(self.mirror.base) + "/", S3) if self.mirror else text

    # -- before the step ------------------------------------------------------
    def pull(self, step: str, config, *, interval, roots: dict[str, str], data_dir: str | None = None) -> None:
        """Fetch what ``step`` reads; ``roots`` are the local roots (``local_roots``)."""
        if self.mirror is None and step in STEPS and not is_s3(roots.get("artifact", "")):
            # a local artifact root whose results name S3 objects (validate ran on a data root on S3)
            run = Run(Path(roots["artifact"]), config.name, interval)
            if any(_urls(read_json(path)) for earlier in STEP_READS[step] if (step, earlier) not in NAMES_ONLY
                   and (path := run.result_path(earlier)).is_file()):
                self._open()
        if self.mirror is None:
            return
        if "data" in self.remote and step == "validate":
            from pipelines.validate import data_config

            windowed = data_config(config, roots["data"], data_dir)
            for day in windowed.window(interval):
                self.mirror.pull(self.mirror.url(windowed.partition_path(roots["data"], day)))
        if step not in STEPS:
            return
        run = Run(Path(roots["artifact"]), config.name, interval)
        for earlier in STEP_READS[step]:
            # an S3 artifact root: the result from S3, stored in the mirror in local form. A local one (the data
            # on S3): the result as committed, naming S3 URLs, which Run.read_result maps into the mirror
            result = self._pull_result(run, earlier) if "artifact" in self.remote else \
                read_json(path) if (path := run.result_path(earlier)).is_file() else None
            if result is not None and (step, earlier) not in NAMES_ONLY:
                # every object it names, wherever it is (transform reads the data files validate listed)
                for url in dict.fromkeys(_urls(result)):
                    # a file pattern (train/part-*.tfrecord) is pulled as its directory
                    self.mirror.pull(url.rsplit("/", 1)[0] if any(c in url for c in "*?[") else url)
        if "artifact" not in self.remote:
            return
        if step in CACHED_STEPS:
            self._pull_result(run, step)
        if step == "train":
            self.mirror.pull(self.mirror.url(run.run_dir / CHECKPOINTS))

    def _pull_result(self, run: Run, step: str) -> dict | None:
        """The S3 result.json of ``step`` (URL form), stored locally in local-path form; None if absent."""
        local = run.result_path(step)
        self.mirror.pull(self.mirror.url(local))
        if not local.is_file():
            return None
        result = read_json(local)
        write_json(local, self.mirror.to_local(result))
        return result

    # -- after the step -------------------------------------------------------
    def push(self, step: str, config, result: Any, *, interval=None, roots: dict[str, str]) -> Any:
        """Upload the step's outputs; returns the result as JSON with S3 URLs for mirrored paths."""
        payload = dataclasses.asdict(result) if dataclasses.is_dataclass(result) else result
        if self.mirror is None:
            return payload
        if step == "generate-data" and "data" in self.remote:
            for partition in payload["partitions"]:
                self.mirror.push(Path(partition))
        if not payload.get("chief", True):
            log.info("not the chief worker: %s output is the chief's to push", step)
            return payload
        if step in STEPS:
            run = Run(Path(roots["artifact"]), config.name, interval)
            out = run.step_dir(step)
            # the output's own JSON files name S3 URLs, as results do, wherever the artifact root is: the mirror's
            # paths are gone once the step ends (a local artifact root beside a data root on S3 kept them)
            for path in out.glob("*.json"):
                data = read_json(path)
                if _has_mirror_paths(data, self.mirror):
                    write_json(path, self.mirror.to_urls(data))
        if "artifact" in self.remote and step in STEPS:
            if payload.get("cached"):
                # a reused output: only its result.json changed, and the rest is not in the mirror
                self.mirror.push_file(run.result_path(step))
            else:
                url = self.mirror.push(out, last="result.json", prune=True)
                log.info("pushed %s output to %s", step, url)
            if step == "train":
                self.mirror.delete(self.mirror.url(run.run_dir / CHECKPOINTS))
        return self.mirror.to_urls(payload)


def _has_mirror_paths(data: Any, mirror: Mirror) -> bool:
    return mirror.to_urls(data) != data


CHECKPOINT_STATE = "chief/checkpoint"  # BackupAndRestore: {backup_dir}/chief/checkpoint


def checkpoint_sync(directory: Path) -> Callable[[], None] | None:
    """For a checkpoint directory in the mirror: a function that pushes it (after each epoch)."""
    mirror = active_mirror()
    if mirror is None or mirror.url(directory) is None:
        return None

    def sync() -> None:
        # tf.train.CheckpointManager's state file goes last and old checkpoints are pruned after it:
        # a pod killed mid-upload leaves the previous epoch's checkpoint complete and named.
        if Path(directory).is_dir():
            mirror.push(Path(directory), last=CHECKPOINT_STATE, retract_last=False, prune=True)

    return sync
