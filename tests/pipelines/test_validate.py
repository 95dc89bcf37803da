"""The data gate: every kind of bad input stops in validate, named with its column, day, file and numbers.

Each case first validates the good window (a committed ``validate/result.json``), then plants one fault
in the newest day and validates again: the run fails, the message says what and where, the report is
written under ``validate/rejected/``, and the earlier good output is still there, byte for byte.
"""

import dataclasses
import datetime as dt
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from pipelines.anomalies import parse_accepted
from pipelines.config import load_model_config
from pipelines.models.taxi.features import SCHEMA
from pipelines.runs import Run
from pipelines.storage import partition_files, read_files, read_json, write_table_bytes
from pipelines.validate import DataValidationError, validate
from tests.conftest import END

NEWEST = END.isoformat()


@pytest.fixture
def data(small_data, tmp_path):
    copy = tmp_path / "data"
    shutil.copytree(small_data, copy)
    return copy


@pytest.fixture
def newest(data):
    return data / "taxi_trips" / f"dt={NEWEST}" / "part-00000.csv"


@pytest.fixture
def good(data, tmp_path, taxi_config):
    """The good window validated once: its committed output must survive every failed re-validation."""
    art = tmp_path / "art"
    validate(taxi_config, interval=END, data_root=str(data), artifact_root=art)
    result = Run(art, "taxi", END).result_path("validate")
    return {"art": art, "result": result, "bytes": result.read_bytes()}


def failed(config, data, good, **kw) -> tuple[str, list[dict]]:
    with pytest.raises(DataValidationError) as err:
        validate(config, interval=END, data_root=str(data), artifact_root=good["art"], **kw)
    assert good["result"].read_bytes() == good["bytes"], "a failed validation changed the good output"
    report = read_json(good["art"] / f"taxi/runs/{NEWEST}/validate/rejected/validation.json")
    assert report["errors"] and str(err.value).count("\n  ") >= len(report["errors"])
    return str(err.value), report["anomalies"]


def ids(anomalies: list[dict]) -> set[str]:
    return {a["id"] for a in anomalies}


def rewrite(path, edit) -> None:
    table = read_files([path], "csv", SCHEMA)
    path.write_bytes(write_table_bytes(edit(table), "csv"))


def set_column(table: pa.Table, name: str, values) -> pa.Table:
    index = table.schema.get_field_index(name)
    return table.set_column(index, table.schema.field(index), pa.array(values, table.schema.field(index).type))


def edit_lines(path, edit) -> None:
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(edit(lines)))


# -- the good window ------------------------------------------------------------------

def test_valid_window_with_gentle_drift_passes_with_defaults(data, tmp_path, taxi_config):
    result = validate(taxi_config, interval=END, data_root=str(data), artifact_root=tmp_path / "art")
    assert len(result.rows) == taxi_config.data.lookback_days + 1
    assert result.total_rows == 1000 * len(result.rows)
    assert 0 < result.missing_fraction["trip_miles"] < 0.1
    assert result.anomalies == [] and result.accepted == []
    assert Run(tmp_path / "art", "taxi", END).read_result("validate")["total_rows"] == result.total_rows
    stats = read_json(result.statistics)["days"]
    assert sorted(stats) == sorted(result.rows)
    day = stats[NEWEST]
    miles = day["columns"]["trip_miles"]
    assert day["rows"] == 1000 and miles["nulls"] > 0 and miles["nan"] == 0 and len(miles["quantiles"]) == 101
    assert miles["min"] <= miles["quantiles"][50] <= miles["max"] and miles["std"] > 0
    assert day["columns"]["payment_type"]["distinct"] == len(day["columns"]["payment_type"]["top"]) <= 7
    assert {v for v, _ in day["columns"]["tipped"]["top"]} == {"0", "1"}  # the label's distribution


# -- files and schema ----------------------------------------------------------------------

def test_missing_partition_is_named(data, good, taxi_config):
    gone = data / "taxi_trips" / "dt=2026-11-08"
    shutil.rmtree(gone)
    message, anomalies = failed(taxi_config, data, good)
    assert f"missing partition for 2026-11-08: {gone} does not exist" in message
    assert ids(anomalies) == {"missing_partition"}


