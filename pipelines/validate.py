"""validate: the interval's partitions exist, are non-empty and match the raw schema."""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from pipelines.config import ModelConfig
from pipelines.runs import Run, write_result
from pipelines.schema import RawSchema
from pipelines.storage import confined, file_digest, partition_files, read_files, staged_dir, write_json

log = logging.getLogger(__name__)


class DataValidationError(ValueError):
    """The input data does not satisfy the schema; the message lists every problem found."""


@dataclass
class ValidateResult:
    model: str
    interval: str
    partitions: dict[str, list[str]]
    rows: dict[str, int]
    total_rows: int
    missing_fraction: dict[str, float]
    file_digests: dict[str, str] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)


def check_table(table: pa.Table, schema: RawSchema, where: str) -> list[str]:
    """Schema checks on one typed table: emptiness, nulls where not allowed, and domains."""
    if table.num_rows == 0:
        return [f"{where}: no rows"]
    errors = []
    for f in schema.features:
        column = table.column(f.name)
        nulls = column.null_count
        if nulls and not f.nullable:
            errors.append(f"{where}: column {f.name!r} has {nulls} missing values but is not nullable")
        present = pc.drop_null(column)
        if len(present) == 0:
            continue
        if f.min is not None and pc.min(present).as_py() < f.min:
            bad = pc.sum(pc.less(present, f.min)).as_py()
            errors.append(f"{where}: column {f.name!r} has {bad} values below its minimum {f.min}")
        if f.max is not None and pc.max(present).as_py() > f.max:
            bad = pc.sum(pc.greater(present, f.max)).as_py()
            errors.append(f"{where}: column {f.name!r} has {bad} values above its maximum {f.max}")
        if f.values is not None:
            outside = pc.invert(pc.is_in(present, value_set=pa.array(f.values, f.arrow_type)))
            bad = pc.sum(outside).as_py()
            if bad:
                examples = pc.unique(pc.filter(present, outside)).to_pylist()[:5]
                errors.append(
                    f"{where}: column {f.name!r} has {bad} values outside its domain, e.g. {examples}"
                )
    return errors


def data_config(config: ModelConfig, data_root: str, data_dir: str | None) -> ModelConfig:
    """``config`` reading its partitions from ``data_dir`` (relative to the data root, never outside it)
    instead of its configured directory, e.g. to reprocess a corrected copy of the data."""
    if data_dir is None:
        return config
    return config.with_data_dir(str(confined(data_root, data_dir, "data_dir")))


def validate(config: ModelConfig, *, interval: dt.date, data_root: str, artifact_root: Path,
             data_dir: str | None = None) -> ValidateResult:
    """Check the window's partitions (see ``data_config`` for ``data_dir``)."""
    config = data_config(config, data_root, data_dir)
    schema: RawSchema = config.features_module().SCHEMA
    run = Run(artifact_root, config.name, interval)
    fmt = config.data.format
    errors: list[str] = []
    partitions: dict[str, list[str]] = {}
    rows: dict[str, int] = {}
    missing: dict[str, int] = {f.name: 0 for f in schema.features}
    digests: dict[str, str] = {}
    for day in config.window(interval):
        path = Path(config.partition_path(data_root, day))
        if not path.is_dir():
            errors.append(f"missing partition for {day}: {path} does not exist")
            continue
        files = partition_files(path, fmt)
        if not files:
            errors.append(f"partition {path} has no *.{fmt} files")
            continue
        partitions[day.isoformat()] = [str(p) for p in files]
        digests.update({str(p): file_digest(p) for p in files})
        try:
            table = read_files(files, fmt, schema)
        except ValueError as exc:
            errors.append(str(exc))
            continue
        errors += check_table(table, schema, str(path))
        rows[day.isoformat()] = table.num_rows
        for f in schema.features:
            missing[f.name] += table.column(f.name).null_count

    total = sum(rows.values())
    result = ValidateResult(
        model=config.name,
        interval=interval.isoformat(),
        partitions=partitions,
        rows=rows,
        total_rows=total,
        missing_fraction={k: round(v / total, 6) if total else 0.0 for k, v in missing.items()},
        file_digests=digests,
        errors=errors,
    )
    with staged_dir(run.step_dir("validate")) as out:
        write_json(out / "validation.json", result.__dict__)
        if not errors:
            write_result(out, result)
    if errors:
        raise DataValidationError(
            f"data for {config.name} interval {interval} failed validation ({len(errors)} problem(s)):\n  - "
            + "\n  - ".join(errors)
        )
    log.info("validated %d partitions, %d rows", len(rows), total)
    return result
