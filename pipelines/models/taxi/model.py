"""Taxi model: TFT ``preprocessing_fn`` and the tf_keras model on its outputs.

Both read the feature contract in ``features.py``; nothing else computes features.
"""

from __future__ import annotations

import tensorflow as tf
import tensorflow_transform as tft
import tf_keras

from pipelines.models.taxi import features as F
from pipelines.preprocessing import fill, present


def preprocessing_fn(inputs: dict) -> dict:
    outputs = {}
    for key in F.DENSE_FLOAT_FEATURES:
        values = tf.cast(inputs[key], tf.float32)  # trip_seconds is an int column
        # impute with the training-window mean of present values, so a missing value has z-score 0
        filled = fill(values, tft.mean(values.values, name=f"mean_{key}"))
        outputs[F.transformed_name(key)] = tft.scale_to_z_score(filled, name=f"zscore_{key}")
        outputs[F.missing_name(key)] = 1.0 - present(values)
    for key in F.BUCKET_FEATURES:
        filled = fill(inputs[key], tft.mean(inputs[key].values, name=f"mean_{key}"))
        outputs[F.transformed_name(key)] = tft.bucketize(filled, F.BUCKET_COUNT, name=f"bucketize_{key}")
    for key, size in F.IDENTITY_FEATURES.items():
        outputs[F.transformed_name(key)] = tf.clip_by_value(inputs[key], 0, size - 1)
    for key, (top_k, oov, min_count) in F.VOCAB_FEATURES.items():
        outputs[F.transformed_name(key)] = tft.compute_and_apply_vocabulary(
            fill(inputs[key], F.MISSING_STRING),
            top_k=top_k,
            num_oov_buckets=oov,
            frequency_threshold=min_count,
            vocab_filename=key,
            name=f"vocab_{key}",
        )
    outputs[F.transformed_name(F.LABEL_KEY)] = tf.cast(inputs[F.LABEL_KEY], tf.float32)
    return outputs


def categorical_sizes(tf_transform_output) -> dict[str, int]:
    """Number of distinct ids per categorical transformed feature."""
    sizes = {F.transformed_name(k): n for k, n in F.IDENTITY_FEATURES.items()}
    for key in (*F.BUCKET_FEATURES, *F.VOCAB_FEATURES):
        name = F.transformed_name(key)
        sizes[name] = tf_transform_output.num_buckets_for_transformed_feature(name)
    return sizes


def build_model(tf_transform_output, *, learning_rate: float) -> tf_keras.Model:
    inputs: dict[str, tf_keras.Input] = {}
    encoded = []
    for key in F.DENSE_FLOAT_FEATURES:
        for name in (F.transformed_name(key), F.missing_name(key)):
            inputs[name] = tf_keras.Input(shape=(), name=name, dtype=tf.float32)
            encoded.append(tf_keras.layers.Reshape((1,))(inputs[name]))
    for name, size in categorical_sizes(tf_transform_output).items():
        inputs[name] = tf_keras.Input(shape=(), name=name, dtype=tf.int64)
        if size > 32:
            encoded.append(tf_keras.layers.Embedding(size, 8, name=f"{name}_embedding")(inputs[name]))
        else:
            encoded.append(tf_keras.layers.CategoryEncoding(size, output_mode="one_hot")(
                tf_keras.layers.Reshape((1,))(inputs[name])))
    x = tf_keras.layers.concatenate(encoded)
    x = tf_keras.layers.Dense(64, activation="relu")(x)
    x = tf_keras.layers.Dense(32, activation="relu")(x)
    # float32 output keeps the probability exact under a mixed-precision policy
    output = tf_keras.layers.Dense(1, activation="sigmoid", name="probability", dtype="float32")(x)
    model = tf_keras.Model(inputs=inputs, outputs=output)
    model.compile(
        optimizer=tf_keras.optimizers.Adam(learning_rate),
        loss=tf_keras.losses.BinaryCrossentropy(),
        metrics=[tf_keras.metrics.AUC(name="auc"), tf_keras.metrics.BinaryAccuracy(name="accuracy")],
    )
    return model
