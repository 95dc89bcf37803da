"""validate: the data gate. Nothing reaches transform unless the window's partitions pass it.

For the run of day D it reads every partition of ``[D - lookback_days, D]`` exactly as transform
will (``pipelines.rawdata``) and reports, as ``Anomaly`` records, most severe first:

- files: missing partitions, empty or non-UTF-8 files, malformed (truncated) rows, a repeated
  header, missing / duplicate / unknown columns, cells of the wrong type, each with its line;
- values: NaN or inf in any spelling (unless the feature allows it), nulls in a non-nullable
  column, values outside the declared domain, a label with a single class over the window;
- the newest ``compare_days`` days against the rest of the window (the reference): row volume
  against the reference median, L-infinity drift of categorical frequencies, Jensen-Shannon
  drift of numeric histograms, the share of never-seen values, a rise of missing values, and
  label drift (thresholds in the model config's ``[validation]``, per column if needed).

Outputs: ``validate/statistics.json`` (per-day statistics, see ``pipelines.statistics``),
``validate/validation.json`` (anomalies as data) and ``result.json``. A failed validation writes
its report to ``validate/rejected/`` and leaves an earlier good output of the interval as it was.
A run may accept named drift-like anomalies (``accept``); the acceptance is recorded.
"""

from __future__ import annotations

import datetime as dt
import logging
import statistics as pystats
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.anomalies import Anomaly, is_accepted, most_severe_first, parse_accepted, report
from pipelines.config import FeatureChecks, ModelConfig, ValidationConfig
from pipelines.lineage import input_digest
from pipelines.rawdata import FileRead, read_partition_file
from pipelines.runs import Run, write_result
from pipelines.schema import Feature, RawSchema
from pipelines.staging import active_mirror
from pipelines.statistics import (
    js_divergence,
    linf_distance,
    new_value_share,
    partition_statistics,
    pooled_frequencies,
)
from pipelines.storage import confined, partition_files, read_json, staged_dir, unread_entries, write_json

log = logging.getLogger(__name__)

STATISTICS_VERSION = 1  # bump when partition_statistics changes: stored statistics are then recomputed
ACCEPT_HINT = ("A known, expected change can be accepted for one run with --accept-anomaly ID "
               "(trigger param accept_anomalies), e.g. --accept-anomaly {id}; it is recorded in the version's lineage.")


class DataValidationError(ValueError):
    """The input data did not pass the gate; the message lists every anomaly, most severe first."""


@dataclass
class ValidateResult:
    model: str
    interval: str
    partitions: dict[str, list[str]]
    rows: dict[str, int]
    total_rows: int
    missing_fraction: dict[str, float]
    file_digests: dict[str, str] = field(default_factory=dict)
    statistics: str = ""
    anomalies: list[dict[str, Any]] = field(default_factory=list)  # every anomaly found, accepted or not
    accepted: list[str] = field(default_factory=list)  # ids of anomalies this run accepted
    errors: list[str] = field(default_factory=list)  # the blocking anomalies' messages, most severe first


# -- values in one file ---------------------------------------------------------

def check_values(read: FileRead, schema: RawSchema, day: str) -> list[Anomaly]:
    """Nulls where not allowed, NaN/inf in numeric columns, values outside the domain: with their lines. In the
    columns that read as their types (``read.values``: every column of a usable file)."""
    table = read.values
    if table is None:
        return []
    found: list[Anomaly] = []

    def add(kind: str, f: Feature, mask: pa.ChunkedArray | pa.Array, what: str, *, examples: bool = True,
            advice: str = "", as_written: bool = False) -> None:
        rows = np.flatnonzero(pc.fill_null(mask, False).to_numpy(zero_copy_only=False))
        if len(rows):
            values = None if not examples else read.cells(f.name, rows[:5]) if as_written else \
                pc.take(table.column(f.name), pa.array(rows[:5])).to_pylist()
            found.append(Anomaly(kind, f"{read.path}: column {f.name!r} has {len(rows)} {what}: "
                                 f"{read.where(rows, values)}{advice}", column=f.name, day=day, file=str(read.path),
                                 value=len(rows), lines=read.lines(rows[:5])))

    for f in schema.features:
        if f.name not in table.column_names:
            continue  # cells that are not of its type: reported by the read
        column = table.column(f.name)
        if not f.nullable and column.null_count:
            add("null_values", f, pc.is_null(column), "missing value(s) but is not nullable", examples=False,
                advice=". Fill them, or declare the feature nullable")
        if f.type == "float" and not f.allow_nan:
            add("nan_values", f, pc.or_(pc.is_nan(column), pc.is_inf(column)), "NaN or infinite value(s)",
                as_written=True,
                advice=(". In any spelling (nan, NAN, inf, 1e400) they reach training as NaN, and a number beyond "
                        "float32's range (about ±3.4e38) as infinity; a missing value is an empty cell"
                        if read.fmt == "csv" else ". They reach training as NaN, and a number beyond float32's range "
                        "(about ±3.4e38) as infinity; a missing value is a null, not NaN")
                       + ". Fix the data, or set allow_nan=True on the feature if the model handles NaN")
        finite = pc.is_finite(column) if f.type == "float" else pc.is_valid(column)
        # bounds in the column's own type: a float32 cell "42.09" equals the bound 42.09, it is not above it
        if f.min is not None:
            add("out_of_domain", f, pc.and_(finite, pc.less(column, pa.scalar(f.min, column.type))),
                f"value(s) below its minimum {f.min}")
        if f.max is not None:
            add("out_of_domain", f, pc.and_(finite, pc.greater(column, pa.scalar(f.max, column.type))),
                f"value(s) above its maximum {f.max}")
        if f.values is not None:
            outside = pc.invert(pc.is_in(column, value_set=pa.array(f.values, f.arrow_type)))
            add("out_of_domain", f, pc.and_(pc.is_valid(column), outside),
                f"value(s) outside its domain {list(f.values)[:10]}")
    return found