def test_files_no_step_reads_are_named_not_silently_left_out(data, good, newest, taxi_config):
    """A user's second file named .parq, and an hour=01/ subdirectory, held half the day's rows: validate passed
    and training never saw them. Markers by Hadoop's convention (_SUCCESS, .crc) are not data."""
    (newest.parent / "_SUCCESS").write_text("")
    (newest.parent / ".part-00000.csv.crc").write_text("crc")
    assert validate(taxi_config, interval=END, data_root=str(data), artifact_root=good["art"]).anomalies == []
    shutil.copy(newest, newest.parent / "part-00001.CSV")
    (newest.parent / "hour=01").mkdir()
    shutil.copy(newest, newest.parent / "hour=01" / "part-00000.csv")
    message, anomalies = failed(taxi_config, data, good)
    [unread] = [a for a in anomalies if a["kind"] == "unread_files"]
    assert unread["day"] == NEWEST and unread["value"] == 2
    assert (f"{newest.parent}: 2 entries no step reads: hour=01 (a directory), part-00001.CSV (not *.csv). Only "
            "*.csv files directly in the partition reach training") in message


def test_unknown_extra_column_is_an_error_by_default_and_can_be_ignored(data, good, newest, taxi_config):
    rewrite(newest, lambda t: t.append_column("tip_pct", pa.array(np.full(t.num_rows, 0.2))))
    message, anomalies = failed(taxi_config, data, good)
    assert ids(anomalies) == {"unknown_column:tip_pct"}
    assert f"{newest}: column 'tip_pct' is not in the schema" in message
    ignoring = dataclasses.replace(taxi_config, validation=dataclasses.replace(
        taxi_config.validation, unknown_columns="ignore"))
    assert validate(ignoring, interval=END, data_root=str(data), artifact_root=good["art"]).anomalies == []


def test_missing_and_duplicate_columns_are_named(data, good, newest, taxi_config):
    edit_lines(newest, lambda lines: [lines[0].replace('"company"', '"fare"'), *lines[1:]])
    message, anomalies = failed(taxi_config, data, good)
    assert {"missing_column:company", "duplicate_column:fare"} <= ids(anomalies)
    assert "column 'fare' appears 2 times in the header" in message
    assert "column 'company' of the schema is missing" in message


def test_wrong_types_name_the_column_and_every_line(data, good, newest, taxi_config):
    def edit(lines):
        lines[4] = '"three"' + lines[4][lines[4].index(","):]  # trip_miles (the first column)
        lines[9] = "abc" + lines[9][lines[9].index(","):]
        fields = lines[12].split(",")
        fields[3] = "9.5"  # pickup_hour (int) -> 9.5
        lines[12] = ",".join(fields)
        return lines

    edit_lines(newest, edit)
    message, anomalies = failed(taxi_config, data, good)
    by_id = {a["id"]: a for a in anomalies}
    assert by_id["wrong_type:trip_miles"]["lines"] == [5, 10] and by_id["wrong_type:trip_miles"]["value"] == 2
    assert "column 'trip_miles' has 2 value(s) that are not float: lines 5 'three', 10 'abc'" in message
    assert by_id["wrong_type:pickup_hour"]["lines"] == [13]
    assert "column 'pickup_hour' has 1 value(s) that are not int: line 13 '9.5'" in message
    assert all(a["file"] == str(newest) and a["day"] == NEWEST for a in anomalies)


def test_an_integer_beyond_int64_is_named_with_the_other_wrong_types_in_one_pass(data, good, newest, taxi_config):
    """pyarrow refuses a whole file for one integer int64 cannot hold ('CSV column #3: Row #8: ... invalid
    value', counting columns from 0): it used to be reported alone, as unreadable, after the other cells
    were fixed."""
    def edit(lines):
        for i, cell in ((7, "99999999999999999999"), (9, "nine"), (11, "-9223372036854775809"),
                        (12, "9223372036854775807"),  # fits
                        (14, "9" * 5000)):  # more digits than Python's int() reads: it raised, and validate with it
            fields = lines[i].split(",")
            fields[3] = cell  # pickup_hour (int)
            lines[i] = ",".join(fields)
        return lines

    edit_lines(newest, edit)
    message, anomalies = failed(taxi_config, data, good)
    assert {a["id"] for a in anomalies} == {"wrong_type:pickup_hour"}  # its other cells are in [0, 23]
    wrong = next(a for a in anomalies if a["id"] == "wrong_type:pickup_hour")
    assert wrong["lines"] == [8, 10, 12, 15] and wrong["value"] == 4
    assert ("column 'pickup_hour' has 1 value(s) that are not int: line 10 'nine'; and 3 integer(s) beyond int64's "
            "range (-2**63 to 2**63-1): lines 8 '99999999999999999999', 12 '-9223372036854775809', 15 '999") in message
    assert "unreadable" not in message


