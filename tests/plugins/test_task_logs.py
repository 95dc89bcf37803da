"""The demo's dag.test() runs get task log files: each task's lines, filed by task and try, as structured records
with their levels (what Airflow's log reader shows); everything still reaches the terminal."""

from __future__ import annotations

import os
import subprocess
import sys

from skewfree.task_logs import TaskLogCapture, structured
from tests.conftest import ROOT


def test_console_lines_become_records_with_level_and_logger():
    line = ("\x1b[2m2026-12-07T00:48:26.592557Z\x1b[0m [\x1b[33mwarning  \x1b[0m] pipelines.validate: 3 rows have no "
            "fare   [airflow.task.operators.skewfree.operators.step.PipelineStepOperator] loc=child_log.py:39")
    assert structured(line) == {"timestamp": "2026-12-07T00:48:26.592557Z", "level": "warning",
                                "event": "pipelines.validate: 3 rows have no fare",
                                "logger": "airflow.task.operators.skewfree.operators.step.PipelineStepOperator"}
    assert structured("Traceback (most recent call last):") == {"event": "Traceback (most recent call last):"}


def test_lines_are_filed_by_task_and_start():
    capture = TaskLogCapture()
    for line in ("before any task", "x [DAG TEST] starting task_id=train map_index=-1", "epoch 1",
                 "x [DAG TEST] end task task_id=train map_index=-1", "between tasks",
                 "x [DAG TEST] starting task_id=train map_index=-1", "epoch 1 again",
                 "x [DAG TEST] end task task_id=train map_index=-1",
                 "x [DAG TEST] starting task_id=score map_index=3", "row 3"):
        capture.feed(line)
    train = capture.attempts[("train", -1)]
    assert [len(a) for a in train] == [3, 3] and train[1][1] == "epoch 1 again"
    assert capture.attempts[("score", 3)] == [["x [DAG TEST] starting task_id=score map_index=3", "row 3"]]
    assert all("between tasks" not in line for attempt in train for line in attempt)


def test_the_terminal_still_sees_everything(tmp_path):
    """File descriptors 1 and 2 are teed, so output from anything in the process (and C code) is shown as before
    and a task's stdout lines (where Airflow logs) are kept, in order."""
    script = """
import os, sys
from skewfree.task_logs import TaskLogCapture
with TaskLogCapture() as capture:
    print("[DAG TEST] starting task_id=a map_index=-1", flush=True)
    os.write(1, b"raw stdout line from C\\n")
    os.write(2, b"raw stderr line\\n")
    print("[DAG TEST] end task task_id=a map_index=-1", flush=True)
# stdout and stderr are read by one thread each: a stderr line may be filed before or after a stdout line
attempt = capture.attempts[("a", -1)][0]
print("after", [line for line in attempt if line.startswith("raw")] in (
    ["raw stdout line from C", "raw stderr line"], ["raw stderr line", "raw stdout line from C"],
    ["raw stdout line from C"]))
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                         env=os.environ | {"PYTHONPATH": f"{ROOT / 'plugins'}{os.pathsep}{ROOT}"})
    assert out.returncode == 0, out.stderr
    assert out.stderr == "raw stderr line\n"
    assert out.stdout.splitlines() == ["[DAG TEST] starting task_id=a map_index=-1", "raw stdout line from C",
                                       "[DAG TEST] end task task_id=a map_index=-1", "after True"]
