"""``python -m pipelines infer-schema``: a starting feature contract from data, to be edited.

Like TFDV's ``infer_schema``: types (int, float, string), nullability (a column with an empty
cell is nullable), observed min/max of numbers, and a closed domain for strings (and for an
integer label) with few distinct values. The output is the ``features.py`` a model module
needs, or a ``schema.pbtxt`` (tensorflow_metadata ``Schema``) for TFX users; ``schema_from_pbtxt``
reads such a file back, so a team can keep the schema it already has.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from pipelines.schema import Feature, RawSchema

_TYPES = {"int": (pa.types.is_integer,), "float": (pa.types.is_floating,)}


def _files(data: Path) -> tuple[list[Path], str]:
    data = Path(data)
    files = [data] if data.is_file() else sorted(p for p in data.rglob("*") if p.suffix in (".csv", ".parquet")
                                                 and not p.name.startswith("."))
    if not files:
        raise FileNotFoundError(f"no .csv or .parquet files at {data}")
    formats = {p.suffix for p in files}
    if len(formats) > 1:
        raise ValueError(f"{data} mixes CSV and Parquet files; point --data at one kind")
    return files, formats.pop().lstrip(".")


def _read(files: list[Path], fmt: str) -> tuple[pa.Table, list[str]]:
    """All files as one table, and notes: a column read as numbers in some files and as text in others (a few
    stray cells, 'n/a', on one day) is text in all, and the note names the files with text."""
    if fmt == "parquet":  # an empty string is missing, as an empty CSV cell is (pipelines.rawdata)
        from pipelines.rawdata import empty_as_missing

        tables = [empty_as_missing(pq.read_table(p)) for p in files]
    else:
        tables = [pacsv.read_csv(path, convert_options=pacsv.ConvertOptions(  # TFXIO's rule: only an empty cell
            null_values=[""], strings_can_be_null=True, timestamp_parsers=[])) for path in files]  # is missing
    notes = []
    for name in dict.fromkeys(n for t in tables for n in t.column_names):
        types = [t.schema.field(name).type if name in t.column_names else pa.null() for t in tables]
        texts = [i for i, kind in enumerate(types) if pa.types.is_string(kind) or pa.types.is_large_string(kind)]
        if not texts or not any(pa.types.is_integer(kind) or pa.types.is_floating(kind) for kind in types):
            continue
        shown = ", ".join(str(files[i]) for i in texts[:3]) + (f" and {len(texts) - 3} more" if len(texts) > 3 else "")
        notes.append(f"column {name!r} is numbers in some files and text in {len(texts)}: {shown}")
        tables = [t.set_column(t.schema.get_field_index(name), name, pc.cast(t.column(name), pa.string()))
                  if name in t.column_names else t for t in tables]
    return pa.concat_tables(tables, promote_options="permissive"), notes


def _mostly_numbers(name: str, present: pa.ChunkedArray) -> str | None:
    """A note when a column read as text is mostly numbers: a few stray cells ('three', 'n/a') made it a string."""
    from pipelines.schema import NUMBER_TEXT

    numeric = pc.match_substring_regex(present, NUMBER_TEXT["float"], ignore_case=True)
    count = int(pc.sum(numeric).as_py() or 0)
    if not len(present) or count == len(present) or count < len(present) / 2:
        return None
    strays = pc.unique(pc.filter(present, pc.invert(numeric))).to_pylist()
    shown = ", ".join(map(repr, strays[:5])) + (f" and {len(strays) - 5} more" if len(strays) > 5 else "")
    return (f"column {name!r} is inferred as string, but {count} of its {len(present)} values are numbers: "
            f"{len(present) - count} are not ({shown}). If it is numeric, clean those cells (an empty cell is a "
            "missing value) and infer again, or declare it int or float")


def infer_schema(data: str | Path, *, label: str, max_values: int = 20) -> tuple[RawSchema, list[str]]:
    """The inferred contract and notes for the person editing it (NaN seen, label domain, ...)."""
    files, fmt = _files(Path(data))
    table, notes = _read(files, fmt)
    if label not in table.column_names:
        raise ValueError(f"label column {label!r} is not in the data (columns: {', '.join(table.column_names)})")
    features = []
    for name in table.column_names:
        column = table.column(name)
        kind = next((k for k, (test,) in _TYPES.items() if test(column.type)), "string")
        present = pc.drop_null(column)
        nullable = column.null_count > 0
        if kind == "string":
            present = present.cast(pa.string())
            if notes_on := _mostly_numbers(name, present):
                notes.append(notes_on)
            distinct = pc.unique(present)
            values = tuple(sorted(distinct.to_pylist())) if len(distinct) <= max_values else None
            features.append(Feature(name, "string", nullable=nullable, values=values))
            continue
        if kind == "float":
            bad = int(pc.sum(pc.invert(pc.is_finite(present))).as_py() or 0)
            if bad:
                notes.append(f"column {name!r} has {bad} NaN/infinite value(s): the contract refuses them; clean "
                             "the data, or set allow_nan=True if the model handles NaN")
            present = pc.filter(present, pc.is_finite(present))
            if nullable and len(present) and pc.all(pc.equal(pc.trunc(present), present)).as_py():
                notes.append(f"column {name!r} is inferred as float, but every value is a whole number and some are "
                             "missing: pandas stores an integer column with missing values as float. If it counts "
                             "things, declare it int (nullable)")
        bounds = pc.min_max(present).as_py() if len(present) else {"min": None, "max": None}
        values = None
        if name == label and kind == "int" and len(distinct := pc.unique(present)) <= max_values:
            values = tuple(sorted(distinct.to_pylist()))
        features.append(Feature(name, kind, nullable=nullable, min=bounds["min"], max=bounds["max"], values=values))
    if table.column(label).null_count:
        notes.append(f"label {label!r} has missing values: rows without a label cannot train; fill or drop them")
    notes.append(f"min/max are the observed {table.num_rows} rows' extremes: widen them to the real domain, or "
                 "the next day's slightly larger value fails validation")
    return RawSchema(features=tuple(features), label=label), notes


def render_features_py(schema: RawSchema, *, source: str, notes: list[str]) -> str:
    lines = [
        f'"""Feature contract inferred by `python -m pipelines infer-schema` from {source}.',
        "",
        "Review before use:",
        *[f"- {n}" for n in notes],
        '"""',
        "",
        "from __future__ import annotations",
        "",
        "from pipelines.schema import Feature, RawSchema",
        "",
        f"LABEL_KEY = {schema.label!r}",
        "",
        "SCHEMA = RawSchema(",
        "    features=(",
    ]
    for f in schema.features:
        args = [repr(f.name), repr(f.type)]
        if not f.nullable:
            args.append("nullable=False")
        for key in ("min", "max"):
            if (value := getattr(f, key)) is not None:
                args.append(f"{key}={value!r}")
        if f.values is not None:
            args.append(f"values={f.values!r}")
        lines.append(f"        Feature({', '.join(args)}),")
    lines += ["    ),", "    label=LABEL_KEY,", ")", "", "", "def transformed_name(key: str) -> str:",
              '    return f"{key}_xf"', ""]
    return "\n".join(lines)