def test_a_parse_failure_no_check_explains_is_unreadable_naming_the_column(data, good, newest, taxi_config,
                                                                           monkeypatch):
    """Fail closed: a cell pyarrow refuses that no check of validate's explains (planted by switching off the
    int64-range check) is still refused, with pyarrow's 0-based column number given its name."""
    from pipelines import rawdata

    monkeypatch.setattr(rawdata, "_beyond_int64", lambda column, is_int: np.array([], dtype=np.int64))

    def edit(lines):
        fields = lines[7].split(",")
        fields[3] = "99999999999999999999"  # pickup_hour, the file's fourth column
        lines[7] = ",".join(fields)
        return lines

    edit_lines(newest, edit)
    message, anomalies = failed(taxi_config, data, good)
    assert {a["id"] for a in anomalies} == {"unreadable"}
    assert "In CSV column #3 (column 'pickup_hour'): Row #8: CSV conversion error to int64" in message


@pytest.mark.parametrize("cell", ["0x10", "+12"])
def test_ints_pyarrow_and_int_disagree_on_are_named_by_line(data, good, newest, taxi_config, cell):
    """pyarrow reads 0x10 as 16 (Python's int() refuses it) and refuses +12: either way the cell is named."""
    def edit(lines):
        fields = lines[6].split(",")
        fields[3] = cell  # pickup_hour (int)
        lines[6] = ",".join(fields)
        return lines

    edit_lines(newest, edit)
    message, anomalies = failed(taxi_config, data, good)
    assert f"column 'pickup_hour' has 1 value(s) that are not int: line 7 '{cell}'" in message
    assert {a["id"] for a in anomalies} == {"wrong_type:pickup_hour"}


@pytest.mark.parametrize("spelling", ["NAN", "nan", "NaN", "inf", "-Infinity", "1e400", "1e308", "-3.5e38"])
def test_nan_and_inf_in_any_spelling_are_refused_with_their_lines(data, good, newest, taxi_config, spelling):
    """Named as written: 1e308, a float64, is infinite as float32 (the message said 'inf')."""
    def edit(lines):
        for n in (3, 7):
            fields = lines[n].split(",")
            fields[1] = spelling  # fare
            lines[n] = ",".join(fields)
        return lines

    edit_lines(newest, edit)
    message, anomalies = failed(taxi_config, data, good)
    [nan] = [a for a in anomalies if a["kind"] == "nan_values"]
    assert nan["column"] == "fare" and nan["lines"] == [4, 8] and nan["value"] == 2
    assert f"{newest}: column 'fare' has 2 NaN or infinite value(s): lines 4 '{spelling}', 8 '{spelling}'. " in message


def test_a_parquet_cell_infinite_as_float32_is_named_as_stored(tmp_path):
    """A float64 1e308 in a Parquet file is infinite once typed float32: the message shows 1e+308, not inf."""
    import pyarrow.parquet as pq

    from pipelines.rawdata import read_partition_file
    from pipelines.schema import Feature, RawSchema
    from pipelines.validate import check_values

    path = tmp_path / "part-00000.parquet"
    pq.write_table(pa.table({"x": pa.array([1.0, 1e308, 2.0], pa.float64()), "y": [0, 1, 0]}), path)
    schema = RawSchema((Feature("x", "float"), Feature("y", "int", nullable=False)), "y")
    read = read_partition_file(path, "parquet", schema, day=str(END))
    [nan] = check_values(read, schema, str(END))
    assert nan.kind == "nan_values" and "has 1 NaN or infinite value(s): row 2 1e+308." in nan.message, nan.message


def test_a_parquet_empty_string_is_a_missing_value_as_an_empty_csv_cell_is(tmp_path):
    """The one rule in both formats, and the one the exported model applies to a request (tf_schema.value_checks):
    an empty string is missing. A required column's empty strings are its nulls; transform reads them so too."""
    import hashlib

    import pyarrow.parquet as pq

    from pipelines.rawdata import read_batches, read_partition_file
    from pipelines.schema import Feature, RawSchema
    from pipelines.validate import check_values

    path = tmp_path / "part-00000.parquet"
    pq.write_table(pa.table({"plan": pa.array(["gold", "", None, "basic"]).dictionary_encode(),  # (a Categorical)
                             "tier": ["a", "b", "", "c"], "y": [0, 1, 0, 1]}), path)
    schema = RawSchema((Feature("plan", "string"), Feature("tier", "string", nullable=False),
                        Feature("y", "int", nullable=False)), "y")
    read = read_partition_file(path, "parquet", schema, day=str(END))
    assert read.table.column("plan").to_pylist() == ["gold", None, None, "basic"]
    [null] = check_values(read, schema, str(END))
    assert null.column == "tier" and "row 3" in null.message, null.message
    [batch] = read_batches(path, "parquet", schema, hashlib.sha256(path.read_bytes()).hexdigest())
    assert batch.column(batch.schema.get_field_index("plan")).to_pylist() == ["gold", None, None, "basic"]