# -- the newest days against the reference window ---------------------------------

def _share(part: float) -> str:
    return f"{part:.1%}"


def compare_day(day: str, stats: dict[str, Any], reference: dict[str, dict[str, Any]], schema: RawSchema,
                config: ValidationConfig) -> list[Anomaly]:
    """Volume and drift of one day's statistics against the reference days' statistics."""
    span = f"the reference window {min(reference)}..{max(reference)}"
    found: list[Anomaly] = []
    median = pystats.median(s["rows"] for s in reference.values())
    if median > 0:
        ratio = stats["rows"] / median
        low, high = config.min_volume_ratio, config.max_volume_ratio
        if (low is not None and not ratio >= low) or (high is not None and not ratio <= high):
            bound = low if low is not None and not ratio >= low else high
            found.append(Anomaly("volume", f"{day}: {stats['rows']} rows is {ratio:.3g}x the median {median:g} of "
                                 f"{span}; allowed {low}x..{high}x", day=day, value=round(ratio, 4), threshold=bound))
    for f in schema.features:
        checks: FeatureChecks = config.checks(f.name)
        col = stats["columns"][f.name]
        ref_cols = [s["columns"][f.name] for s in reference.values()]
        label = f.name == schema.label

        def add(kind: str, value: float, threshold: float, message: str, f=f) -> None:
            found.append(Anomaly(kind, f"{day}: column {f.name!r}: {message}", column=f.name, day=day,
                                 value=round(value, 6), threshold=threshold))

        rows, ref_rows = stats["rows"], sum(s["rows"] for s in reference.values())
        if checks.null_increase is not None and rows and ref_rows:
            share, ref_share = col["nulls"] / rows, sum(c["nulls"] for c in ref_cols) / ref_rows
            if not share - ref_share <= checks.null_increase:
                add("null_increase", share - ref_share, checks.null_increase,
                    f"{_share(share)} of rows are missing vs {_share(ref_share)} in {span} (a rise of "
                    f"{share - ref_share:.3f}, allowed {checks.null_increase})")
        if f.is_categorical:
            freq, _ = pooled_frequencies([col])
            ref_freq, truncated = pooled_frequencies(ref_cols)
            if not freq or not ref_freq:
                continue
            if label and len(freq) == 1 and len(ref_freq) > 1:
                [only] = freq
                add("one_class_label", 1.0, 1.0, f"every row has label {only!r}, while {span} has "
                    f"{len(ref_freq)} classes ({_top(ref_freq)})")
            if checks.categorical_drift is not None:
                distance, value = linf_distance(freq, ref_freq)
                if not distance <= checks.categorical_drift:
                    add("label_drift" if label else "categorical_drift", distance, checks.categorical_drift,
                        f"L-infinity distance {distance:.3f} of value frequencies vs {span} exceeds "
                        f"{checks.categorical_drift}: {value!r} went from {_share(ref_freq.get(value, 0.0))} "
                        f"to {_share(freq.get(value, 0.0))}")
            if checks.new_values is not None and not truncated:
                share, examples = new_value_share(freq, ref_freq)
                if not share <= checks.new_values:
                    add("new_values", share, checks.new_values,
                        f"{_share(share)} of rows have values never seen in {span} (allowed "
                        f"{_share(checks.new_values)}), e.g. {examples}")
        elif checks.numeric_drift is not None:
            divergence = js_divergence(col, ref_cols)
            if divergence is not None and not divergence <= checks.numeric_drift:
                add("label_drift" if label else "numeric_drift", divergence, checks.numeric_drift,
                    f"Jensen-Shannon divergence {divergence:.3f} of its histogram vs {span} exceeds "
                    f"{checks.numeric_drift} (median {_quantile(col, 50)} vs {_quantile_pooled(ref_cols, 50)}, "
                    f"mean {col['mean']} vs {_mean(ref_cols)})")
    return found


