"""Deployment settings on the Airflow side, read when a task runs (never at DAG parse time)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

BACKENDS = ("local",)


@dataclass(frozen=True)
class Settings:
    """Where steps run and which roots they use.

    :param backend: ``local`` runs each step as a subprocess of the task.
    :param data_root: raw partitions.
    :param artifact_root: run directories.
    :param serving_root: the TF Serving model base paths.
    """

    backend: str
    data_root: str
    artifact_root: str
    serving_root: str

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        home = Path(env.get("SKEWFREE_HOME", Path.cwd() / ".work"))
        settings = cls(
            backend=env.get("SKEWFREE_BACKEND", "local"),
            data_root=env.get("SKEWFREE_DATA_ROOT", str(home / "data")),
            artifact_root=env.get("SKEWFREE_ARTIFACT_ROOT", str(home / "artifacts")),
            serving_root=env.get("SKEWFREE_SERVING_ROOT", str(home / "serving")),
        )
        if settings.backend not in BACKENDS:
            raise ValueError(f"SKEWFREE_BACKEND={settings.backend!r} is not one of {', '.join(BACKENDS)}")
        return settings

    @property
    def roots(self) -> dict[str, str]:
        return {"data": self.data_root, "artifact": self.artifact_root, "serving": self.serving_root}
