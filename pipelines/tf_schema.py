"""The raw schema in TensorFlow's terms. Imported only by steps that run TensorFlow.

Nullable columns are ``VarLenFeature`` (a ``SparseTensor`` with zero or one value
per row) so that ``preprocessing_fn`` sees missing values and fills them inside
the TFT graph: the same graph then fills them at serving time.
"""

from __future__ import annotations

import tensorflow as tf
from tensorflow_metadata.proto.v0 import schema_pb2
from tensorflow_transform.tf_metadata import schema_utils

from pipelines.schema import Feature, RawSchema

TF_DTYPES = {"int": tf.int64, "float": tf.float32, "string": tf.string}


def feature_spec(features: tuple[Feature, ...]) -> dict[str, tf.io.FixedLenFeature | tf.io.VarLenFeature]:
    return {
        f.name: tf.io.VarLenFeature(TF_DTYPES[f.type]) if f.nullable
        else tf.io.FixedLenFeature([], TF_DTYPES[f.type])
        for f in features
    }


def value_checks(raw: dict, features: tuple[Feature, ...]) -> dict:
    """``raw``, passed on only after a check that fails the model's call, naming the feature and the rows, when a
    parsed request holds a value
    the model was not trained on: NaN or infinity in a float feature, or more than one value in a row of a
    nullable one (``parse_example`` itself refuses a wrong type, and a required feature missing or with two
    values). Part of every exported serving signature, so TF Serving refuses such a request as the local
    server does, rather than answering it with a prediction made of NaN or of the first value.

    An empty string is a missing value, as training reads an empty cell (``pipelines.rawdata``): dropped from a
    nullable string feature, refused in a required one. A client that sends a CSV row's empty cell as "" is
    answered as training saw that row, not with an unknown value's bucket."""
    raw, names, bad = dict(raw), [], []
    for f in features:
        value = raw[f.name]
        if f.type == "string" and isinstance(value, tf.SparseTensor):
            value = raw[f.name] = tf.sparse.retain(value, tf.strings.length(value.values) > 0)
        elif f.type == "string":
            names.append(f"feature {f.name} is an empty string, which training reads as a missing value; the model "
                         "needs a value for it")
            bad.append(tf.equal(value, ""))
        batch = tf.shape(value, out_type=tf.int64)[0]
        if isinstance(value, tf.SparseTensor):
            rows = value.indices[:, 0]
            names.append(f"feature {f.name} has more than one value in a row; the model takes one value per row "
                         "(or none: missing)")  # (no quotes: TensorFlow prints them escaped)
            bad.append(tf.math.unsorted_segment_sum(tf.ones_like(rows), rows, batch) > 1)
            batch, values = value.dense_shape[0], value.values
        else:
            rows, values = None, value
        if f.type == "float":
            infinite = tf.logical_not(tf.math.is_finite(values))
            names.append(f"feature {f.name} is NaN or infinity, not a value the model was trained on; " + (
                "to send a missing value, leave the feature out of the tf.Example" if f.nullable else
                "the model needs a finite value for it"))
            bad.append(infinite if rows is None else tf.math.unsorted_segment_max(
                tf.cast(infinite, tf.int32), rows, batch) > 0)
    if not bad:
        return raw
    bad = tf.stack(bad, axis=1)  # [rows, checks]
    check = tf.debugging.Assert(tf.logical_not(tf.reduce_any(bad)), [
        "request refused:", tf.boolean_mask(tf.constant(names), tf.reduce_any(bad, axis=0)),
        "in rows (from 0):", tf.where(tf.reduce_any(bad, axis=1))[:, 0]], summarize=10)
    with tf.control_dependencies([check]):  # every read of a value waits for the check (a control edge on the
        # TFT layer's call alone does not hold once TensorFlow inlines the call)
        return {name: tf.SparseTensor(tf.identity(value.indices), tf.identity(value.values),
                                      tf.identity(value.dense_shape)) if isinstance(value, tf.SparseTensor)
                else tf.identity(value) for name, value in raw.items()}


def raw_feature_spec(schema: RawSchema) -> dict:
    return feature_spec(schema.features)


def serving_feature_spec(schema: RawSchema) -> dict:
    """What a serving request is parsed with: every raw feature except the label."""
    return feature_spec(schema.serving_features())


def tfmd_schema(schema: RawSchema) -> schema_pb2.Schema:
    return schema_utils.schema_from_feature_spec(raw_feature_spec(schema))


def raw_examples(table, schema: RawSchema) -> list[bytes]:
    """Raw rows (flat pyarrow columns) as the serialized tf.Examples a client sends: no label."""
    from tfx_bsl.coders.example_coder import RecordBatchToExamples

    from pipelines.schema import to_tfxio_batch

    return RecordBatchToExamples(to_tfxio_batch(table, schema.serving_features()))