def test_nan_passes_where_the_schema_allows_it(data, newest, tmp_path):
    from pipelines.rawdata import read_partition_file
    from pipelines.schema import RawSchema
    from pipelines.validate import check_values

    edit_lines(newest, lambda lines: [lines[0], "NaN" + lines[1][lines[1].index(","):], *lines[2:]])
    allowing = RawSchema(tuple(dataclasses.replace(f, allow_nan=True) if f.name == "trip_miles" else f
                               for f in SCHEMA.features), SCHEMA.label)
    read = read_partition_file(newest, "csv", allowing, day=NEWEST)
    assert read.anomalies == [] and check_values(read, allowing, NEWEST) == []
    assert [a.kind for a in check_values(read_partition_file(newest, "csv", SCHEMA, day=NEWEST), SCHEMA, NEWEST)
            ] == ["nan_values"]


@pytest.mark.parametrize("fault", ["wrong_type", "hex", "malformed_row"])
def test_one_validate_names_a_type_error_and_the_other_columns_value_errors(data, good, newest, taxi_config, fault):
    """A type error (or a malformed row) refuses the file, but the values of the columns that read cleanly are
    still checked in the same pass: a user used to fix the type error and learn only then of the rest."""
    def edit(lines):
        fields = lines[3].split(",")
        fields[2] = {"wrong_type": "12 s", "hex": "0x1F"}.get(fault, fields[2])  # trip_seconds (int)
        lines[3] = ",".join(fields) if fault != "malformed_row" else ",".join(fields[:5]) + "\n"
        for n, index, cell in ((5, 3, ""), (6, 1, "nan"), (7, 0, "900.5")):  # pickup_hour, fare, trip_miles
            fields = lines[n].split(",")
            fields[index] = cell
            lines[n] = ",".join(fields)
        return lines

    edit_lines(newest, edit)
    message, anomalies = failed(taxi_config, data, good)
    assert ids(anomalies) >= {"null_values:pickup_hour", "nan_values:fare", "out_of_domain:trip_miles"}
    assert {"wrong_type:trip_seconds"} <= ids(anomalies) if fault != "malformed_row" else \
        any(a["kind"] == "malformed_row" for a in anomalies)
    assert "column 'pickup_hour' has 1 missing value(s) but is not nullable: line 6" in message
    assert "column 'fare' has 1 NaN or infinite value(s): line 7 'nan'" in message
    assert "column 'trip_miles' has 1 value(s) above its maximum 500.0: line 8 900.5" in message


def test_a_repeated_header_is_not_also_reported_as_values_outside_a_domain(data, good, newest, taxi_config):
    edit_lines(newest, lambda lines: [*lines[:4], lines[0], *lines[4:]])
    _, anomalies = failed(taxi_config, data, good)
    assert [a["kind"] for a in anomalies] == ["repeated_header"]


def test_nulls_in_a_non_nullable_column_name_file_day_and_count(data, good, newest, taxi_config):
    def edit(lines):
        for n in (2, 5, 6):
            fields = lines[n].split(",")
            fields[3] = ""  # pickup_hour
            lines[n] = ",".join(fields)
        return lines

    edit_lines(newest, edit)
    message, anomalies = failed(taxi_config, data, good)
    assert ids(anomalies) == {"null_values:pickup_hour"}
    assert f"{newest}: column 'pickup_hour' has 3 missing value(s) but is not nullable: lines 3, 6, 7. Fill them" in message
    assert anomalies[0]["day"] == NEWEST and anomalies[0]["lines"] == [3, 6, 7]