def _top(freq: dict[str, float]) -> str:
    return ", ".join(f"{v!r}: {_share(s)}" for v, s in sorted(freq.items(), key=lambda kv: -kv[1])[:5])


def _quantile(col: dict[str, Any], percent: int) -> float | None:
    return col["quantiles"][percent] if col.get("quantiles") else None


def _quantile_pooled(cols: list[dict[str, Any]], percent: int) -> float | None:
    values = [c["quantiles"][percent] for c in cols if c.get("quantiles")]
    return float(f"{np.median(values):.7g}") if values else None


def _mean(cols: list[dict[str, Any]]) -> float | None:
    n = sum(c["count"] for c in cols if c.get("mean") is not None)
    return float(f"{sum(c['mean'] * c['count'] for c in cols if c.get('mean') is not None) / n:.7g}") if n else None


def check_label_window(statistics: dict[str, dict[str, Any]], schema: RawSchema) -> list[Anomaly]:
    """A classifier cannot learn from a window whose label has one class."""
    if not schema.label_is_column or not statistics:
        return []
    label = schema.feature(schema.label)
    if not label.is_categorical:
        return []
    freq, _ = pooled_frequencies([s["columns"][label.name] for s in statistics.values()])
    if len(freq) != 1:
        return []
    [only] = freq
    return [Anomaly("one_class_label_window", f"label {label.name!r} is {only!r} in every row of "
                    f"{min(statistics)}..{max(statistics)}: a classifier cannot be trained on one class",
                    column=label.name, value=1)]


# -- the step -----------------------------------------------------------------------

def earlier_statistics(run: Run) -> dict[str, dict[str, Any]]:
    """Per-day statistics of this interval's and the previous interval's last good validation: a daily run
    recomputes only the new day (a day is reused only if its files' digests are the same)."""
    found: dict[str, dict[str, Any]] = {}
    for interval in (run.interval - dt.timedelta(days=1), run.interval):
        path = Run(run.artifact_root, run.model, interval).step_dir("validate") / "statistics.json"
        try:
            found.update(read_json(path).get("days", {}))
        except (OSError, ValueError, AttributeError):
            continue  # none, or unreadable: computed afresh
    return found


def data_config(config: ModelConfig, data_root: str, data_dir: str | None) -> ModelConfig:
    """``config`` reading its partitions from ``data_dir`` (relative to the data root, never outside it)
    instead of its configured directory, e.g. to reprocess a corrected copy of the data."""
    if data_dir is None:
        return config
    return config.with_data_dir(str(confined(data_root, data_dir, "data_dir")))


