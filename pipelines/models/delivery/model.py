"""Delivery time: TFT ``preprocessing_fn`` and a small regression network (one value per row, minutes)."""

from __future__ import annotations

import tensorflow as tf
import tensorflow_transform as tft
import tf_keras

from pipelines.models.delivery import features as F
from pipelines.preprocessing import fill


def _dense(x) -> tf.Tensor:
    """A non-nullable column is dense already; a nullable one is filled with its training mean."""
    return fill(x, tft.mean(x.values)) if isinstance(x, tf.sparse.SparseTensor) else x


def preprocessing_fn(inputs: dict) -> dict:
    outputs = {}
    for key in F.NUMERIC_FEATURES:
        outputs[F.transformed_name(key)] = tft.scale_to_z_score(tf.cast(_dense(inputs[key]), tf.float32))
    outputs[F.transformed_name("hour")] = tf.clip_by_value(inputs["hour"], 0, 23)
    weather = fill(inputs["weather"], F.MISSING)
    outputs[F.transformed_name("weather")] = tft.compute_and_apply_vocabulary(
        weather, num_oov_buckets=1, vocab_filename="weather")
    outputs[F.transformed_name(F.LABEL_KEY)] = tf.cast(inputs[F.LABEL_KEY], tf.float32)
    return outputs


def build_model(tf_transform_output, *, learning_rate: float) -> tf_keras.Model:
    inputs, encoded = {}, []
    for key in F.NUMERIC_FEATURES:
        name = F.transformed_name(key)
        inputs[name] = tf_keras.Input(shape=(), name=name, dtype=tf.float32)
        encoded.append(tf_keras.layers.Reshape((1,))(inputs[name]))
    for key, size in (("hour", 24), ("weather", tf_transform_output.num_buckets_for_transformed_feature("weather_xf"))):
        name = F.transformed_name(key)
        inputs[name] = tf_keras.Input(shape=(), name=name, dtype=tf.int64)
        encoded.append(tf_keras.layers.CategoryEncoding(size, output_mode="one_hot")(
            tf_keras.layers.Reshape((1,))(inputs[name])))
    x = tf_keras.layers.Dense(32, activation="relu")(tf_keras.layers.concatenate(encoded))
    x = tf_keras.layers.Dense(1)(x)
    # minutes are tens: the network's unit output, scaled to the label's range, trains in a few epochs
    value = tf_keras.layers.Rescaling(scale=15.0, offset=40.0, name="value", dtype="float32")(x)
    model = tf_keras.Model(inputs=inputs, outputs=value)
    model.compile(optimizer=tf_keras.optimizers.Adam(learning_rate), loss=tf_keras.losses.Huber(delta=5.0),
                  metrics=[tf_keras.metrics.MeanAbsoluteError(name="mae")])
    return model