def test_truncated_file_names_the_cut_line(data, good, newest, taxi_config):
    text = newest.read_bytes()
    newest.write_bytes(text[: text.rindex(b",", 0, len(text) // 2)])  # cut mid-row
    message, anomalies = failed(taxi_config, data, good)
    [bad] = [a for a in anomalies if a["kind"] == "malformed_row"]
    assert bad["lines"] == [text[: len(text) // 2].count(b"\n") + 1]
    assert "do not have the header's 12 columns (a truncated or corrupted file?)" in message


def with_blank_lines_and_a_quoted_newline(lines: list[str]) -> tuple[list[str], list[int]]:
    """Two blank lines after line 3 and a company name holding a newline on line 5 (a record of two lines):
    the edited records and the physical line each starts on."""
    fields = lines[4].split(",")
    fields[6] = '"Acme\nTaxi"'  # company
    lines = [*lines[:3], "\n", "\n", *lines[3:4], ",".join(fields), *lines[5:]]
    starts = np.cumsum([1] + [line.count("\n") for line in lines])[:-1]
    return lines, starts.tolist()


def test_lines_are_physical_after_blank_lines_and_quoted_newlines(data, good, newest, taxi_config):
    """pyarrow numbers records, not lines: a malformed row and a wrong cell after blank lines and a quoted
    newline are named by the line a person finds them on."""
    lines, starts = with_blank_lines_and_a_quoted_newline(newest.read_text().splitlines(keepends=True))
    fields = lines[10].split(",")
    fields[3] = "9.5"  # pickup_hour
    lines[10] = ",".join(fields)
    lines[12] = ",".join(lines[12].split(",")[:5]) + "\n"  # cut
    newest.write_text("".join(lines))
    assert (starts[10], starts[12]) == (12, 14)  # the records' numbers are 9 and 11
    message, anomalies = failed(taxi_config, data, good)
    by_kind = {a["kind"]: a for a in anomalies}
    assert by_kind["wrong_type"]["lines"] == [12] and "not int: line 12 '9.5'" in message
    assert by_kind["malformed_row"]["lines"] == [14] and "line 14 has 5 column(s)" in message


def test_records_start_where_pyarrow_splits_them():
    """``_record_lines`` against pyarrow's own record split on random bytes of quotes, commas and every kind of
    line break: the count of records matches, and each malformed record pyarrow reports starts on our line."""
    import io
    import random
    import re

    import pyarrow.csv as pacsv

    from pipelines.rawdata import _record_lines, csv_parse_options

    rng = random.Random(0)
    alphabet = ["a", "b", ",", ",", '"', '"', "\n", "\n", "\r\n", "\r", " ", "\0"]
    checked = 0
    for _ in range(3000):
        text = "h1,h2\n" + "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 120)))
        malformed = []

        def skip(row, malformed=malformed):
            malformed.append((row.number, row.text))
            return "skip"

        try:
            table = pacsv.read_csv(io.BytesIO(text.encode()), read_options=pacsv.ReadOptions(use_threads=False),
                                   parse_options=csv_parse_options(invalid_row_handler=skip),
                                   convert_options=pacsv.ConvertOptions(column_types={"h1": pa.string(),
                                                                                      "h2": pa.string()}))
        except pa.ArrowInvalid:  # e.g. a quote left open at the end
            continue
        starts = _record_lines(text.encode())
        assert len(starts) == 1 + table.num_rows + len(malformed), repr(text)
        physical = re.split(r"\r\n|\r|\n", text)
        for number, row in malformed:
            assert physical[starts[number - 1] - 1].startswith(re.split(r"\r|\n", row)[0]), repr(text)
        checked += 1
    assert checked > 1000


def test_checks_on_the_typed_table_name_physical_lines_too(data, good, newest, taxi_config):
    lines, starts = with_blank_lines_and_a_quoted_newline(newest.read_text().splitlines(keepends=True))
    for n in (5, 20):
        fields = lines[n].split(",")
        fields[3] = ""  # pickup_hour
        lines[n] = ",".join(fields)
    newest.write_text("".join(lines))
    message, anomalies = failed(taxi_config, data, good)
    [nulls] = [a for a in anomalies if a["kind"] == "null_values"]
    assert nulls["lines"] == [starts[5], starts[20]] == [6, 22]


@pytest.mark.parametrize("bom", ["", "\ufeff"], ids=["plain", "byte-order-mark"])
def test_repeated_header_inside_a_file_is_named(data, good, newest, taxi_config, bom):
    """Also when each file had a byte order mark (two of Excel's "CSV UTF-8" files concatenated; Excel writes
    the header unquoted)."""
    def edit(lines):
        header = bom + lines[0].replace('"', "") if bom else lines[0]
        return [header, *lines[1:300], header, *lines[300:]]

    edit_lines(newest, edit)
    message, anomalies = failed(taxi_config, data, good)
    assert ids(anomalies) == {"repeated_header"}
    assert "the header is repeated inside the file at line 301" in message


@pytest.mark.parametrize("newline", [b"\n", b"\r\n", b"\r"], ids=["lf", "crlf", "cr"])
def test_non_utf8_bytes_name_the_line(data, good, newest, taxi_config, newline):
    lines = newest.read_bytes().split(b"\n")
    lines[41] = lines[41] + b"\xff"
    newest.write_bytes(newline.join(lines))
    message, anomalies = failed(taxi_config, data, good)
    assert ids(anomalies) == {"not_utf8"}
    assert "line 42: byte 0xff at offset" in message and "is not UTF-8" in message


def test_empty_file_and_header_only_partition(data, good, newest, taxi_config):
    newest.write_bytes(b"")
    message, anomalies = failed(taxi_config, data, good)
    assert ids(anomalies) == {"empty_file"} and f"{newest}: the file is empty (0 bytes" in message
    edit_lines(newest, lambda lines: lines)  # still empty
    newest.write_text(",".join(f'"{n}"' for n in SCHEMA.names) + "\n")
    message, anomalies = failed(taxi_config, data, good)
    assert ids(anomalies) == {"no_rows"} and f"partition {newest.parent} has no rows" in message


def test_out_of_domain_values_keep_their_message(data, good, newest, taxi_config):
    edit_lines(newest, lambda lines: [lines[0], lines[1].replace(',"Cash",', ',"Bitcoin",')
                                      .replace(',"Credit Card",', ',"Bitcoin",'), *lines[2:]])
    message, _ = failed(taxi_config, data, good)
    assert "column 'payment_type' has 1 value(s) outside its domain" in message and "line 2 'Bitcoin'" in message


def test_a_float32_value_on_its_bound_is_inside_the_domain(data, good, newest, taxi_config):
    def edit(lines):
        for n, value in ((2, "42.1"), (3, "41.6")):  # pickup_latitude's declared max and min
            fields = lines[n].split(",")
            fields[7] = value
            lines[n] = ",".join(fields)
        return lines

    edit_lines(newest, edit)
    assert validate(taxi_config, interval=END, data_root=str(data), artifact_root=good["art"]).anomalies == []


# -- the newest day against the reference window ----------------------------------------------

def test_category_surge_is_drift_and_new_values(data, good, newest, taxi_config):
    surge = lambda t: set_column(t, "company", [  # noqa: E731
        "Never Seen Cab 999" if i % 10 < 6 else v for i, v in enumerate(t.column("company").to_pylist())])
    rewrite(newest, surge)
    message, anomalies = failed(taxi_config, data, good)
    assert {"new_values:company", "categorical_drift:company"} <= ids(anomalies)
    assert "of rows have values never seen in the reference window 2026-11-04..2026-11-09" in message
    assert "'Never Seen Cab 999' went from 0.0% to 6" in message
    new = next(a for a in anomalies if a["id"] == "new_values:company")
    assert new["value"] > 0.55 and new["threshold"] == 0.1 and new["day"] == NEWEST


@pytest.mark.parametrize(("factor", "ratio"), [(10, "10x"), (0.01, "0.01x")])
def test_row_spike_and_drop_are_volume_anomalies(data, good, newest, taxi_config, factor, ratio):
    rewrite(newest, lambda t: pa.concat_tables([t] * factor) if factor > 1 else t.slice(0, int(t.num_rows * factor)))
    message, anomalies = failed(taxi_config, data, good)
    assert "volume" in ids(anomalies)
    assert f"{NEWEST}: {int(1000 * factor)} rows is {ratio} the median 1000 of the reference window" in message
    assert "allowed 0.5x..3.0x" in message


def test_numeric_shift_is_drift_with_both_medians(data, good, newest, taxi_config):
    rewrite(newest, lambda t: set_column(t, "trip_seconds", pc.multiply(t.column("trip_seconds"), 100)))
    message, anomalies = failed(taxi_config, data, good)
    assert "numeric_drift:trip_seconds" in ids(anomalies)
    assert "column 'trip_seconds': Jensen-Shannon divergence" in message and "exceeds 0.1 (median" in message


def test_one_class_label_day_and_window(data, good, newest, taxi_config):
    rewrite(newest, lambda t: set_column(t, "tipped", np.zeros(t.num_rows, np.int64)))
    message, anomalies = failed(taxi_config, data, good)
    assert {"one_class_label:tipped", "label_drift:tipped"} <= ids(anomalies)
    assert "every row has label '0'" in message
    for day in sorted((data / "taxi_trips").iterdir()):
        rewrite(day / "part-00000.csv", lambda t: set_column(t, "tipped", np.zeros(t.num_rows, np.int64)))
    message, anomalies = failed(taxi_config, data, good)
    assert anomalies[0]["id"] == "one_class_label_window:tipped"
    assert "a classifier cannot be trained on one class" in message


def test_null_surge_in_a_nullable_column(data, good, newest, taxi_config):
    rewrite(newest, lambda t: set_column(t, "fare", [None if i % 2 else v for i, v in
                                                     enumerate(t.column("fare").to_pylist())]))
    message, anomalies = failed(taxi_config, data, good)
    assert "null_increase:fare" in ids(anomalies) and "of rows are missing vs" in message


# -- accepting a known change, and switching checks off ---------------------------------------

def test_an_accepted_anomaly_passes_and_is_recorded(data, good, newest, taxi_config):
    rewrite(newest, lambda t: pa.concat_tables([t] * 10))
    message, _ = failed(taxi_config, data, good)
    assert "--accept-anomaly volume" in message
    result = validate(taxi_config, interval=END, data_root=str(data), artifact_root=good["art"], accept=["volume"])
    assert result.accepted == ["volume"] and [a["id"] for a in result.anomalies] == ["volume"]
    assert Run(good["art"], "taxi", END).read_result("validate")["accepted"] == ["volume"]


def test_errors_in_the_data_cannot_be_accepted():
    with pytest.raises(ValueError, match="'nan_values' is an error in the data, which cannot be accepted"):
        parse_accepted(["nan_values:fare"])
    with pytest.raises(ValueError, match="'volumes' is not an anomaly kind"):
        parse_accepted(["volumes"])
    assert parse_accepted(["volume,new_values:company", " categorical_drift "]) == (
        "volume", "new_values:company", "categorical_drift")


def test_a_check_switched_off_per_feature(data, good, newest, taxi_config, tmp_path):
    rewrite(newest, lambda t: set_column(t, "trip_seconds", pc.multiply(t.column("trip_seconds"), 3)))
    assert "numeric_drift:trip_seconds" in ids(failed(taxi_config, data, good)[1])
    text = taxi_config.source.read_text() + "\n[validation.features.trip_seconds]\nnumeric_drift = false\n"
    source = tmp_path / "config.toml"
    source.write_text(text)
    relaxed = load_model_config(source)
    assert relaxed.validation.checks("trip_seconds").numeric_drift is None
    assert relaxed.validation.checks("fare").numeric_drift == 0.1
    validate(relaxed, interval=END, data_root=str(data), artifact_root=good["art"])


# -- the generator keeps its own contract ---------------------------------------------------

@pytest.mark.slow
def test_generated_data_satisfies_its_contract_at_a_million_rows(tmp_path, taxi_config):
    from pipelines.datagen import generate_data
    from pipelines.rawdata import read_partition_file
    from pipelines.validate import check_values

    day = dt.date(2026, 11, 21)  # the day whose pickup_longitude once fell below -88.0 at 143,000 rows
    generate_data(taxi_config, data_root=str(tmp_path), end=day, days=1, rows_per_day=1_000_000)
    [path] = partition_files(tmp_path / "taxi_trips" / f"dt={day}", "csv")
    read = read_partition_file(path, "csv", SCHEMA, day=str(day))
    assert read.anomalies == [] and read.table.num_rows == 1_000_000
    assert check_values(read, SCHEMA, str(day)) == []


def test_a_daily_run_reuses_unchanged_days_statistics(data, tmp_path, taxi_config, monkeypatch):
    import pipelines.validate as validate_module

    art = tmp_path / "art"
    validate(taxi_config, interval=END - dt.timedelta(days=1), data_root=str(data), artifact_root=art)
    computed = []
    real = validate_module.partition_statistics
    monkeypatch.setattr(validate_module, "partition_statistics", lambda t, s: computed.append(t.num_rows) or real(t, s))
    first = validate(taxi_config, interval=END, data_root=str(data), artifact_root=art)
    assert computed == [1000]  # only the new day; the 6 days shared with yesterday's window are reused
    older = data / "taxi_trips" / "dt=2026-11-06" / "part-00000.csv"
    rewrite(older, lambda t: t.slice(0, 900))  # a corrected file: its day is recomputed, never reused
    computed.clear()
    again = validate(taxi_config, interval=END, data_root=str(data), artifact_root=art)
    assert computed == [900] and again.rows["2026-11-06"] == 900 and first.rows["2026-11-06"] == 1000
    assert read_json(again.statistics)["days"]["2026-11-06"]["rows"] == 900


def test_parquet_partitions_pass_the_same_gate(tmp_path, taxi_config):
    """The second input format: a clean window passes; NaN is named by row, a string column by its type."""
    import pyarrow.parquet as pq

    from pipelines.datagen import generate_data

    config = dataclasses.replace(taxi_config, data=dataclasses.replace(taxi_config.data, format="parquet"))
    generate_data(config, data_root=str(tmp_path / "data"), end=END, days=8, rows_per_day=500, fmt="parquet")
    assert validate(config, interval=END, data_root=str(tmp_path / "data"), artifact_root=tmp_path / "a").anomalies == []
    path = tmp_path / "data" / "taxi_trips" / f"dt={NEWEST}" / "part-00000.parquet"
    table = pq.read_table(path)
    miles = table.column("trip_miles").to_pylist()
    miles[4] = float("nan")
    pq.write_table(set_column(table, "trip_miles", miles), path)
    with pytest.raises(DataValidationError, match=r"column 'trip_miles' has 1 NaN or infinite value\(s\): row 5 nan"):
        validate(config, interval=END, data_root=str(tmp_path / "data"), artifact_root=tmp_path / "a")
    fare = table.column("fare").to_pylist()
    fare[2] = float("inf")  # checked in the same pass as the other column's type
    pq.write_table(set_column(table.set_column(0, "trip_miles", pa.array([str(m) for m in miles])), "fare", fare),
                   path)
    with pytest.raises(DataValidationError) as err:
        validate(config, interval=END, data_root=str(tmp_path / "data"), artifact_root=tmp_path / "a")
    assert "column 'trip_miles' has type string in the file, which does not" in str(err.value)
    assert "column 'fare' has 1 NaN or infinite value(s): row 3 inf" in str(err.value)


def test_parquet_columns_of_the_wrong_kind_are_named_with_their_rows(tmp_path, taxi_config):
    """A user trial: a bool or timestamp column for an int feature was cast silently (True -> 1, a timestamp to its
    epoch count), caught only by a min/max if any; a cast that failed named no row."""
    import pyarrow.parquet as pq

    from pipelines.datagen import generate_data

    config = dataclasses.replace(taxi_config, data=dataclasses.replace(taxi_config.data, format="parquet"))
    generate_data(config, data_root=str(tmp_path / "data"), end=END, days=8, rows_per_day=500, fmt="parquet")
    path = tmp_path / "data" / "taxi_trips" / f"dt={NEWEST}" / "part-00000.parquet"
    table = pq.read_table(path)
    n = table.num_rows
    seconds = [float(v) if v is not None else None for v in table.column("trip_seconds").to_pylist()]
    seconds[3], seconds[7] = 12.5, float("nan")
    hours = ["7"] * n
    hours[1], hours[5] = "seven", "0x10"  # pyarrow casts the text 0x10 to 16
    edited = (table.set_column(table.schema.get_field_index("pickup_day_of_week"), "pickup_day_of_week",
                               pa.array([i % 2 == 0 for i in range(n)]))
              .set_column(table.schema.get_field_index("trip_seconds"), "trip_seconds", pa.array(seconds, pa.float64()))
              .set_column(table.schema.get_field_index("pickup_hour"), "pickup_hour", pa.array(hours)))
    pq.write_table(edited, path)
    with pytest.raises(DataValidationError) as err:
        validate(config, interval=END, data_root=str(tmp_path / "data"), artifact_root=tmp_path / "a")
    message = str(err.value)
    assert ("column 'pickup_day_of_week' has type bool in the file, which does not convert to int: a bool column "
            "holds no ints") in message
    assert ("column 'trip_seconds' has type double in the file, which does not convert to int: 2 value(s) that are "
            "not int: rows 4 12.5, 8 nan") in message
    assert ("column 'pickup_hour' has type string in the file, which does not convert to int: 2 value(s) that are "
            "not int: rows 2 'seven', 6 '0x10'") in message


def test_a_utf8_byte_order_mark_is_read_as_pyarrow_reads_it(data, newest, tmp_path, taxi_config):
    """Excel's "CSV UTF-8" starts with a byte order mark. pyarrow, which transform reads with, skips it; the
    header check read it as part of the first column's name ('\\ufefftrip_miles' missing, invisibly)."""
    from pipelines.rawdata import read_batches
    from pipelines.storage import file_digest

    plain = read_files([newest], "csv", SCHEMA)
    newest.write_bytes(b"\xef\xbb\xbf" + newest.read_bytes())
    result = validate(taxi_config, interval=END, data_root=str(data), artifact_root=tmp_path / "art")
    assert result.anomalies == []
    batches = list(read_batches(newest, "csv", SCHEMA, file_digest(newest)))
    assert pa.Table.from_batches(batches).to_pydict() == plain.to_pydict()
