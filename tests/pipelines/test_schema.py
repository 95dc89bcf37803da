import pyarrow as pa

from pipelines.schema import Feature, to_tfxio_batch


def test_to_tfxio_batch_turns_nulls_into_null_lists_as_csv_tfxio_does():
    features = (Feature("x", "float"), Feature("s", "string"), Feature("n", "int", nullable=False))
    table = pa.table({"x": pa.array([1.5, None, 3.0], pa.float32()), "s": ["a", None, "c"], "n": [1, 2, 3]})
    batch = to_tfxio_batch(table, features)
    assert batch.column("x").to_pylist() == [[1.5], None, [3.0]]
    assert batch.column("s").to_pylist() == [[b"a"], None, [b"c"]]
    assert batch.column("n").to_pylist() == [[1], [2], [3]]
    assert batch.schema.field("s").type == pa.large_list(pa.large_binary())