def validate(config: ModelConfig, *, interval: dt.date, data_root: str, artifact_root: Path,
             data_dir: str | None = None, accept: tuple[str, ...] | list[str] = ()) -> ValidateResult:
    """Check the window's partitions (see the module docstring; ``data_config`` for ``data_dir``)."""
    accept = parse_accepted(accept)
    config = data_config(config, data_root, data_dir)
    schema: RawSchema = config.features_module().SCHEMA
    settings = config.validation
    fmt = config.data.format
    anomalies: list[Anomaly] = []
    partitions: dict[str, list[str]] = {}
    digests: dict[str, str] = {}
    statistics: dict[str, dict[str, Any]] = {}
    earlier = earlier_statistics(Run(artifact_root, config.name, interval))
    for day in config.window(interval):
        key = day.isoformat()
        path = Path(config.partition_path(data_root, day))
        files = partition_files(path, fmt) if path.is_dir() else []
        if path.is_dir() and (unread := unread_entries(path, fmt)):
            named = ", ".join(f"{p.name} ({'a directory' if p.is_dir() else f'not *.{fmt}'})" for p in unread[:5])
            anomalies.append(Anomaly(
                "unread_files", f"{path}: {len(unread)} entr{'y' if len(unread) == 1 else 'ies'} no step reads: "
                f"{named}{', ...' if len(unread) > 5 else ''}. Only *.{fmt} files directly in the partition reach "
                "training: give data files that suffix, or move what is not data out of the partition (or start its "
                "name with '_')", day=key, file=str(unread[0]), value=len(unread)))
        if not files:
            why = f"{path} does not exist" if not path.is_dir() else f"{path} has no *.{fmt} files"
            anomalies.append(Anomaly("missing_partition", f"missing partition for {key}: {why}", day=key))
            continue
        partitions[key] = [str(p) for p in files]
        tables = []
        for file in files:
            read = read_partition_file(file, fmt, schema, day=key, unknown_columns=settings.unknown_columns)
            digests[str(file)] = read.digest
            anomalies += read.anomalies + check_values(read, schema, key)
            if read.table is not None:
                tables.append(read.table)
        if len(tables) < len(files):
            continue  # statistics of a partly readable day would only add noise to its errors
        table = pa.concat_tables(tables)
        if table.num_rows == 0:
            anomalies.append(Anomaly("no_rows", f"partition {path} has no rows ("
                                     + ("only headers)" if fmt == "csv" else "its files hold none)"), day=key))
            continue
        day_digest = input_digest(files=sorted(digests[str(f)] for f in files), schema=repr(schema),
                                  statistics=STATISTICS_VERSION)
        reusable = earlier.get(key, {})
        statistics[key] = (reusable if reusable.get("digest") == day_digest
                           else {**partition_statistics(table.combine_chunks(), schema), "digest": day_digest})

    compared = [d.isoformat() for d in config.window(interval)[-settings.compare_days:]]
    reference = {d: s for d, s in statistics.items() if d not in compared}
    if reference:
        for day in compared:
            if day in statistics:
                anomalies += compare_day(day, statistics[day], reference, schema, settings)
    anomalies += check_label_window(statistics, schema)
    return _conclude(config, interval, Run(artifact_root, config.name, interval), schema, accept,
                     most_severe_first(anomalies), partitions, digests, statistics)


def _conclude(config: ModelConfig, interval: dt.date, run: Run, schema: RawSchema, accept: tuple[str, ...],
              anomalies: list[Anomaly], partitions: dict[str, list[str]], digests: dict[str, str],
              statistics: dict[str, dict[str, Any]]) -> ValidateResult:
    blocking = [a for a in anomalies if not is_accepted(a, accept)]
    accepted = sorted({a.id for a in anomalies if is_accepted(a, accept)})
    unused = [a for a in accept if not any(a in (x.id, x.kind) for x in anomalies)]
    if unused:
        log.warning("accepted anomalies that did not occur in this run: %s", ", ".join(unused))
    rows = {day: s["rows"] for day, s in statistics.items()}
    total = sum(rows.values())
    missing = {f.name: sum(s["columns"][f.name]["nulls"] for s in statistics.values()) for f in schema.features}
    final = run.step_dir("validate")
    where = final / "rejected" if blocking else final
    result = ValidateResult(
        model=config.name,
        interval=interval.isoformat(),
        partitions=partitions,
        rows=rows,
        total_rows=total,
        missing_fraction={k: round(v / total, 6) if total else 0.0 for k, v in missing.items()},
        file_digests=digests,
        statistics=str(where / "statistics.json"),
        anomalies=[a.as_dict() for a in anomalies],
        accepted=accepted,
        errors=[a.message for a in blocking],
    )
    # a failed gate reports beside the interval's earlier good output, never over it
    with staged_dir(where) as out:
        write_json(out / "statistics.json", {"model": config.name, "interval": interval.isoformat(),
                                             "days": statistics})
        written = result.__dict__
        if blocking and (mirror := active_mirror()) is not None:
            written = mirror.to_urls(written)  # nothing pushes a refused output, and the mirror goes with the step
        write_json(out / "validation.json", written)
        if not blocking:
            write_result(out, result)
    if blocking:
        hint = next((a for a in blocking if a.acceptable), None)
        raise DataValidationError(
            f"data for {config.name} interval {interval} failed validation: {len(blocking)} problem(s), most "
            f"severe first (report: {where / 'validation.json'}):\n" + report(blocking)
            + (f"\n{ACCEPT_HINT.format(id=hint.id)}" if hint else "")
        )
    for a in anomalies:
        log.warning("accepted by this run: [%s] %s", a.id, a.message)
    log.info("validated %d partitions, %d rows, %d columns: no anomalies%s", len(rows), total, len(schema.features),
             f" (accepted: {', '.join(accepted)})" if accepted else "")
    return result
