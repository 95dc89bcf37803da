"""Penguin species: TFT ``preprocessing_fn`` and a small softmax classifier (one score per species)."""

from __future__ import annotations

import tensorflow as tf
import tensorflow_transform as tft
import tf_keras

from pipelines.models.penguins import features as F
from pipelines.preprocessing import fill


def preprocessing_fn(inputs: dict) -> dict:
    outputs = {}
    for key in F.NUMERIC_FEATURES:
        filled = fill(inputs[key], tft.mean(inputs[key].values, name=f"mean_{key}"))
        outputs[F.transformed_name(key)] = tft.scale_to_z_score(filled, name=f"zscore_{key}")
    for key in F.CATEGORICAL_FEATURES:
        outputs[F.transformed_name(key)] = tft.compute_and_apply_vocabulary(
            fill(inputs[key], F.MISSING), num_oov_buckets=1, vocab_filename=key, name=f"vocab_{key}")
    # the label's class ids: its own vocabulary, which names the served classes ([task] label_vocabulary). Ordered
    # by a hash of each name, not by frequency: the class ids stay the same whatever the day's counts
    outputs[F.transformed_name(F.LABEL_KEY)] = tft.compute_and_apply_vocabulary(
        inputs[F.LABEL_KEY], vocab_filename=F.LABEL_KEY, fingerprint_shuffle=True, name="vocab_species")
    return outputs


def build_model(tf_transform_output, *, learning_rate: float) -> tf_keras.Model:
    inputs, encoded = {}, []
    for key in F.NUMERIC_FEATURES:
        name = F.transformed_name(key)
        inputs[name] = tf_keras.Input(shape=(), name=name, dtype=tf.float32)
        encoded.append(tf_keras.layers.Reshape((1,))(inputs[name]))
    for key in F.CATEGORICAL_FEATURES:
        name = F.transformed_name(key)
        size = tf_transform_output.num_buckets_for_transformed_feature(name)
        inputs[name] = tf_keras.Input(shape=(), name=name, dtype=tf.int64)
        encoded.append(tf_keras.layers.CategoryEncoding(size, output_mode="one_hot")(
            tf_keras.layers.Reshape((1,))(inputs[name])))
    classes = tf_transform_output.vocabulary_size_by_name(F.LABEL_KEY)
    x = tf_keras.layers.Dense(32, activation="relu")(tf_keras.layers.concatenate(encoded))
    scores = tf_keras.layers.Dense(classes, activation="softmax", name="scores", dtype="float32")(x)
    model = tf_keras.Model(inputs=inputs, outputs=scores)
    model.compile(optimizer=tf_keras.optimizers.Adam(learning_rate),
                  loss=tf_keras.losses.SparseCategoricalCrossentropy(),
                  metrics=[tf_keras.metrics.SparseCategoricalAccuracy(name="accuracy")])
    return model
