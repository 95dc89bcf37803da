"""The streamed training input (data over ``[train] in_memory_max_mb``): every row once per epoch in batches of
the asked size, reshuffled each epoch, its parsed blocks cached on disk after the first; no cache when the disk
cannot hold it."""

from __future__ import annotations

import logging

import pytest

pytestmark = pytest.mark.slow
ROWS = 1_000


@pytest.fixture
def records(tmp_path):
    import tensorflow as tf

    path = tmp_path / "part-00000.tfrecord"
    with tf.io.TFRecordWriter(str(path)) as writer:
        for i in range(ROWS):
            example = tf.train.Example(features=tf.train.Features(feature={
                "row": tf.train.Feature(int64_list=tf.train.Int64List(value=[i])),
                "x": tf.train.Feature(float_list=tf.train.FloatList(value=[i / 10])),
                "label": tf.train.Feature(float_list=tf.train.FloatList(value=[i % 2])),
            }))
            writer.write(example.SerializeToString())
    spec = {"row": tf.io.FixedLenFeature([], tf.int64), "x": tf.io.FixedLenFeature([], tf.float32),
            "label": tf.io.FixedLenFeature([], tf.float32)}
    return str(tmp_path / "part-*.tfrecord"), spec


def epoch(dataset) -> tuple[list[int], list[int]]:
    """The rows of one pass in order, and the batch sizes."""
    rows, sizes = [], []
    for features, labels in dataset:
        assert abs(features["x"].numpy() - features["row"].numpy() / 10).max() < 1e-4  # a row's columns stay together
        assert (labels.numpy() == features["row"].numpy() % 2).all()
        rows += features["row"].numpy().tolist()
        sizes.append(len(labels))
    return rows, sizes


def test_every_row_once_per_epoch_reshuffled_and_cached_after_the_first(records, tmp_path, monkeypatch):
    import tensorflow as tf

    from pipelines import train

    monkeypatch.setattr(train, "PARSE_BLOCK", 128)  # 8 blocks of the 1,000 rows
    tf.keras.utils.set_random_seed(7)
    pattern, spec = records
    cache = tmp_path / "cache" / "train"
    cache.parent.mkdir()
    dataset = train.make_dataset(pattern, spec, "label", batch_size=50, shuffle_seed=7, cache_file=str(cache))
    first, sizes = epoch(dataset)
    assert sorted(first) == list(range(ROWS)) and first != list(range(ROWS))
    assert sizes == [50] * 20  # whole batches across the blocks' edges (rebatch carries the rest over)
    assert list(cache.parent.glob("train*")), "the parsed blocks were not cached"
    (tmp_path / "part-00000.tfrecord").write_bytes(b"")  # later epochs read the cache, not the TFRecords
    second, _ = epoch(dataset)
    assert sorted(second) == list(range(ROWS)) and second != first

    unshuffled, sizes = epoch(train.make_dataset(pattern, spec, "label", batch_size=300))
    assert unshuffled == [] and sizes == []  # (the file is empty now: the uncached path reads it)


def test_validation_data_keeps_its_order(records, monkeypatch):
    from pipelines import train

    monkeypatch.setattr(train, "PARSE_BLOCK", 128)
    pattern, spec = records
    rows, sizes = epoch(train.make_dataset(pattern, spec, "label", batch_size=300))
    assert rows == list(range(ROWS)) and sizes == [300, 300, 300, 100]


def test_no_cache_when_the_disk_cannot_hold_it(tmp_path, monkeypatch, caplog):
    import shutil
    from collections import namedtuple

    import tensorflow as tf

    from pipelines import train

    spec = {"a": tf.io.FixedLenFeature([], tf.float32), "b": tf.io.FixedLenFeature([3], tf.int64),
            "s": tf.io.FixedLenFeature([], tf.string)}
    needed = train.parsed_bytes(spec, 1_000_000)
    assert needed == (4 + 3 * 8 + 64) * 1_000_000
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**12, 0, needed))
    with caplog.at_level(logging.WARNING, logger="pipelines.train"):
        assert train.input_cache_file(tmp_path, "train", needed) is None
    assert f"has {needed / 1e9:.1f} GB free" in caplog.text and str(tmp_path) in caplog.text
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**12, 0, 2 * needed))
    assert train.input_cache_file(tmp_path, "train", needed) == str(tmp_path / "train")
