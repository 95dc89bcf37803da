"""Run one pipeline step with the argv a container would get."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from typing import Any

from airflow.providers.standard.hooks.subprocess import SubprocessHook
from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowException, AirflowFailException

from pipelines.cli import step_argv
from skewfree.assets import emit_publication
from skewfree.settings import Settings


class PipelineStepOperator(BaseOperator):
    """Run ``python -m pipelines STEP`` for one model and data interval.

    In the ``local`` backend the step runs as a subprocess of the task with its
    output streamed into the task log. The step's ``result.json`` (printed as its
    last line) is returned as the task's XCom: paths, counts and metrics, no data.

    :param step: one of validate, transform, train, evaluate, publish.
    :param model: a registered model name or a path to its config.toml.
    :param interval: the data interval's date (templated).
    :param extra_args: further CLI flags for the step (templated).
    """

    template_fields: Sequence[str] = ("interval", "extra_args")
    ui_color = "#e8f1fb"

    def __init__(self, *, step: str, model: str, interval: str = "{{ data_interval_start | ds }}",
                 extra_args: Sequence[str] = (), **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.step = step
        self.model = model
        self.interval = interval
        self.extra_args = extra_args
        self._hook: SubprocessHook | None = None

    def argv(self, settings: Settings) -> list[str]:
        # templated flags render to "" when their trigger param is empty: drop those
        return step_argv(self.step, model=self.model, interval=self.interval, roots=settings.roots,
                         extra=tuple(arg for arg in self.extra_args if arg))

    def execute(self, context: Any) -> dict[str, Any]:
        settings = Settings.from_env()
        argv = self.argv(settings)
        # The container runs `python`; locally that is the interpreter running Airflow.
        command = [sys.executable, *argv[1:]]
        self._hook = SubprocessHook()
        result = self._hook.run_command(command, env=dict(os.environ), cwd=None)
        if result.exit_code != 0:
            if result.output.startswith(f"error: {self.step}:"):
                # an expected failure (bad data, a refused publish): retrying cannot help, so it fails at once
                raise AirflowFailException(f"step {self.step} failed (exit {result.exit_code}), not retried: "
                                           f"{result.output}")
            # a crash, a kill, an OOM: infrastructure, retried (the step's outputs are committed atomically)
            raise AirflowException(f"step {self.step} failed (exit {result.exit_code}): {result.output}")
        try:
            payload = json.loads(result.output)
        except json.JSONDecodeError:
            raise AirflowException(f"step {self.step} printed no result on its last line: {result.output!r}") from None
        if self.step == "publish":
            emit_publication(context, payload["model"], payload)
        return payload

    def on_kill(self) -> None:
        if self._hook is not None:
            self._hook.send_sigterm()
