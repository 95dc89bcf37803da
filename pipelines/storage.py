"""Local artifact storage: atomic files and directories, JSON results, partition reading.

Every write goes to a temporary sibling first and is renamed into place, so a
reader never sees half an output and a failed step leaves the previous one intact.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import math
import os
import re
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipelines.schema import RawSchema

if TYPE_CHECKING:  # pyarrow only where partitions are read or written, never at DAG parse
    import pyarrow as pa


def atomic_write_bytes(path: Path, payload: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    tmp.write_bytes(payload)
    os.replace(tmp, path)


def jsonable(value: Any) -> Any:
    """``value`` with NaN and infinities as ``null``: strict JSON, which Airflow's XCom (and every other JSON
    reader) accepts. A gate that met NaN says so in its reasons; the number itself is just missing."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value


def write_json(path: Path, data: Any) -> None:
    atomic_write_bytes(path, (json.dumps(jsonable(data), indent=2, sort_keys=True, default=str) + "\n").encode())


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text())


_commit_guard = None  # set while a step runs for an orchestrator run (cli: runs.owner_problem)


@contextlib.contextmanager
def commit_guard(check) -> Iterator[None]:
    """While the block runs, ``check()`` is called before every output is committed (``staged_dir``, a publish's
    copy, an S3 push) and may raise to refuse the commit."""
    global _commit_guard
    previous, _commit_guard = _commit_guard, check
    try:
        yield
    finally:
        _commit_guard = previous


def check_commit() -> None:
    if _commit_guard is not None:
        _commit_guard()


@contextlib.contextmanager
def staged_dir(final: Path) -> Iterator[Path]:
    """Build a directory beside ``final`` and swap it in only if the block succeeds and the commit guard
    (``commit_guard``) allows it.

    On failure the temporary directory is removed and ``final`` (a previous good
    output) is left as it was.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.tmp-{uuid.uuid4().hex[:8]}")
    tmp.mkdir()
    try:
        yield tmp
        check_commit()
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if final.exists():
        old = final.with_name(f".{final.name}.old-{uuid.uuid4().hex[:8]}")
        os.rename(final, old)
    os.rename(tmp, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


LEFTOVER = re.compile(r"^\.(?:.+\.(?:tmp|old)|publishing-.+)-[0-9a-f]{8}$")  # staged_dir, atomic writes, put_dir
LEFTOVER_AGE_SECONDS = 24 * 3600  # longer than any step may run (train's deadline is 4 h): never a live writer's


def sweep_leftovers(directory: Path, *, min_age_seconds: float | None = None) -> list[Path]:
    """Remove the hidden temporaries a killed process left directly in ``directory`` (``.x.tmp-1a2b3c4d``,
    ``.x.old-...``, ``.publishing-2026112200-...``) once nothing in them was written for ``min_age_seconds``.
    Readers never look at them; they only take space. Returns what was removed."""
    import time

    removed: list[Path] = []
    if not Path(directory).is_dir():
        return removed
    min_age_seconds = LEFTOVER_AGE_SECONDS if min_age_seconds is None else min_age_seconds
    now = time.time()
    for entry in Path(directory).iterdir():
        if not LEFTOVER.match(entry.name):
            continue
        try:
            paths = [entry, *entry.rglob("*")] if entry.is_dir() else [entry]
            # ctime too: a rename (staged_dir's .old-) or a copy that keeps mtimes is still recent
            newest = max(max(st.st_mtime, st.st_ctime) for st in (p.lstat() for p in paths))
            if now - newest < min_age_seconds:
                continue
            shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
        except FileNotFoundError:
            continue  # its writer finished or another sweep got there first
        except OSError as exc:  # e.g. another uid's leftover on a shared volume: not this step's problem
            logging.getLogger(__name__).warning("could not remove the leftover %s: %s", entry, exc)
            continue
        removed.append(entry)
        logging.getLogger(__name__).info("removed %s, left by a killed step (untouched for %.0f h)",
                                         entry, (now - newest) / 3600)
    return removed


def confined(root: str | Path, relative: str, what: str) -> Path:
    """``root / relative``, refusing absolute paths and anything that escapes ``root``."""
    if not relative or Path(relative).is_absolute() or relative.startswith("~"):
        raise ValueError(f"{what} must be a relative path under {root}, got {relative!r}")
    base = Path(root).resolve()
    path = (base / relative).resolve()
    if path != base and base not in path.parents:
        raise ValueError(f"{what} {relative!r} escapes its root {root}")
    return path


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# -- partitions -------------------------------------------------------------------

def write_table_bytes(table: pa.Table, fmt: str) -> bytes:
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    sink = io.BytesIO()
    if fmt == "csv":
        pacsv.write_csv(table, sink, pacsv.WriteOptions(quoting_style="needed"))
    elif fmt == "parquet":
        pq.write_table(table, sink, compression="zstd")
    else:
        raise ValueError(f"unsupported data format {fmt!r}; expected csv or parquet")
    return sink.getvalue()


def partition_files(partition: Path, fmt: str) -> list[Path]:
    """The data files of a partition: ``*.{fmt}`` directly in it, but hidden ones (``.x``: temporaries)."""
    return sorted(p for p in Path(partition).glob(f"*.{fmt}") if p.is_file() and not p.name.startswith("."))


def unread_entries(partition: Path, fmt: str) -> list[Path]:
    """What else a partition holds that is not marked as no data: files of another suffix and subdirectories,
    which no step reads. Names starting with ``_`` or ``.`` (Spark's ``_SUCCESS``, ``.crc``, temporaries) are
    not data by Hadoop's convention, as pyarrow's datasets take them."""
    read = set(partition_files(partition, fmt))
    return sorted(p for p in Path(partition).iterdir() if p not in read and not p.name.startswith(("_", ".")))


def read_files(files: list[Path], fmt: str, schema: RawSchema) -> pa.Table:
    """Read partition files as typed flat columns; raise with the file name when they do not parse."""
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    target = schema.arrow_schema()
    tables = []
    for path in files:
        try:
            if fmt == "csv":
                table = pacsv.read_csv(
                    path,
                    convert_options=pacsv.ConvertOptions(
                        column_types={f.name: f.arrow_type for f in schema.features},
                        strings_can_be_null=True,
                        include_columns=schema.names,
                    ),
                )
            else:
                table = pq.read_table(path, columns=schema.names)
            tables.append(table.select(schema.names).cast(target))
        except (pa.ArrowInvalid, pa.ArrowTypeError, KeyError) as exc:
            raise ValueError(f"{path}: does not match the schema: {exc}") from None
    return pa.concat_tables(tables) if tables else target.empty_table()
