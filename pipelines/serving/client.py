"""A small client for TF Serving's REST API (works against the local server and tensorflow/serving).

Standard library only: the Airflow side and the demo use it without TensorFlow.
"""

from __future__ import annotations

import base64
import json
import math
import numbers
import re
import struct
import time
import urllib.error
import urllib.request
from typing import Any

from pipelines.schema import NUMBER_TEXT, RAW_SIGNATURE

# -- tf.Example without TensorFlow ----------------------------------------------------
# The wire format of tensorflow/core/example/{example,feature}.proto: Example{1: Features{1: map<string,
# Feature>}}, Feature{1: BytesList | 2: FloatList | 3: Int64List}, each list {1: repeated value}.

def _varint(number: int) -> bytes:
    number &= (1 << 64) - 1  # negative int64s are ten-byte two's complement
    out = bytearray()
    while True:
        byte = number & 0x7F
        number >>= 7
        out.append(byte | (0x80 if number else 0))
        if not number:
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


FLOAT32_MAX = 3.4028234663852886e38


def encode_example(row: dict[str, Any], types: dict[str, str]) -> bytes:
    """A serialized tf.Example of one row of raw features: ``None``, NaN (an empty cell of a pandas frame), ""
    (an empty cell of ``csv.DictReader``, as training reads one) or an absent key is a missing feature, as a
    sparse row needs (the server names a row that misses a feature the model needs); a number feature's text
    (a ``csv.DictReader`` cell, '24.95') is read as training reads the CSV; infinity is sent as it is, and
    refused. ``types`` maps each feature to ``DT_STRING``, ``DT_FLOAT`` or
    ``DT_INT64`` (see ``ModelServerClient.feature_types``). A value of the wrong type or a feature the
    model does not take raises ``ValueError`` naming it."""
    entries = b""
    for name, value in sorted(row.items()):
        kind = types.get(name)
        if kind is None:  # before a missing value is skipped: a misspelt column is named even where it is empty
            raise ValueError(f"unknown feature {name!r}; the model takes {sorted(types)}")
        if isinstance(value, numbers.Number) and not isinstance(value, bool | int | float):
            value = value.item() if hasattr(value, "item") else value  # numpy's scalars (a frame's to_numpy())
        if value is None or (isinstance(value, float) and math.isnan(value)) or (isinstance(value, str | bytes)
                                                                                 and not value):
            continue
        if isinstance(value, str) and kind in ("DT_FLOAT", "DT_INT64"):  # a csv.DictReader row's cell: read as
            # training reads the CSV (NUMBER_TEXT), nothing looser ('1_000' and ' 0x10' are text there too)
            if not re.match(NUMBER_TEXT["int" if kind == "DT_INT64" else "float"], value, re.IGNORECASE):
                raise ValueError(f"feature {name!r}: {value!r} is not {'an integer' if kind == 'DT_INT64' else 'a number'}")
            value = int(value) if kind == "DT_INT64" else float(value)
        if kind == "DT_STRING":
            if not isinstance(value, str | bytes):
                raise ValueError(f"feature {name!r}: {value!r} is not a string")
            feature = _field(1, _field(1, value.encode() if isinstance(value, str) else value))
        elif kind == "DT_FLOAT":
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"feature {name!r}: {value!r} is not a number")
            if abs(value) > FLOAT32_MAX and value not in (math.inf, -math.inf):  # exact for any int too
                raise ValueError(f"feature {name!r}: {value!r} is out of the range of float32")
            feature = _field(2, _field(1, struct.pack("<f", value)))
        elif kind == "DT_INT64":
            if isinstance(value, bool) or not (isinstance(value, int) or (isinstance(value, float)
                                                                          and math.isfinite(value) and value.is_integer())):
                raise ValueError(f"feature {name!r}: {value!r} is not an integer")
            if not -(2**63) <= value < 2**63:  # a wider varint would be cut to its low 64 bits
                raise ValueError(f"feature {name!r}: {value!r} is out of the range of int64")
            feature = _field(3, _field(1, _varint(int(value))))
        else:
            raise ValueError(f"feature {name!r} has type {kind}, which a tf.Example cannot carry")
        entries += _field(1, _field(1, name.encode()) + _field(2, feature))
    return _field(1, entries)


