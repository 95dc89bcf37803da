"""The run directory: ``{artifact_root}/{model}/runs/{interval}/{step}/`` and its result files."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipelines.storage import read_json, write_json

STEPS = ("validate", "transform", "train", "evaluate", "publish")
# steps that reuse their own earlier output when the inputs are unchanged (lineage.cached_result);
# each takes --force
CACHED_STEPS = ("transform", "train", "evaluate")


class StepError(Exception):
    """An expected step failure (missing GPU, refused input): reported as one clear line, no traceback."""


@dataclass(frozen=True)
class Run:
    """Where one model's run for one data interval keeps its outputs."""

    artifact_root: Path
    model: str
    interval: dt.date

    @property
    def run_dir(self) -> Path:
        return Path(self.artifact_root) / self.model / "runs" / self.interval.isoformat()

    def step_dir(self, step: str) -> Path:
        if step not in STEPS:
            raise ValueError(f"unknown step {step!r}; steps are {', '.join(STEPS)}")
        return self.run_dir / step

    def result_path(self, step: str) -> Path:
        return self.step_dir(step) / "result.json"

    def read_result(self, step: str) -> dict[str, Any]:
        """The ``result.json`` of an earlier step; a clear error if that step has not completed."""
        path = self.result_path(step)
        if not path.is_file():
            raise FileNotFoundError(
                f"step {step!r} has no completed output for {self.model} interval {self.interval} "
                f"(expected {path}); run it first"
            )
        result = read_json(path)
        from pipelines.staging import active_mirror  # (staging imports this module)

        # a step whose data root is on S3 reads the S3 objects an earlier result names from its mirror
        return mirror.to_local(result) if (mirror := active_mirror()) is not None else result


OWNER = "owner.json"  # {artifact_root}/{model}/runs/{interval}/owner.json: the orchestrator run that owns it


def claim_interval(artifact_root: str, model: str, interval: dt.date, run_id: str) -> None:
    """The run ``run_id`` (its validate step) takes the interval's run directory: another run of the same
    interval that started before it stops at its next commit (``owner_problem``). The newest start wins."""
    from pipelines.objectstore import open_store

    claim = {"run_id": run_id, "claimed_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}
    open_store(artifact_root).put_bytes(json.dumps(claim).encode(), model, "runs", interval.isoformat(), OWNER)


def owner_problem(artifact_root: str, model: str, interval: dt.date, run_id: str) -> str | None:
    """Why the run ``run_id`` may not write the interval's run directory (another run claimed it since), or None.
    Two runs of one interval (a manual run beside a backfill's) would otherwise mix their outputs: one run's
    model evaluated, published and credited as the other's."""
    from pipelines.objectstore import open_store

    try:
        claim = open_store(artifact_root).read_json(model, "runs", interval.isoformat(), OWNER) or {}
    except ValueError:  # unreadable: nobody can tell who owns it
        claim = {"run_id": "(unreadable owner.json)"}
    owner = claim.get("run_id")
    if owner in (None, run_id):  # (none: written before runs claimed their interval, or by hand)
        return None
    return (f"run {owner} started interval {interval} of {model} after this run ({run_id}) and owns its run "
            f"directory since {claim.get('claimed_at', '?')}: this run stops here, so that the two never mix their "
            "outputs (nothing of this run is published). To run this one after all, clear its validate task")


def write_result(step_dir: Path, result: Any) -> Path:
    path = Path(step_dir) / "result.json"
    write_json(path, dataclasses.asdict(result) if dataclasses.is_dataclass(result) else result)
    return path
