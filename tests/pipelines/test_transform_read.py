"""Transform reads CSV partitions with pyarrow (as validate does) into exactly the RecordBatches TFXIO's own CSV
source makes of them, and only the bytes validate checked."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pyarrow as pa
import pytest

from pipelines.schema import Feature, RawSchema

SCHEMA = RawSchema(features=(
    Feature("fare", "float"), Feature("trips", "int"), Feature("company", "string"),
    Feature("tips", "float", allow_nan=True), Feature("label", "int", nullable=False),
), label="label")
# empty cells in every column; strings TFXIO keeps as strings (NA, null, quoted commas and quotes, non-ASCII);
# floats Python's float() reads (nan, NAN, inf, -Infinity, 1e400, 1e-50 under float32's range, 0.1, exponents),
# rounded to a double first: the last row's fare is 1.0 so, 1.0000001 parsed straight to float32
CSV = '''fare,extra,trips,company,tips,label
0.1,x,3,Blue Cab,nan,1
,y,,,,0
1e400,,-7,NA,NAN,1
3.4028235677973366e38,z,9223372036854775807,null,inf,0
-1.5E-3,,0,"Quoted, comma",-Infinity,1
1e-50,,12,"say ""hi""",16777217,0
12.3456789012345,,,Zürich Taxi,,1
1.00000005960464477625798673798840354720,,1,a,,0
'''


def tfxio_batches(path: Path, schema: RawSchema) -> tuple[pa.Table, pa.Schema]:
    """The file as tfxio.CsvTFXIO reads it (the source transform used to read with), and its Arrow schema."""
    import apache_beam as beam
    from tfx_bsl.public import tfxio

    from pipelines.tf_schema import tfmd_schema

    source = tfxio.CsvTFXIO(file_pattern=str(path), column_names=CSV.splitlines()[0].split(","),
                            schema=tfmd_schema(schema), skip_header_lines=1)
    out = path.parent / "tfxio"
    out.mkdir()

    def write(batch):  # Beam runs a pickled copy of this: the batches come back through files
        import uuid

        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_batches([batch]), out / f"{uuid.uuid4()}.parquet")

    with beam.Pipeline() as pipeline:
        _ = pipeline | source.BeamSource() | beam.Map(write)
    import pyarrow.parquet as pq

    return pa.concat_tables(pq.read_table(f) for f in out.iterdir()), source.ArrowSchema()


def test_csv_rows_reach_tft_as_tfxio_decodes_them(tmp_path):
    from pipelines.rawdata import read_batches
    from pipelines.schema import to_tfxio_batch

    path = tmp_path / "part-00000.csv"
    path.write_text(CSV, encoding="utf-8")
    want, arrow_schema = tfxio_batches(path, SCHEMA)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    got = pa.Table.from_batches([to_tfxio_batch(b, SCHEMA.features).cast(arrow_schema)
                                 for b in read_batches(path, "csv", SCHEMA, digest, block_bytes=64)])
    assert got.num_rows == want.num_rows == len(CSV.splitlines()) - 1
    assert rows(got) == rows(want)
    assert got.schema == want.select(got.column_names).schema
    assert got.column("fare").to_pylist()[1] is None  # an empty cell: a null list, not an empty one


def rows(table: pa.Table) -> list[tuple[str, ...]]:
    """The rows as text (float32 values as Python floats; NaN is not equal to itself), sorted: Beam may give
    TFXIO's batches in any order."""
    return sorted(zip(*([repr(v) for v in table.column(name).to_pylist()] for name in SCHEMA.names), strict=True))


def test_a_file_changed_after_validate_fails_transform_naming_it(tmp_path):
    from pipelines.rawdata import read_batches

    path = tmp_path / "part-00000.csv"
    path.write_text(CSV, encoding="utf-8")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert sum(b.num_rows for b in read_batches(path, "csv", SCHEMA, digest)) == 8
    path.write_text(CSV.replace("0.1,x,3", "0.2,x,3"), encoding="utf-8")  # same shape, another value
    with pytest.raises(ValueError, match=f"{path}: its sha256 is [0-9a-f]{{64}}, not the {digest} validate "
                                         "checked: the file changed after validate. Run validate again"):
        list(read_batches(path, "csv", SCHEMA, digest))
    path.write_text(CSV.replace("1e400,,-7", "1e400,,seven"), encoding="utf-8")  # no longer parses
    with pytest.raises(ValueError, match=f"{path}: no longer reads as the file validate passed: .*seven"):
        list(read_batches(path, "csv", SCHEMA, digest))


def test_a_parquet_file_changed_after_validate_fails_before_any_row(tmp_path):
    import pyarrow.parquet as pq

    from pipelines.rawdata import read_batches

    path = tmp_path / "part-00000.parquet"
    table = pa.table({"fare": pa.array([1.5, None], pa.float64()), "trips": [3, None], "company": ["a", None],
                      "tips": [0.5, float("nan")], "label": [1, 0]})
    pq.write_table(table, path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    got = pa.Table.from_batches(list(read_batches(path, "parquet", SCHEMA, digest, block_bytes=8)))
    assert got.column("fare").to_pylist() == [1.5, None] and got.num_rows == 2
    pq.write_table(table.slice(0, 1), path)
    with pytest.raises(ValueError, match=f"{path}: its sha256 is [0-9a-f]{{64}}, not the {digest} validate checked"):
        next(read_batches(path, "parquet", SCHEMA, digest))


def test_parquet_is_streamed_in_batches_from_the_file_it_hashed(tmp_path):
    """Row groups come out a batch at a time (the file is not read into memory), all rows in order; a file whose
    schema column is gone is named."""
    import pyarrow.parquet as pq

    from pipelines.rawdata import read_batches

    path = tmp_path / "part-00000.parquet"
    n = 5000
    table = pa.table({"fare": pa.array([i / 4 if i % 7 else None for i in range(n)], pa.float64()),
                      "trips": list(range(n)), "company": [f"c{i % 13}" for i in range(n)],
                      "tips": [float(i) for i in range(n)], "label": [i % 2 for i in range(n)]})
    pq.write_table(table, path, row_group_size=1000)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    batches = list(read_batches(path, "parquet", SCHEMA, digest, block_bytes=4096))
    assert len(batches) > 5 and max(b.num_rows for b in batches) < n
    got = pa.Table.from_batches(batches)
    assert got.select(SCHEMA.names).equals(pq.read_table(path).select(SCHEMA.names))
    pq.write_table(table.drop_columns(["tips"]), path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    with pytest.raises(ValueError, match=f"{path}: no longer reads as the file validate passed"):
        list(read_batches(path, "parquet", SCHEMA, digest))


@pytest.mark.slow
def test_parquet_and_csv_partitions_of_the_same_rows_transform_alike(tmp_path, taxi_config):
    """The same generated rows as CSV and as Parquet, each validated and transformed: the same outputs."""
    import dataclasses

    from pipelines.datagen import generate_data
    from pipelines.transform import transform
    from pipelines.validate import validate
    from tests.conftest import END
    from tests.pipelines.test_transform_runners import assert_same_outputs

    outputs = {}
    for fmt in ("csv", "parquet"):
        config = dataclasses.replace(taxi_config, data=dataclasses.replace(taxi_config.data, format=fmt))
        data, art = tmp_path / fmt / "data", tmp_path / fmt / "artifacts"
        generate_data(config, data_root=str(data), end=END, days=7, rows_per_day=700, fmt=fmt)
        validate(config, interval=END, data_root=str(data), artifact_root=art)
        outputs[fmt] = Path(transform(config, interval=END, artifact_root=art).transform_fn).parent
    assert_same_outputs(outputs["csv"], outputs["parquet"])


def test_a_renamed_column_after_validate_is_refused_naming_the_file(tmp_path):
    from pipelines.rawdata import read_batches

    path = tmp_path / "part-00000.csv"
    path.write_text(CSV.replace("fare,extra", "fares,extra", 1), encoding="utf-8")
    with pytest.raises(ValueError, match=f"{path}: no longer reads as the file validate passed: .*'fare'"):
        list(read_batches(path, "csv", SCHEMA, "0" * 64))


@pytest.mark.parametrize("block_bytes", [40, 64, 4 << 20])  # 40: a block ends inside "Blue\nCab"
def test_a_quoted_newline_reads_alike_in_validate_and_transform_wherever_blocks_end(tmp_path, block_bytes):
    from pipelines.rawdata import read_batches, read_partition_file

    path = tmp_path / "part-00000.csv"
    path.write_text('fare,trips,company,tips,label\n1.5,2,"Blue\nCab",0.5,1\n2.5,3,"Red ""Cab""",,0\n', encoding="utf-8")
    read = read_partition_file(path, "csv", SCHEMA, day="2026-11-22")
    assert read.anomalies == [] and read.table is not None
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    got = pa.Table.from_batches(list(read_batches(path, "csv", SCHEMA, digest, block_bytes=block_bytes)))
    assert got.to_pylist() == read.table.to_pylist()
    assert got.column("company").to_pylist() == ["Blue\nCab", 'Red "Cab"']
