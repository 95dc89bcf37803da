"""What the data gate reports: one ``Anomaly`` per problem, most severe first.

Kinds are ordered by severity. *Errors* are data that cannot be used as it is (unreadable,
wrong types, NaN, nulls where not allowed, values outside the domain): fix the data or the
schema. *Drift-like* anomalies (volume, drift, new values, an unknown column) are data that
may be right but is unexpected: a run may accept them by id (``KIND`` or ``KIND:COLUMN``),
and the acceptance is recorded in its lineage.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

ERROR_KINDS = (
    "missing_partition", "unread_files", "empty_file", "not_utf8", "unreadable", "missing_column", "duplicate_column",
    "repeated_header", "malformed_row", "wrong_type", "nan_values", "null_values", "out_of_domain", "no_rows",
    "one_class_label_window",
)
ACCEPTABLE_KINDS = (
    "unknown_column", "volume", "one_class_label", "label_drift", "new_values", "categorical_drift",
    "numeric_drift", "null_increase",
)
KINDS = ERROR_KINDS + ACCEPTABLE_KINDS


@dataclass(frozen=True)
class Anomaly:
    """One problem with the data, with everything a person needs to find it.

    :param kind: one of ``KINDS``.
    :param message: the whole story in one sentence: where, what, the numbers, the threshold.
    :param column: the column, when the problem is in one.
    :param day: the partition's date (YYYY-MM-DD).
    :param file: the file, when the problem is in one.
    :param value: the measured number (a count, a ratio, a distance).
    :param threshold: the bound it broke.
    :param lines: line numbers of offending rows (the first few), for file-level problems.
    """

    kind: str
    message: str
    column: str | None = None
    day: str | None = None
    file: str | None = None
    value: float | None = None
    threshold: float | None = None
    lines: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown anomaly kind {self.kind!r}")

    @property
    def id(self) -> str:
        return f"{self.kind}:{self.column}" if self.column else self.kind

    @property
    def acceptable(self) -> bool:
        return self.kind in ACCEPTABLE_KINDS

    @property
    def severity(self) -> str:
        return "anomaly" if self.acceptable else "error"

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "severity": self.severity, **asdict(self)}


def most_severe_first(anomalies: list[Anomaly]) -> list[Anomaly]:
    return sorted(anomalies, key=lambda a: (KINDS.index(a.kind), a.day or "", a.column or "", a.file or ""))


def parse_accepted(items: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """Anomaly ids a run accepts (``KIND`` or ``KIND:COLUMN``, comma-separated allowed); errors refused."""
    accepted = []
    for item in items:
        for token in filter(None, (t.strip() for t in item.split(","))):
            kind = token.split(":", 1)[0]
            if kind not in ACCEPTABLE_KINDS:
                why = ("is an error in the data, which cannot be accepted: fix the data or the schema"
                       if kind in ERROR_KINDS else "is not an anomaly kind")
                raise ValueError(f"cannot accept anomaly {token!r}: {kind!r} {why} "
                                 f"(acceptable kinds: {', '.join(ACCEPTABLE_KINDS)})")
            accepted.append(token)
    return tuple(accepted)


def is_accepted(anomaly: Anomaly, accepted: tuple[str, ...]) -> bool:
    return anomaly.acceptable and (anomaly.id in accepted or anomaly.kind in accepted)


def report(anomalies: list[Anomaly]) -> str:
    """One readable list, most severe first, each line ``[severity id] message``."""
    return "\n".join(f"  {i}. [{a.severity} {a.id}] {a.message}"
                     for i, a in enumerate(most_severe_first(anomalies), 1))
