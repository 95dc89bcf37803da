"""infer-schema: a starting contract that validates the data it came from and rejects a corrupted copy."""

import shutil
import subprocess
import sys
import types

import pytest

from pipelines.infer_schema import infer_schema, schema_from_pbtxt
from pipelines.models.taxi.features import SCHEMA
from pipelines.rawdata import read_partition_file
from pipelines.validate import check_values
from tests.conftest import END, ROOT


def problems(path, schema):
    read = read_partition_file(path, "csv", schema, day=str(END))
    return read.anomalies + check_values(read, schema, str(END))


def test_inferred_contract_validates_its_data_and_rejects_a_corrupted_copy(small_data, tmp_path):
    window = small_data / "taxi_trips"
    out = tmp_path / "features.py"
    done = subprocess.run([sys.executable, "-m", "pipelines", "infer-schema", "--data", str(window),
                           "--label", "tipped", "--out", str(out)], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    module = types.ModuleType("inferred")
    exec(compile(out.read_text(), str(out), "exec"), module.__dict__)
    schema = module.SCHEMA
    by_name = {f.name: f for f in schema.features}
    assert [f.name for f in schema.features] == SCHEMA.names and schema.label == "tipped"
    assert {n: f.type for n, f in by_name.items()} == {f.name: f.type for f in SCHEMA.features}
    assert {n for n, f in by_name.items() if not f.nullable} == {"pickup_hour", "pickup_day_of_week", "tipped"}
    assert set(by_name["payment_type"].values) <= set(SCHEMA.feature("payment_type").values)
    assert by_name["company"].values is None and by_name["tipped"].values == (0, 1)

    files = sorted(window.glob("dt=*/*.csv"))
    assert all(problems(f, schema) == [] for f in files)
    corrupt = tmp_path / "corrupt.csv"
    shutil.copy(files[-1], corrupt)
    lines = corrupt.read_text().splitlines(keepends=True)
    lines[3] = "NAN" + lines[3][lines[3].index(","):]
    lines[5] = lines[5].replace('"Cash"', '"Bitcoin"').replace('"Credit Card"', '"Bitcoin"')
    corrupt.write_text("".join(lines))
    assert {a.kind for a in problems(corrupt, schema)} == {"nan_values", "out_of_domain"}


def test_pbtxt_round_trip(small_data, tmp_path):
    from google.protobuf import text_format

    from pipelines.infer_schema import to_tfmd

    schema, _ = infer_schema(small_data / "taxi_trips", label="tipped")
    path = tmp_path / "schema.pbtxt"
    path.write_text(text_format.MessageToString(to_tfmd(schema)))
    back = schema_from_pbtxt(path, label="tipped")
    assert [(f.name, f.type, f.nullable) for f in back.features] == [(f.name, f.type, f.nullable) for f in schema.features]
    assert back.feature("payment_type").values == schema.feature("payment_type").values
    assert back.feature("fare").min == pytest.approx(schema.feature("fare").min)


def test_missing_label_is_named(small_data):
    with pytest.raises(ValueError, match="label column 'tip' is not in the data"):
        infer_schema(small_data / "taxi_trips", label="tip")


def test_out_is_never_overwritten_without_force(small_data, tmp_path):
    out = tmp_path / "features.py"
    out.write_text("# my edits\n")
    argv = [sys.executable, "-m", "pipelines", "infer-schema", "--data", str(small_data / "taxi_trips"),
            "--label", "tipped", "--out", str(out)]
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 1 and "exists (and may hold your edits); pass --force" in done.stdout
    assert out.read_text() == "# my edits\n"
    assert subprocess.run([*argv, "--force"], cwd=ROOT, capture_output=True, text=True).returncode == 0
    assert "SCHEMA = RawSchema(" in out.read_text()


def test_a_numeric_column_made_text_by_a_few_cells_gets_a_note(tmp_path):
    """One 'three' among numbers makes a column a string: the note says so and names the cells, instead of
    letting the contract silently take it as a string feature."""
    data = tmp_path / "rent.csv"
    rows = [f"{i % 6 + 1},{1000 + i},{i % 2}" for i in range(40)]
    rows[7] = "three,1007,1"
    rows[9] = "n/a,1009,1"
    data.write_text("rooms,rent,label\n" + "\n".join(rows) + "\n")
    schema, notes = infer_schema(data, label="label")
    assert schema.feature("rooms").type == "string" and schema.feature("rent").type == "int"
    [note] = [n for n in notes if "rooms" in n]
    assert note.startswith("column 'rooms' is inferred as string, but 38 of its 40 values are numbers: 2 are not "
                           "('three', 'n/a')")  # in the order they first appear
    assert not [n for n in notes if "rent" in n and "inferred as string" in n]
    # a text column is not one of them
    (tmp_path / "names.csv").write_text("name,label\n" + "\n".join(f"n{i},0" for i in range(5)) + "\n1,1\n")
    assert not [n for n in infer_schema(tmp_path / "names.csv", label="label")[1] if "inferred as string" in n]


def test_a_column_that_is_text_on_one_day_only_gets_a_note_naming_the_file(tmp_path):
    """A user trial: the README's whole-dataset command ended in pyarrow's 'Unable to merge: Field parts_count has
    incompatible types: int64 vs string', naming no file, when one day had 'n/a' in a number column. That
    column is now text in all files, and the notes name the file and the stray cells."""
    for day, bad in (("2026-12-05", None), ("2026-12-06", "n/a"), ("2026-12-07", None)):
        rows = [f"{i % 4 + 1},{i % 2}" for i in range(30)]
        if bad:
            rows[3] = f"{bad},1"
        (tmp_path / f"dt={day}").mkdir()
        (tmp_path / f"dt={day}" / "part-00000.csv").write_text("parts,label\n" + "\n".join(rows) + "\n")
    schema, notes = infer_schema(tmp_path, label="label")
    assert schema.feature("parts").type == "string"
    assert f"column 'parts' is numbers in some files and text in 1: {tmp_path / 'dt=2026-12-06' / 'part-00000.csv'}" \
        in notes
    assert [n for n in notes if n.startswith("column 'parts' is inferred as string, but 89 of its 90 values are "
                                             "numbers: 1 are not ('n/a')")]


def test_a_whole_number_float_column_with_missing_values_gets_a_note(tmp_path):
    """pandas writes an integer column with missing values as float64 to Parquet: a user trial's count of
    attachments was inferred as float without a word."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    data = tmp_path / "tickets.parquet"
    pq.write_table(pa.table({"attachments": pa.array([1.0, None, 3.0, 0.0]), "wait": [1.5, None, 2.0, 0.25],
                             "score": [1.0, 2.0, 3.0, 4.0], "label": [0, 1, 0, 1]}), data)
    schema, notes = infer_schema(data, label="label")
    assert schema.feature("attachments").type == "float"
    [note] = [n for n in notes if "whole number" in n]  # not for wait (fractions), nor score (none missing)
    assert note.startswith("column 'attachments' is inferred as float, but every value is a whole number and some "
                           "are missing")
