"""Raw feature schema: types and domains, TensorFlow-free.

One definition serves every reader: ``validate`` checks partitions against it
with pyarrow, ``transform`` turns it into a TFMD schema for TFXIO, and
``evaluate`` uses it to encode raw rows as tf.Examples for the serving signature.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:  # pyarrow only where columns are read: the DAG processor loads schemas at every parse
    import pyarrow as pa

FeatureType = Literal["int", "float", "string"]


@functools.cache
def _arrow_types() -> dict[str, pa.DataType]:
    import pyarrow as pa

    return {"int": pa.int64(), "float": pa.float32(), "string": pa.string()}


@functools.cache
def _tfxio_types() -> dict[str, pa.DataType]:
    """TFXIO's RecordBatch format: every column is a list; a missing value is a null list."""
    import pyarrow as pa

    return {"int": pa.large_list(pa.int64()), "float": pa.large_list(pa.float32()),
            "string": pa.large_list(pa.large_binary())}


# A number as CSV text: what training's CSV reader takes for an int64 or a float column (pyarrow's grammar, less
# hexadecimal); validate counts the cells that miss it, and the client reads a csv.DictReader row's cells by it
NUMBER_TEXT = {
    "int": r"^\s*-?[0-9]+\s*$",  # as pyarrow reads int64, less its hexadecimal (0x10) that int() refuses
    "float": r"^\s*[+-]?([0-9]+\.?[0-9]*([eE][+-]?[0-9]+)?|\.[0-9]+([eE][+-]?[0-9]+)?|nan|inf|infinity)\s*$",
}

@dataclass(frozen=True)
class Feature:
    """One raw column.

    :param name: column name in the partition files.
    :param type: ``int``, ``float`` or ``string``.
    :param nullable: whether missing values are allowed.
    :param min: smallest allowed value (numbers).
    :param max: largest allowed value (numbers).
    :param values: the allowed values (strings or ints); ``None`` means open domain.
    :param allow_nan: whether NaN and infinity (in any spelling) are valid values of a float column;
        off by default, so ``validate`` refuses them before they reach training.
    """

    name: str
    type: FeatureType
    nullable: bool = True
    min: float | None = None
    max: float | None = None
    values: tuple[str | int, ...] | None = None
    allow_nan: bool = False

    @property
    def arrow_type(self) -> pa.DataType:
        return _arrow_types()[self.type]

    @property
    def is_categorical(self) -> bool:
        """Strings, and numbers with a declared set of values: compared by value frequencies."""
        return self.type == "string" or self.values is not None


@dataclass(frozen=True)
class RawSchema:
    """The raw columns of a model's data.

    :param features: every column of the partition files.
    :param label: the label: a column, or (with ``training_only``) a name ``preprocessing_fn`` gives the
        label it derives from raw columns (e.g. ``big_tip = tips > 0.2 * fare``).
    :param training_only: columns read for training (to derive the label) that serving never takes.
    """

    features: tuple[Feature, ...]
    label: str
    training_only: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        names = [f.name for f in self.features]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate feature names in schema: {names}")
        unknown = sorted(set(self.training_only) - set(names))
        if unknown:
            raise ValueError(f"training_only names columns that are not features of the schema: {unknown}")
        if self.label not in names and not self.training_only:
            raise ValueError(f"label {self.label!r} is not a feature of the schema; a label derived in "
                             "preprocessing_fn names the raw columns it comes from in training_only")

    @property
    def label_is_column(self) -> bool:
        return self.label in self.names

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.features]

    def feature(self, name: str) -> Feature:
        for f in self.features:
            if f.name == name:
                return f
        raise KeyError(name)

    def arrow_schema(self) -> pa.Schema:
        """Flat columns as written in the partition files."""
        import pyarrow as pa

        return pa.schema([pa.field(f.name, f.arrow_type, nullable=f.nullable) for f in self.features])

    def serving_features(self) -> tuple[Feature, ...]:
        """Features a serving request carries: everything but the label and the training-only columns."""
        return tuple(f for f in self.features if f.name != self.label and f.name not in self.training_only)


# shipped inside every exported SavedModel: the raw features a request carries and which may be missing
# (TF Serving ignores assets.extra; the local server reads it to treat JSON null/NaN as missing)
RAW_FEATURES_ASSET = "assets.extra/raw_features.json"
# which request values the exported signatures refuse themselves (``tf_schema.value_checks``): the local server
# checks example by example what a version exported without them would take
SERVING_CHECKS_ASSET = "assets.extra/serving_checks.json"
SERVING_CHECKS = ["finite floats", "at most one value a row", "empty strings are missing"]
RAW_SIGNATURE = "serving_raw"  # the exported signature with one named input per raw feature (train exports it)


def describe(features: tuple[Feature, ...]) -> list[dict]:
    return [{"name": f.name, "type": f.type, "nullable": f.nullable} for f in features]


def to_tfxio_batch(table: pa.Table | pa.RecordBatch, features: tuple[Feature, ...]) -> pa.RecordBatch:
    """Flat, nullable columns -> TFXIO's list columns (a value becomes a one-value list, a missing value a
    null list, as ``tfxio.CsvTFXIO`` decodes an empty cell).

    This is the form TFT, tfx_bsl's example encoder and the TFXIO tensor adapters
    read, so every input and evaluation row enters TF exactly as CsvTFXIO's CSV rows did (a missing value
    is encoded as a tf.Example feature with no values list).
    """
    import numpy as np
    import pyarrow as pa

    arrays = []
    for f in features:
        column = table.column(f.name)
        if isinstance(column, pa.ChunkedArray):
            column = column.combine_chunks()
        column = column.cast(f.arrow_type)
        if f.type == "string":
            column = column.cast(pa.large_binary())
        valid = column.is_valid().to_numpy(zero_copy_only=False)
        offsets = pa.array(np.concatenate([[0], np.cumsum(valid)]), pa.int64())
        missing = pa.array(~valid) if column.null_count else None
        arrays.append(pa.LargeListArray.from_arrays(offsets, column.drop_null(), mask=missing)
                      .cast(_tfxio_types()[f.type]))
    return pa.RecordBatch.from_arrays(arrays, names=[f.name for f in features])
