"""Reading one raw partition file exactly as ``transform`` will, and saying precisely what is wrong.

Both steps parse cells with ``csv_convert_options``, TFXIO's CSV rules (``tfxio.CsvTFXIO``, which
``transform`` used to read with): only an empty cell is missing, so ``NA`` and ``null`` are strings (and a
Parquet file's empty string is missing too, ``empty_as_missing``: the exported model reads one so at serving),
and ``nan``, ``NAN``, ``inf`` or ``1e400`` are floats; a float is parsed as a double (Python's
``float()``) and rounded to float32. What ``validate`` passes is what training gets, and ``transform``
reads only the bytes ``validate`` checked (``read_batches`` compares the file's sha256).
Problems are ``Anomaly`` records naming the file, the column and the line numbers, and every
problem of a file is reported, not just the first.
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from pipelines.anomalies import Anomaly
from pipelines.schema import NUMBER_TEXT, RawSchema

EXAMPLES = 5  # offending lines quoted per problem
HASH_BYTES = 8 << 20  # a Parquet partition is hashed in pieces of this size before it is parsed


BLOCK_BYTES = 4 << 20  # transform's batches: one per 4 MiB of CSV (~50,000 taxi rows; TFXIO made 1,000)


def csv_convert_options(schema: RawSchema, *, strings: bool | Collection[str] = False) -> pacsv.ConvertOptions:
    """The schema's columns, typed as TFXIO types CSV cells (``strings``: every column, or the columns named,
    as text, to find the cells that are not numbers). Floats come out as float64: ``typed`` rounds them to
    float32."""
    text = set(schema.names) if strings is True else set(strings or ())
    types = {f.name: pa.string() if f.name in text else pa.float64() if f.type == "float" else f.arrow_type
             for f in schema.features}
    return pacsv.ConvertOptions(column_types=types, include_columns=schema.names, null_values=[""],
                                strings_can_be_null=True)


def csv_parse_options(**kw) -> pacsv.ParseOptions:
    """How both steps split CSV into rows: a quoted value may hold a newline (without this, whether such a file
    reads depends on where pyarrow's blocks end, which differs between the steps)."""
    return pacsv.ParseOptions(newlines_in_values=True, **kw)


def empty_as_missing(data: pa.Table | pa.RecordBatch) -> pa.Table | pa.RecordBatch:
    """``data`` with every empty string of its text columns a missing value, as an empty CSV cell is: the one
    rule for training data in either format, and the one the exported model applies to a request
    (``pipelines.tf_schema.value_checks``), so a client that sends an empty cell as "" gets what training saw."""
    return type(data).from_arrays([_blank_to_null(column) for column in data.columns], names=data.column_names)


def _blank_to_null(column):
    """A text column (any of Arrow's string and binary types, dictionary-encoded too: pandas writes a Categorical
    so) with its empty values null; any other column as it is."""
    kind = column.type
    if pa.types.is_dictionary(kind):
        column, kind = column.cast(kind.value_type), kind.value_type
    if getattr(pa.types, "is_string_view", lambda _: False)(kind) or \
            getattr(pa.types, "is_binary_view", lambda _: False)(kind):
        column = column.cast(pa.string() if pa.types.is_string_view(kind) else pa.binary())
        kind = column.type
    if not any(test(kind) for test in (pa.types.is_string, pa.types.is_large_string, pa.types.is_binary,
                                       pa.types.is_large_binary)):
        return column
    empty = pa.scalar(b"" if pa.types.is_binary(kind) or pa.types.is_large_binary(kind) else "", kind)
    return pc.if_else(pc.equal(column, empty), pa.scalar(None, kind), column)


def typed(data: pa.Table | pa.RecordBatch, schema: RawSchema, *,
          leave_out: Collection[str] = ()) -> pa.Table | pa.RecordBatch:
    """Columns parsed with ``csv_convert_options`` in the schema's order and types (floats to float32), but
    those in ``leave_out``."""
    features = [f for f in schema.features if f.name not in leave_out]
    data = data.select([f.name for f in features])
    arrays = [column.cast(f.arrow_type) if f.type == "float" else column
              for f, column in zip(features, data.columns, strict=True)]
    return type(data).from_arrays(arrays, names=[f.name for f in features])


class _Sha256Reader(io.RawIOBase):
    """A binary file that hashes what is read from it."""

    def __init__(self, file) -> None:
        self.file, self.sha256 = file, hashlib.sha256()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        n = self.file.readinto(buffer)
        self.sha256.update(memoryview(buffer)[:n])
        return n


def read_batches(path: str | Path, fmt: str, schema: RawSchema, digest: str, *,
                 block_bytes: int = BLOCK_BYTES) -> Iterator[pa.RecordBatch]:
    """The rows of a partition file ``validate`` passed, in batches of about ``block_bytes``, typed as
    ``validate`` read them (flat columns). Raises ``ValueError`` naming the file if it no longer reads or no
    longer has the sha256 ``digest`` ``validate`` recorded: a run fails rather than train on rows that were never
    validated (CSV is hashed as it streams, so that check comes after its last batch)."""
    if fmt == "csv":
        yield from _csv_batches(path, schema, digest, block_bytes)
        return
    # Parquet is read from its footer, so it cannot be hashed as it is parsed: the open file is hashed whole
    # first, then parsed a batch at a time from that same open file (not read into memory)
    with _open(path) as file:
        sha256 = hashlib.sha256()
        while chunk := file.read(HASH_BYTES):
            sha256.update(chunk)
        check_digest(path, sha256.hexdigest(), digest)
        file.seek(0)
        try:
            parquet = pq.ParquetFile(file)
            if missing := [name for name in schema.names if name not in parquet.schema_arrow.names]:
                raise KeyError(f"the schema's column(s) {missing} are not in the file")  # iter_batches skips them
            meta = parquet.metadata
            size = sum(meta.row_group(i).total_byte_size for i in range(meta.num_row_groups))
            rows = max(1, block_bytes * meta.num_rows // max(size, 1))
            for batch in parquet.iter_batches(batch_size=rows, columns=schema.names):
                yield empty_as_missing(batch)
        except (pa.ArrowException, OSError, KeyError) as exc:
            raise _unreadable(path, exc) from exc


def _csv_batches(path: str | Path, schema: RawSchema, digest: str, block_bytes: int) -> Iterator[pa.RecordBatch]:
    with _open(path) as raw:
        hashing = _Sha256Reader(raw)
        try:
            reader = pacsv.open_csv(pa.PythonFile(hashing, mode="r"),
                                    read_options=pacsv.ReadOptions(block_size=block_bytes),
                                    parse_options=csv_parse_options(), convert_options=csv_convert_options(schema))
            for batch in reader:
                yield typed(batch, schema)
        except pa.ArrowException as exc:  # ArrowInvalid, ArrowKeyError (a schema column no longer in the header)
            raise _unreadable(path, exc) from exc
        while hashing.readinto(bytearray(1 << 20)):  # whatever the CSV reader left unread
            pass
    check_digest(path, hashing.sha256.hexdigest(), digest)


def _open(path: str | Path):
    """A partition file for reading: this machine's, or a URL (``gs://``: the copy ``transform`` uploaded for a
    runner's workers elsewhere) through Beam's file systems."""
    if "://" not in str(path):
        return open(path, "rb")
    from apache_beam.io.filesystem import CompressionTypes
    from apache_beam.io.filesystems import FileSystems

    return FileSystems.open(str(path), compression_type=CompressionTypes.UNCOMPRESSED)


def _unreadable(path: str | Path, exc: Exception) -> ValueError:
    return ValueError(f"{path}: no longer reads as the file validate passed: {exc}. Was it changed or replaced "
                      "after validate? Run validate again on the partition")


def check_digest(path: str | Path, sha256: str, digest: str) -> None:
    if sha256 != digest:
        raise ValueError(f"{path}: its sha256 is {sha256}, not the {digest} validate checked: the file changed "
                         "after validate. Run validate again on the partition")


@dataclass
class FileRead:
    """One file as typed columns of the schema (``None`` when it cannot be used) and its problems.

    ``values`` holds the columns whose every cell reads as its type: all of ``table`` for a usable file, and for
    one a type error or a malformed row refuses, the other columns (the malformed rows left out), so that one
    validate names the bad values of those columns too. ``None`` when no column can be read apart."""

    path: Path
    fmt: str
    digest: str
    table: pa.Table | None = None
    values: pa.Table | None = None
    anomalies: list[Anomaly] = field(default_factory=list)
    _data: bytes = b""
    _skipped: frozenset[int] = frozenset()  # malformed rows: pyarrow's record numbers (the header is record 1)
    _records: np.ndarray | None = None

    def record_lines(self) -> np.ndarray:
        """The line each CSV record (the header is record 1) starts on: pyarrow numbers records, not lines,
        so blank lines and quoted newlines make the two differ."""
        if self._records is None:
            self._records = _record_lines(self._data)
        return self._records

    def lines(self, rows: np.ndarray) -> list[int]:
        """Line numbers (CSV; the header is line 1) or 1-based row numbers (Parquet) of table rows."""
        rows = np.asarray(rows, dtype=np.int64)
        if self.fmt != "csv":
            return (rows + 1).tolist()
        records = np.arange(2, len(self.record_lines()) + 1)  # the data rows, less the malformed ones skipped
        records = records[~np.isin(records, list(self._skipped))]
        return self.record_lines()[records[rows] - 1].tolist()

    def cells(self, name: str, rows: np.ndarray) -> list:
        """Column ``name``'s cells at table ``rows`` as the file has them, for messages: the CSV text (the typed
        float32 column shows 1e308 as inf and 5e-40 as 5.000001e-40), or Parquet's stored values."""
        rows = pa.array(np.asarray(rows, dtype=np.int64))
        if self.fmt != "csv":  # the column as the file stores it (float64 1e308 is inf once typed float32)
            return pc.take(pq.read_table(pa.BufferReader(self._data), columns=[name]).column(name), rows).to_pylist()
        text = pacsv.read_csv(
            io.BytesIO(self._data), read_options=pacsv.ReadOptions(use_threads=False),
            parse_options=csv_parse_options(invalid_row_handler=lambda row: "skip"),  # the rows the table has
            convert_options=pacsv.ConvertOptions(column_types={name: pa.string()}, include_columns=[name]))
        return pc.take(text.column(name), rows).to_pylist()

    def where(self, rows: np.ndarray, values: list | None = None) -> str:
        """``lines 4, 9 ('abc', 'x')`` for the first few offending rows."""
        shown = self.lines(np.asarray(rows)[:EXAMPLES])
        noun = "line" if self.fmt == "csv" else "row"
        if values is None:
            text = ", ".join(map(str, shown))
        else:  # floats as written (float32 cells: 18.08, not 18.079999923706055)
            text = ", ".join(f"{n} {f'{v:.7g}' if isinstance(v, float) else repr(v)}"
                             for n, v in zip(shown, values[:EXAMPLES], strict=False))
        more = f" and {len(rows) - len(shown)} more" if len(rows) > len(shown) else ""
        return f"{noun}{'s' if len(rows) > 1 else ''} {text}{more}"


def _record_lines(data: bytes) -> np.ndarray:
    """The physical line each CSV record starts on, splitting records as pyarrow does (``csv_parse_options``):
    empty lines are skipped, and a quoted value may hold newlines (then Python's csv module, whose quoting rules
    are pyarrow's, finds where records start)."""
    if b'"' in data:
        limit = csv.field_size_limit(max(csv.field_size_limit(), len(data)))  # a quoted value may be the file
        try:
            reader = csv.reader(io.StringIO(data.decode("utf-8"), newline=""))
            starts, line = [], 0
            for record in reader:
                if record:  # [] is an empty line
                    starts.append(line + 1)
                line = reader.line_num
            return np.asarray(starts, dtype=np.int64)
        except csv.Error:  # not seen in a random test against pyarrow (NUL bytes included): one record a line
            pass
        finally:
            csv.field_size_limit(limit)
    buf = np.frombuffer(data, np.uint8)
    cr = buf == 13
    breaks = np.flatnonzero((buf == 10) | (cr & ~np.append(buf[1:] == 10, False)))  # \n, \r\n or a lone \r
    starts = np.concatenate([[0], breaks + 1])
    ends = np.concatenate([breaks, [len(buf)]])
    length = ends - starts
    carriage = (length > 0) & cr[np.maximum(ends - 1, 0)] if len(buf) else length > 0
    return np.arange(1, len(starts) + 1)[(length - carriage) > 0]


def read_partition_file(path: Path, fmt: str, schema: RawSchema, *, day: str,
                        unknown_columns: str = "error") -> FileRead:
    data = Path(path).read_bytes()
    read = FileRead(path=Path(path), fmt=fmt, digest=hashlib.sha256(data).hexdigest(), _data=data)

    def problem(kind: str, message: str, **kw) -> None:
        read.anomalies.append(Anomaly(kind, f"{path}: {message}", day=day, file=str(path), **kw))

    if not data.strip():
        problem("empty_file", f"the file is empty ({len(data)} bytes; expected a header and rows)")
        return read
    if fmt == "csv":
        _read_csv(read, data, schema, unknown_columns, problem)
    else:
        _read_parquet(read, data, schema, unknown_columns, problem)
    return read


def _check_header(names: list[str], schema: RawSchema, unknown_columns: str, problem) -> bool:
    """Missing, duplicate and unknown columns; False when the file cannot be aligned with the schema."""
    usable = True
    for name in sorted({n for n in names if names.count(n) > 1}):
        problem("duplicate_column", f"column {name!r} appears {names.count(name)} times in the header", column=name)
        usable = False
    for name in schema.names:
        if name not in names:
            problem("missing_column", f"column {name!r} of the schema is missing (the file has: {', '.join(names)})",
                    column=name)
            usable = False
    if unknown_columns == "error":
        for name in names:
            if name not in schema.names:
                problem("unknown_column", f"column {name!r} is not in the schema; declare it, or set [validation] "
                        "unknown_columns = \"ignore\" to let such columns through unread", column=name)
    return usable


def _read_csv(read: FileRead, data: bytes, schema: RawSchema, unknown_columns: str, problem) -> None:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        head = data[: exc.start]  # its line: line breaks before it are \n, \r\n or a lone \r, as elsewhere
        line = head.count(b"\n") + head.count(b"\r") - head.count(b"\r\n") + 1
        problem("not_utf8", f"line {line}: byte 0x{data[exc.start]:02x} at offset {exc.start} is not UTF-8 "
                "(save the file as UTF-8)", lines=[line])
        return
    header = next(csv.reader(io.StringIO(data.split(b"\n", 1)[0].decode("utf-8-sig").rstrip("\r"))), [])
    if not _check_header(header, schema, unknown_columns, problem):
        return
    malformed: list[tuple[int, int, str]] = []

    def invalid_row(row) -> str:
        malformed.append((row.number or 0, row.actual_columns, row.text))
        return "skip"

    def parse(strings: bool = False) -> pa.Table:
        malformed.clear()
        return pacsv.read_csv(
            io.BytesIO(data),
            read_options=pacsv.ReadOptions(use_threads=False),  # line numbers for malformed rows
            parse_options=csv_parse_options(invalid_row_handler=invalid_row),
            convert_options=csv_convert_options(schema, strings=strings),
        )

    def wrong_types() -> set[str]:
        """The columns with a cell that is not a number of its type (each cell named), from the file as text."""
        strings = parse(strings=True)
        read._skipped = frozenset(n for n, _, _ in malformed)
        return _wrong_types(read, strings, schema, problem)

    try:
        table = typed(parse(), schema)
        read.values = table
        # pyarrow reads 0x10 in an int64 column as 16: look for such cells where the bytes could hold one
        if any(f.type == "int" for f in schema.features) and re.search(rb"0[xX]", data) and (bad := wrong_types()):
            table, read.values = None, table.drop_columns(sorted(bad))
    except pa.ArrowInvalid as exc:
        try:
            if not (bad := wrong_types()):  # pyarrow counts columns from 0: name the column
                named = re.sub(r"CSV column #(\d+)", lambda m: f"{m[0]} (column {header[int(m[1])]!r})"
                               if int(m[1]) < len(header) else m[0], str(exc))
                problem("unreadable", f"does not parse with the schema's types: {named}")
            elif len(bad) < len(schema.names):  # the other columns read as their types: their values get checked
                try:
                    read.values = typed(parse(strings=bad), schema, leave_out=bad)
                except pa.ArrowInvalid:
                    pass  # a cell no check explains in another column: named once the type errors are fixed
        except pa.ArrowInvalid as exc2:
            problem("unreadable", f"not a readable CSV file: {exc2}")
            return
        table = None
    read._skipped = frozenset(n for n, _, _ in malformed)
    if malformed:
        expected = len(header)
        lines = [int(read.record_lines()[n - 1]) if n else 0 for n, _, _ in malformed]
        examples = "; ".join(f"line {n} has {cols} column(s): {text[:60]!r}"
                             for n, (_, cols, text) in zip(lines, malformed[:EXAMPLES], strict=False))
        problem("malformed_row", f"{len(malformed)} row(s) do not have the header's {expected} columns "
                f"(a truncated or corrupted file?): {examples}", value=len(malformed), lines=lines[:EXAMPLES])
        table = None
    if table is not None:
        read.table = table


def _wrong_types(read: FileRead, strings: pa.Table, schema: RawSchema, problem) -> set[str]:
    """Report every cell that is not a number of its column's type; the columns that have one (every column
    when the header is repeated inside the file: its text is in each)."""
    repeated = None
    for f in schema.features:
        # a header that starts a concatenated "CSV UTF-8" file has a byte order mark (on the file's first column)
        cells = pc.replace_substring_regex(strings.column(f.name), "^\ufeff", "")
        same = pc.fill_null(pc.equal(cells, f.name), False)
        repeated = same if repeated is None else pc.and_(repeated, same)
    repeated_rows = np.flatnonzero(repeated.to_numpy(zero_copy_only=False)) if repeated is not None else []
    found: set[str] = set()
    if len(repeated_rows):
        problem("repeated_header", f"the header is repeated inside the file at {read.where(repeated_rows)} "
                "(files concatenated with their headers?)", lines=read.lines(repeated_rows[:EXAMPLES]))
        found = set(schema.names)
    not_header = pc.invert(repeated) if repeated is not None else None
    for f in schema.features:
        if f.type not in NUMBER_TEXT:
            continue
        column = strings.column(f.name)
        ok = pc.match_substring_regex(column, NUMBER_TEXT[f.type], ignore_case=True)
        bad = pc.and_(pc.and_(pc.is_valid(column), pc.invert(pc.fill_null(ok, True))), not_header)
        rows = np.flatnonzero(bad.to_numpy(zero_copy_only=False))
        # an integer int64 cannot hold: pyarrow refuses the whole file for one, so it is named here with the rest
        huge = _beyond_int64(column, ok) if f.type == "int" else rows[:0]
        parts = [f"{len(found_rows)} {what}: {read.where(found_rows, pc.take(column, pa.array(found_rows[:EXAMPLES])).to_pylist())}"
                 for found_rows, what in ((rows, f"value(s) that are not {f.type}"),
                                          (huge, "integer(s) beyond int64's range (-2**63 to 2**63-1)"))
                 if len(found_rows)]
        if parts:
            every = np.union1d(rows, huge)
            problem("wrong_type", f"column {f.name!r} has {'; and '.join(parts)}", column=f.name, value=len(every),
                    lines=read.lines(every[:EXAMPLES]))
            found.add(f.name)
    return found


def _uncastable_rows(column: pa.ChunkedArray, kind: str) -> np.ndarray | None:
    """The rows of a Parquet column whose cells are not of ``kind`` (text that is not a number of it, a float
    with a fraction for an int); None when that is not how the column fails."""
    if pa.types.is_dictionary(column.type):
        column = column.cast(column.type.value_type)
    if kind in NUMBER_TEXT and (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
        ok = pc.match_substring_regex(column, NUMBER_TEXT[kind], ignore_case=True)
        bad = pc.and_(pc.is_valid(column), pc.invert(pc.fill_null(ok, True)))
    elif kind == "int" and pa.types.is_floating(column.type):
        bad = pc.and_(pc.is_valid(column), pc.invert(pc.fill_null(pc.equal(pc.trunc(column), column), True)))
    else:
        return None
    return np.flatnonzero(pc.fill_null(bad, False).to_numpy(zero_copy_only=False))


def _beyond_int64(column: pa.ChunkedArray, is_int: pa.ChunkedArray) -> np.ndarray:
    """Rows of integer text (``is_int``) that int64 cannot hold; only cells of 19 or more characters can't."""
    long = pc.and_(pc.fill_null(is_int, False), pc.fill_null(pc.greater_equal(pc.utf8_length(column), 19), False))
    rows = np.flatnonzero(long.to_numpy(zero_copy_only=False))
    if not rows.size:
        return rows
    values = pc.take(column, pa.array(rows)).to_pylist()

    def fits(text: str) -> bool:  # digits counted first: int() refuses text of over 4300 digits
        digits = text.strip().lstrip("-").lstrip("0")
        return len(digits) <= 19 and -(2**63) <= int(text) < 2**63

    return np.array([r for r, v in zip(rows, values, strict=True) if not fits(v)], dtype=np.int64)


def _read_parquet(read: FileRead, data: bytes, schema: RawSchema, unknown_columns: str, problem) -> None:
    try:
        table = empty_as_missing(pq.read_table(pa.BufferReader(data)))
    except (pa.ArrowInvalid, OSError) as exc:
        problem("unreadable", f"not a readable Parquet file (truncated or corrupted?): {exc}")
        return
    if not _check_header(table.column_names, schema, unknown_columns, problem):
        return
    columns = {}
    for f in schema.features:
        column, stored = table.column(f.name), table.schema.field(f.name).type
        said = f"column {f.name!r} has type {stored} in the file, which does not convert to {f.type}"
        if f.type in NUMBER_TEXT and (pa.types.is_boolean(stored) or pa.types.is_temporal(stored)):
            # pyarrow casts them (True -> 1, a timestamp -> its epoch count): numbers the data never meant
            problem("wrong_type", f"{said}: a {stored} column holds no {f.type}s; declare the feature as what the "
                    "column holds, or write the column as numbers", column=f.name)
            continue
        # before the cast: pyarrow casts the text 0x10 to 16, and a cast that fails names no row
        if (rows := _uncastable_rows(column, f.type)) is not None and len(rows):
            cells = pc.take(column, pa.array(rows[:EXAMPLES])).to_pylist()
            problem("wrong_type", f"{said}: {len(rows)} value(s) that are not {f.type}: {read.where(rows, cells)}",
                    column=f.name, value=len(rows), lines=read.lines(rows[:EXAMPLES]))
            continue
        try:
            columns[f.name] = column.cast(f.arrow_type)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as exc:
            problem("wrong_type", f"{said}: {exc}", column=f.name)
    read.values = pa.table(columns) if columns else None
    if len(columns) == len(schema.features):
        read.table = read.values
