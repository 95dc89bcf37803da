"""Helpers for ``preprocessing_fn`` (TensorFlow): nullable raw columns into dense per-row tensors.

A nullable raw column reaches ``preprocessing_fn`` as a ``[batch, 1]`` SparseTensor with zero or one value
per row. Densify it with these, inside the TFT graph (so serving fills exactly as training did). The dense
shape is set to ``[batch, 1]`` explicitly: a request in which every row misses the feature has a dense
shape ``[batch, 0]``, and code that takes ``[:, 0]`` of it fails on exactly those requests.
"""

from __future__ import annotations

import tensorflow as tf


def fill(x: tf.sparse.SparseTensor, default) -> tf.Tensor:
    """The column as ``[batch]``, ``default`` where a row has no value (e.g. a ``tft.mean`` or a marker string)."""
    dense = tf.sparse.to_dense(tf.SparseTensor(x.indices, x.values, [x.dense_shape[0], 1]), default)
    return tf.squeeze(dense, axis=1)


def present(x: tf.sparse.SparseTensor) -> tf.Tensor:
    """1.0 where a row has a value, 0.0 where it is missing; ``[batch]``: a missing-value indicator."""
    ones = tf.SparseTensor(x.indices, tf.ones_like(x.values, tf.float32), [x.dense_shape[0], 1])
    return tf.squeeze(tf.sparse.to_dense(ones), axis=1)
