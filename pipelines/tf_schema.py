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
