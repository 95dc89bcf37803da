"""Run one pipeline step with the argv a container would get."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from typing import Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowException, AirflowFailException

from pipelines.cli import step_argv
from skewfree.assets import emit_publication
from skewfree.links import STEP_LINKS
from skewfree.operators.child_log import relog
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
        self._process: subprocess.Popen | None = None
        self.operator_extra_links = STEP_LINKS.get(step, ())

    def argv(self, settings: Settings) -> list[str]:
        # templated flags render to "" when their trigger param is empty: drop those
        return step_argv(self.step, model=self.model, interval=self.interval, roots=settings.roots,
                         extra=tuple(arg for arg in self.extra_args if arg))

    def execute(self, context: Any) -> dict[str, Any]:
        settings = Settings.from_env()
        argv = self.argv(settings)
        # The container runs `python`; locally that is the interpreter running Airflow.
        command = [sys.executable, *argv[1:]]
        self.log.info("running %s", " ".join(command))
        # the step's lines reach the task log at the level the step logged them (child_log)
        self._process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                         encoding="utf-8", errors="backslashreplace", env=dict(os.environ),
                                         start_new_session=True, bufsize=1)
        last = ""
        level = None
        try:
            for line in self._process.stdout:
                line = line.rstrip("\n")
                if line.strip():
                    if last:  # one line behind: the last one may be the result
                        level = relog(last, self.log, level)
                    last = line
            exit_code = self._process.wait()
        except BaseException:
            self.on_kill()  # never leave the step running beside a retry
            raise
        if exit_code == 0 and last.startswith("{"):
            # the result JSON (kilobytes on one line) is the XCom; the step logged its summary already
            self.log.debug("%s", last)
            self.log.info("step %s done: its result (%d bytes of JSON) is this task's XCom return_value",
                          self.step, len(last))
        elif last:
            relog(last, self.log, level)
        if exit_code != 0:
            # the run note names the problem (skewfree.run_note): the step's one-line error, without its prefix
            if (ti := context.get("ti")) is not None:  # (a crash's last line is any line it logged)
                ti.xcom_push(key="error", value=last.removeprefix(f"error: {self.step}:").strip()[:600]
                             if last.startswith(f"error: {self.step}:") else f"it crashed (exit {exit_code})")
            if last.startswith(f"error: {self.step}:"):
                # an expected failure (bad data, a refused publish): retrying cannot help, so it fails at once
                raise AirflowFailException(f"step {self.step} failed (exit {exit_code}), not retried: {last}")
            # a crash, a kill, an OOM: infrastructure, retried (the step's outputs are committed atomically)
            raise AirflowException(f"step {self.step} failed (exit {exit_code}): {last}")
        try:
            payload = json.loads(last)
        except json.JSONDecodeError:
            raise AirflowException(f"step {self.step} printed no result on its last line: {last!r}") from None
        if self.step == "publish":
            emit_publication(context, payload["model"], payload)
        return payload

    def on_kill(self) -> None:
        if self._process is None or self._process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self._process.pid, signal.SIGTERM)  # the step's own SIGTERM handling restores state
        try:
            self._process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._process.pid, signal.SIGKILL)
            self._process.wait()