class VersionLoadError(RuntimeError):
    """The server reports that a version failed to load."""


class ModelServerClient:
    """:param url: the REST root, e.g. ``http://127.0.0.1:8501``."""

    def __init__(self, url: str, *, timeout: float = 60.0):
        self.url = url.rstrip("/")
        self.timeout = timeout

    @staticmethod
    def model_path(model: str, *, version: int | None = None, label: str | None = None) -> str:
        if version is not None and label is not None:
            raise ValueError("address a model by version or by label, not both")
        suffix = f"/versions/{version}" if version is not None else f"/labels/{label}" if label else ""
        return f"/v1/models/{model}{suffix}"

    def request(self, method: str, path: str, body: dict | bytes | None = None) -> tuple[int, dict[str, Any]]:
        """(HTTP status, JSON body); errors come back as their status and ``{"error": ...}``."""
        data = json.dumps(body).encode() if isinstance(body, dict) else body
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as err:
            payload = err.read()
            try:
                return err.code, json.loads(payload or b"{}")
            except json.JSONDecodeError:
                return err.code, {"error": payload.decode(errors="replace")}

    def version_statuses(self, model: str) -> dict[int, dict[str, Any]]:
        status, body = self.request("GET", self.model_path(model))
        if status != 200:
            return {}
        return {int(v["version"]): v for v in body["model_version_status"]}

    def version_states(self, model: str) -> dict[int, str]:
        return {number: v["state"] for number, v in self.version_statuses(model).items()}

    def feature_types(self, model: str, *, version: int | None = None, label: str | None = None) -> dict[str, str]:
        """The model's raw features and their types (``DT_FLOAT``, ...), from its ``serving_raw`` signature."""
        status, body = self.request("GET", self.model_path(model, version=version, label=label) + "/metadata")
        if status != 200:
            raise RuntimeError(f"metadata of {model} failed with HTTP {status}: {body.get('error', body)}")
        signatures = body["metadata"]["signature_def"]["signature_def"]
        if RAW_SIGNATURE not in signatures:
            raise RuntimeError(f"{model} has no {RAW_SIGNATURE!r} signature to read its features from")
        return {name: spec["dtype"] for name, spec in signatures[RAW_SIGNATURE]["inputs"].items()}

    def predict_rows(self, model: str, rows: list[dict[str, Any]], *, version: int | None = None,
                     label: str | None = None, types: dict[str, str] | None = None) -> list[Any]:
        """Predictions for plain dicts of raw features (a pandas frame's ``to_dict("records")``), missing values
        allowed (``None``, NaN or absent): each row goes as a serialized tf.Example to ``serving_default``, as
        TF Serving clients send sparse rows. A value that cannot be encoded is a ValueError naming its row."""
        types = types or self.feature_types(model, version=version, label=label)
        instances = []
        for i, row in enumerate(rows):
            try:
                instances.append({"b64": base64.b64encode(encode_example(row, types)).decode()})
            except ValueError as exc:
                raise ValueError(f"rows[{i}]: {exc}") from None
        return self.predict(model, {"instances": instances}, version=version, label=label)["predictions"]

    def predict(self, model: str, body: dict, *, version: int | None = None, label: str | None = None) -> dict:
        status, answer = self.request("POST", self.model_path(model, version=version, label=label) + ":predict", body)
        if status != 200:
            raise RuntimeError(f"predict on {model} failed with HTTP {status}: {answer.get('error', answer)}")
        return answer

    def wait_until_available(self, model: str, version: int, *, timeout: float = 120.0, poll: float = 0.2) -> None:
        deadline = time.monotonic() + timeout
        state = None
        while time.monotonic() < deadline:
            try:
                found = self.version_statuses(model).get(version, {})
            except OSError:  # the server is not listening yet
                found = {}
            state = found.get("state")
            if state == "AVAILABLE":
                return
            error = found.get("status", {})
            if state == "END" and error.get("error_code", "OK") != "OK":
                raise VersionLoadError(error.get("error_message") or error["error_code"])
            time.sleep(poll)
        raise TimeoutError(f"{model} version {version} not AVAILABLE at {self.url} after {timeout}s "
                           f"(last state: {state})")