# -- tensorflow_metadata Schema (schema.pbtxt) ---------------------------------------

def to_tfmd(schema: RawSchema):
    """The contract as a tensorflow_metadata ``Schema`` (types, presence, int/float/string domains)."""
    from tensorflow_metadata.proto.v0 import schema_pb2

    types = {"int": schema_pb2.INT, "float": schema_pb2.FLOAT, "string": schema_pb2.BYTES}
    proto = schema_pb2.Schema()
    for f in schema.features:
        feature = proto.feature.add(name=f.name, type=types[f.type])
        feature.presence.min_fraction = 0.0 if f.nullable else 1.0
        if f.nullable:
            feature.value_count.CopyFrom(schema_pb2.ValueCount(min=0, max=1))
        else:
            feature.shape.dim.add(size=1)
        if f.type == "string" and f.values is not None:
            feature.string_domain.value.extend(str(v) for v in f.values)
        elif f.type == "int" and (f.min is not None or f.max is not None):
            if f.min is not None:
                feature.int_domain.min = int(f.min)
            if f.max is not None:
                feature.int_domain.max = int(f.max)
        elif f.type == "float" and (f.min is not None or f.max is not None):
            if f.min is not None:
                feature.float_domain.min = float(f.min)
            if f.max is not None:
                feature.float_domain.max = float(f.max)
    return proto


def schema_from_pbtxt(path: str | Path, *, label: str) -> RawSchema:
    """A ``RawSchema`` from a tensorflow_metadata ``schema.pbtxt`` (e.g. one a TFX pipeline keeps)."""
    from google.protobuf import text_format
    from tensorflow_metadata.proto.v0 import schema_pb2

    proto = text_format.Parse(Path(path).read_text(), schema_pb2.Schema())
    kinds = {schema_pb2.INT: "int", schema_pb2.FLOAT: "float", schema_pb2.BYTES: "string"}
    features = []
    for f in proto.feature:
        if f.type not in kinds:
            raise ValueError(f"{path}: feature {f.name!r} has type {schema_pb2.FeatureType.Name(f.type)}; "
                             "only INT, FLOAT and BYTES are supported")
        domain = f.WhichOneof("domain_info")
        kw: dict = {}
        if domain == "int_domain":
            kw = {k: getattr(f.int_domain, k) for k in ("min", "max") if f.int_domain.HasField(k)}
        elif domain == "float_domain":
            kw = {k: getattr(f.float_domain, k) for k in ("min", "max") if f.float_domain.HasField(k)}
        elif domain == "string_domain":
            kw = {"values": tuple(f.string_domain.value)}
        elif domain is not None:
            raise ValueError(f"{path}: feature {f.name!r} uses {domain}, which Skewfree does not read; inline it "
                             "as int_domain, float_domain or string_domain")
        nullable = not (f.HasField("presence") and f.presence.min_fraction >= 1.0)
        features.append(Feature(f.name, kinds[f.type], nullable=nullable, **kw))
    return RawSchema(features=tuple(features), label=label)


def infer_schema_command(data: str, *, label: str, max_values: int, out: str | None, force: bool = False) -> int:
    if out and Path(out).exists() and not force:
        raise FileExistsError(f"{out} exists (and may hold your edits); pass --force to overwrite it")
    schema, notes = infer_schema(data, label=label, max_values=max_values)
    if out and out.endswith(".pbtxt"):
        from google.protobuf import text_format

        text = text_format.MessageToString(to_tfmd(schema))
    else:
        text = render_features_py(schema, source=str(data), notes=notes)
    if out:
        Path(out).write_text(text)
        print(f"wrote {out} ({len(schema.features)} columns, label {label!r})", file=sys.stderr)
    else:
        sys.stdout.write(text)
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    return 0

