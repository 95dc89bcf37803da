"""Task log files for the runs ``./dev demo`` makes with ``dag.test()``.

``dag.test()`` runs every task in this process and prints its log to the terminal; it writes no task log file,
so the Airflow UI (``./dev airflow``) showed nothing for a demo run's tasks. ``TaskLogCapture`` passes this
process's stdout and stderr through unchanged, files each task's lines (between dag.test's ``[DAG TEST]
starting task_id=...`` and ``[DAG TEST] end task task_id=...``) and, when the run ends, writes them where
Airflow's log reader looks for that task try (``FileTaskHandler``'s file name for it), as the JSON lines a
worker writes: timestamp, level, event, logger. A file a worker already wrote is left alone.
"""

from __future__ import annotations

import json
import os
import re
import sys
import threading
from pathlib import Path

START = re.compile(r"\[DAG TEST\] starting task_id=(\S+) map_index=(-?\d+)")
END = re.compile(r"\[DAG TEST\] end task task_id=(\S+) map_index=(-?\d+)")
# Airflow's console rendering: "<ISO time>Z [<level>   ] <event> [<logger>] key=value ..."
CONSOLE = re.compile(r"^(\d{4}-\d\d-\d\dT[\d:.]+Z) \[(\w+)\s*\] (.*?)(?:\s+\[([\w.]+)\])?(?:\s+(\w+=.*))?$")
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def structured(line: str) -> dict:
    """One console line as a log record the UI shows with its level (other lines: the event alone)."""
    line = ANSI.sub("", line).rstrip()
    match = CONSOLE.match(line)
    if not match:
        return {"event": line}
    timestamp, level, event, logger, _ = match.groups()
    record = {"timestamp": timestamp, "level": level.lower(), "event": event.rstrip()}
    if logger:
        record["logger"] = logger
    return record


class TaskLogCapture:
    """Tee this process's file descriptors 1 and 2 and keep each task's lines (see the module docstring)."""

    def __init__(self) -> None:
        self.attempts: dict[tuple[str, int], list[list[str]]] = {}
        self._current: tuple[str, int] | None = None
        self._lock = threading.Lock()
        self._saved: dict[int, int] = {}
        self._threads: list[threading.Thread] = []

    def __enter__(self) -> TaskLogCapture:
        sys.stdout.flush()
        sys.stderr.flush()
        for fd in (1, 2):
            self._saved[fd] = os.dup(fd)
            read, write = os.pipe()
            os.dup2(write, fd)
            os.close(write)
            thread = threading.Thread(target=self._pump, args=(read, self._saved[fd]), daemon=True,
                                      name=f"task-log-tee-{fd}")
            thread.start()
            self._threads.append(thread)
        return self

    def __exit__(self, *exc) -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        for fd, saved in self._saved.items():
            os.dup2(saved, fd)  # closes the pipe's last write end: its reader sees the end
        for thread in self._threads:
            thread.join(timeout=30)
        for saved in self._saved.values():
            os.close(saved)

    def _pump(self, read: int, out: int) -> None:
        buffer = b""
        with os.fdopen(read, "rb", buffering=0) as pipe:
            while chunk := pipe.read(65536):
                os.write(out, chunk)  # the terminal sees everything, as before
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    self.feed(line.decode(errors="replace"))
        if buffer:
            self.feed(buffer.decode(errors="replace"))

    def feed(self, line: str) -> None:
        """File one output line under the task that is running (lines outside tasks are not kept)."""
        with self._lock:
            if match := START.search(line):
                self._current = (match[1], int(match[2]))
                self.attempts.setdefault(self._current, []).append([])
            if self._current is not None:
                self.attempts[self._current][-1].append(line)
            if (match := END.search(line)) and self._current == (match[1], int(match[2])):
                self._current = None

    def write(self, dag_run) -> list[Path]:
        """Write the kept lines of ``dag_run``'s task tries where Airflow's log reader looks; the files written."""
        from airflow.configuration import conf
        from airflow.utils.log.file_task_handler import FileTaskHandler
        from airflow.utils.session import create_session

        base = Path(conf.get("logging", "base_log_folder"))
        handler = FileTaskHandler(base_log_folder=str(base))
        written = []
        with create_session() as session:
            for ti in dag_run.get_task_instances(session=session):
                attempts = self.attempts.get((ti.task_id, ti.map_index), [])
                if not attempts or not ti.try_number:
                    continue
                # one start per try (a retried task), else every start of the task belongs to its last try (a
                # deferred task resumes under the same try)
                tries = (list(range(1, ti.try_number + 1)) if len(attempts) == ti.try_number
                         else [ti.try_number] * len(attempts))
                lines: dict[int, list[str]] = {}
                for number, attempt in zip(tries, attempts, strict=True):
                    lines.setdefault(number, []).extend(attempt)
                for number, kept in lines.items():
                    path = base / handler._render_filename(ti, number, session=session)
                    if path.exists():
                        continue  # a worker wrote this try's log: it is the real one
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.write_text("".join(json.dumps(structured(line)) + "\n" for line in kept))
                    written.append(path)
        return written
