"""pipelines.preprocessing: a nullable column densified per row, also when every row of a batch misses it."""

import tensorflow as tf

from pipelines.preprocessing import fill, present


def test_fill_and_present_with_some_and_with_no_values():
    some = tf.SparseTensor(indices=[[1, 0]], values=[2.5], dense_shape=[3, 1])
    assert fill(some, -1.0).numpy().tolist() == [-1.0, 2.5, -1.0]
    assert present(some).numpy().tolist() == [0.0, 1.0, 0.0]
    # a request where every row misses the feature: parse_example gives dense shape [batch, 0]
    none = tf.SparseTensor(indices=tf.zeros([0, 2], tf.int64), values=tf.zeros([0], tf.float32), dense_shape=[2, 0])
    assert fill(none, 7.0).numpy().tolist() == [7.0, 7.0]
    assert present(none).numpy().tolist() == [0.0, 0.0]
