"""preprocessing_fn on rows in memory, with real TFT on Beam's DirectRunner."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa
import pytest

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def transformed(tmp_path_factory):
    """Analyze on 600 generated rows plus one row with every nullable feature missing; transform
    those rows and a second batch holding values the analyzers never saw."""
    import tensorflow_transform.beam as tft_beam
    from tfx_bsl.tfxio import tensor_adapter, tensor_representation_util

    from pipelines.models.taxi import features as F
    from pipelines.models.taxi import model as M
    from pipelines.models.taxi.datagen import generate_day
    from pipelines.schema import to_tfxio_batch
    from pipelines.tf_schema import tfmd_schema

    table = generate_day(dt.date(2026, 11, 3), 600, np.random.default_rng(1), 306)
    blank = {f.name: [None] for f in F.SCHEMA.features if f.nullable}
    blank.update(pickup_hour=[30], pickup_day_of_week=[2], tipped=[1])
    table = pa.concat_tables([table, pa.table(blank).select(F.SCHEMA.names).cast(F.SCHEMA.arrow_schema())])
    unseen = pa.table({
        **{name: table.column(name).slice(0, 2) for name in F.SCHEMA.names},
        "company": pa.array(["Never Seen Cab Co", None]),
        "payment_type": pa.array(["Barter", "Cash"]),
    }).select(F.SCHEMA.names)

    analyze = to_tfxio_batch(table, F.SCHEMA.features)
    reps = tensor_representation_util.InferTensorRepresentationsFromSchema(tfmd_schema(F.SCHEMA))
    config = tensor_adapter.TensorAdapterConfig(analyze.schema, reps)
    with tft_beam.Context(temp_dir=str(tmp_path_factory.mktemp("tft"))):
        (train_out, _), transform_fn = ([analyze], config) | tft_beam.AnalyzeAndTransformDataset(
            M.preprocessing_fn, output_record_batches=True
        )
        unseen_out, _ = (([to_tfxio_batch(unseen, F.SCHEMA.features)], config), transform_fn) | (
            tft_beam.TransformDataset(output_record_batches=True)
        )
        out_dir = tmp_path_factory.mktemp("tft_out")
        _ = transform_fn | tft_beam.WriteTransformFn(str(out_dir))

    def columns(batches):
        rb = pa.Table.from_batches([b for b, _ in batches])
        return {name: np.array([v[0] for v in rb.column(name).to_pylist()]) for name in rb.column_names}

    return table, columns(train_out), columns(unseen_out), out_dir


def test_z_score_and_missing_numeric(transformed):
    from pipelines.models.taxi import features as F

    raw, out, _, _ = transformed
    for key in F.DENSE_FLOAT_FEATURES:
        z, missing = out[F.transformed_name(key)], out[F.missing_name(key)]
        assert abs(z.mean()) < 1e-4 and abs(z.std() - 1) < 1e-2, key
        is_null = raw.column(key).is_null().to_numpy(zero_copy_only=False)
        np.testing.assert_array_equal(missing, is_null.astype(np.float32))
        # imputed with the mean of present values, so a missing value sits at z = 0
        np.testing.assert_allclose(z[is_null], 0.0, atol=1e-5)
        assert is_null[-1]


def test_vocabulary_oov_and_rare_values(transformed):
    import tensorflow_transform as tft

    from pipelines.models.taxi import features as F

    raw, out, unseen, out_dir = transformed
    tft_out = tft.TFTransformOutput(str(out_dir))
    vocab = [v.decode() for v in tft_out.vocabulary_by_name("company")]
    top_k, oov_buckets, min_count = F.VOCAB_FEATURES["company"]
    counts = {}
    for value in raw.column("company").to_pylist():
        counts[value or F.MISSING_STRING] = counts.get(value or F.MISSING_STRING, 0) + 1
    assert set(vocab) == {v for v, n in counts.items() if n >= min_count}
    assert F.MISSING_STRING in vocab  # a missing company is its own token, not a silent default
    ids = out[F.transformed_name("company")]
    names = [v or F.MISSING_STRING for v in raw.column("company").to_pylist()]
    for name, idx in zip(names, ids, strict=True):
        if name in vocab:
            assert idx == vocab.index(name)
        else:  # rare values share the OOV buckets after the vocabulary
            assert len(vocab) <= idx < len(vocab) + oov_buckets
    assert tft_out.num_buckets_for_transformed_feature(F.transformed_name("company")) == len(vocab) + oov_buckets

    unseen_company = unseen[F.transformed_name("company")]
    assert len(vocab) <= unseen_company[0] < len(vocab) + oov_buckets
    assert unseen_company[1] == vocab.index(F.MISSING_STRING)
    payments = [v.decode() for v in tft_out.vocabulary_by_name("payment_type")]
    assert unseen[F.transformed_name("payment_type")][0] == len(payments)  # one OOV bucket
    assert unseen[F.transformed_name("payment_type")][1] == payments.index("Cash")


def test_buckets_identity_and_label(transformed):
    from pipelines.models.taxi import features as F

    raw, out, _, _ = transformed
    for key in F.BUCKET_FEATURES:
        buckets = out[F.transformed_name(key)]
        assert buckets.min() >= 0 and buckets.max() <= F.BUCKET_COUNT - 1
        assert len(np.unique(buckets)) >= F.BUCKET_COUNT - 2, key
    hours = out[F.transformed_name("pickup_hour")]
    assert hours.max() <= 23 and hours[-1] == 23  # out-of-range hour 30 is clipped, never an invalid id
    np.testing.assert_array_equal(out[F.transformed_name("tipped")], raw.column("tipped").to_numpy())
