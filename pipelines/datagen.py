"""Demo data: date partitions ``dt=YYYY-MM-DD/part-00000.{csv,parquet}`` for a model.

Each day is seeded from its date (same date -> same bytes); a model module that
ships demo data has ``datagen.generate_day(day, rows, rng, day_index)``.
"""

from __future__ import annotations

import datetime as dt
import importlib
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.config import ModelConfig
from pipelines.schema import RawSchema
from pipelines.storage import atomic_write_bytes, write_table_bytes

log = logging.getLogger(__name__)
_EPOCH = dt.date(2026, 1, 1)


@dataclass(frozen=True)
class GenerateResult:
    partitions: list[str]
    rows_per_day: int
    written: int
    unchanged: int


def within_domains(table: pa.Table, schema: RawSchema) -> pa.Table:
    """Demo data keeps its own contract at any size: numbers clipped to their declared min/max
    (a rare tail of a normal distribution must not fail validation at a million rows)."""
    for f in schema.features:
        if f.type != "string" and (f.min is not None or f.max is not None):
            column = table.column(f.name)
            if f.max is not None:
                column = pc.min_element_wise(column, pa.scalar(f.max, column.type), skip_nulls=False)
            if f.min is not None:
                column = pc.max_element_wise(column, pa.scalar(f.min, column.type), skip_nulls=False)
            index = table.schema.get_field_index(f.name)
            table = table.set_column(index, table.schema.field(index), column)
    return table


def generate_data(
    config: ModelConfig, *, data_root: str, end: dt.date, days: int, rows_per_day: int = 20_000,
    fmt: str | None = None, seed: int = 0,
) -> GenerateResult:
    if days < 1 or rows_per_day < 1:
        raise ValueError(f"days and rows_per_day must be positive (got days={days}, rows_per_day={rows_per_day})")
    fmt = fmt or config.data.format
    try:
        generator = importlib.import_module(f"{config.module}.datagen")
    except ModuleNotFoundError as exc:
        if exc.name != f"{config.module}.datagen":
            raise  # the generator is there; something it imports is not
        raise ValueError(f"model {config.name!r} ships no demo data generator ({config.module}.datagen): put its "
                         f"partitions under the data root ({config.data.location}) and run the demo with "
                         "--no-generate") from None
    written = unchanged = 0
    partitions = []
    for offset in range(days - 1, -1, -1):
        day = end - dt.timedelta(days=offset)
        rng = np.random.default_rng([seed, day.toordinal(), rows_per_day])
        table = within_domains(generator.generate_day(day, rows_per_day, rng, (day - _EPOCH).days),
                               config.features_module().SCHEMA)
        path = Path(config.partition_path(data_root, day)) / f"part-00000.{fmt}"
        payload = write_table_bytes(table, fmt)
        if path.exists() and path.read_bytes() == payload:
            unchanged += 1
        else:
            atomic_write_bytes(path, payload)
            written += 1
        partitions.append(str(path.parent))
        log.info("partition %s: %d rows (%s)", path, table.num_rows, fmt)
    return GenerateResult(partitions=partitions, rows_per_day=rows_per_day, written=written, unchanged=unchanged)
