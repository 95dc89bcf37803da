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


def test_the_model_reads_an_empty_string_as_missing_and_refuses_it_where_a_value_is_needed():
    """Training reads an empty cell as missing (CSV, and Parquet's empty strings): every exported signature reads
    "" so too (a user trial's client sent a CSV row's empty cell as "", which was served as an unknown value)."""
    import pytest
    import tensorflow as tf

    from pipelines.tf_schema import feature_spec, value_checks

    features = (Feature("plan", "string"), Feature("tier", "string", nullable=False))

    def example(**values) -> bytes:
        return tf.train.Example(features=tf.train.Features(feature={
            k: tf.train.Feature(bytes_list=tf.train.BytesList(value=[v.encode()])) for k, v in values.items()})
        ).SerializeToString()

    def checked(rows):
        return value_checks(tf.io.parse_example(tf.constant(rows), feature_spec(features)), features)

    plan = checked([example(plan="", tier="a"), example(tier="b"), example(plan="gold", tier="c")])["plan"]
    assert plan.indices.numpy().tolist() == [[2, 0]] and plan.values.numpy().tolist() == [b"gold"]
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"(?s)feature tier is an empty string, which training reads "
                                                             r"as a missing value.*rows \(from 0\):.*\b1\b"):
        checked([example(tier="a"), example(plan="gold", tier="")])
