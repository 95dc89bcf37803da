"""TF Serving's REST API (the subset Skewfree uses) over a ModelManager.

GET  /v1/models/{name}[/versions/{v}|/labels/{l}]            -> {"model_version_status": [...]}
GET  /v1/models/{name}[/versions/{v}|/labels/{l}]/metadata   -> {"model_spec": ..., "metadata": ...}
POST /v1/models/{name}[/versions/{v}|/labels/{l}]:predict    -> {"predictions": [...]} | {"outputs": ...}
Errors are {"error": "..."} with 404 for unknown servables and 400 for bad requests.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import math
import re
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import msgspec
import numpy as np

from pipelines.schema import RAW_SIGNATURE
from pipelines.serving.models import ModelManager, Servable, ServingError

log = logging.getLogger(__name__)

_PATH = re.compile(
    r"^/v1/models/(?P<name>[^/:]+)"
    r"(?:/versions/(?P<version>[^/:]+)|/labels/(?P<label>[^/:]+))?"
    r"(?:/(?P<metadata>metadata)|:(?P<verb>predict|classify|regress))?$"
)
DEFAULT_SIGNATURE = "serving_default"


def _json_type(value: Any) -> str:
    return {bool: "boolean", int: "integer", float: "number", str: "string", list: "list", dict: "object",
            type(None): "null"}.get(type(value), type(value).__name__)


def _b64_values(values: list) -> np.ndarray | None:
    """The usual tf.Example batch, every value ``{"b64": ...}``: one strict decode per value, no per-value
    dispatch; None for anything else (``_convert``'s loop then names the value at fault)."""
    if not all(type(v) is dict and len(v) == 1 for v in values):
        return None
    try:
        return np.array([binascii.a2b_base64(v["b64"], strict_mode=True) for v in values], dtype=object)
    except (binascii.Error, ValueError, TypeError, KeyError):
        return None


def _shown(value: Any, limit: int = 80) -> str:
    """A JSON value as the client wrote it (true, null, {"a": 1}), cut to ``limit`` characters."""
    text = json.dumps(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _convert(values: list, dtype, where: str, *, examples: bool = False, rows: list[int] | None = None,
             row_format: bool = False) -> np.ndarray:
    """JSON values for one input -> numpy, refusing anything TF Serving would refuse; an error names the row
    (``rows``: each value's row, when not every row gave one): ``inputs: named input 'fare', row 2``, or with
    ``row_format`` (``where`` is then the input's name, or "" for a signature's only input) ``instances[2]:
    named input 'fare'``. ``examples``: the input is a signature's serialized tf.Examples (a JSON object there
    is a likely mistake)."""
    import tensorflow as tf

    if dtype == tf.string and (decoded := _b64_values(values)) is not None:
        return decoded
    out = []
    for i, value in enumerate(values):
        row = i if rows is None else rows[i]
        at = f"instances[{row}]{where and f': {where}'}" if row_format else f"{where}, row {row}"
        if isinstance(value, dict) and set(value) == {"b64"} and dtype == tf.string:
            try:
                out.append(base64.b64decode(value["b64"], validate=True))
            except (ValueError, TypeError):
                raise ServingError(400, f"{at}: 'b64' value is not valid base64") from None
        elif value is None:
            raise ServingError(400, f"{at}: null is not allowed; send the row as a serialized tf.Example "
                                    f"(serving_default) to leave a feature missing")
        elif dtype == tf.string:
            if not isinstance(value, str):
                hint = ("; this input takes serialized tf.Examples as {\"b64\": ...}: to send named raw features, "
                        "add \"signature_name\": \"serving_raw\"") if isinstance(value, dict) and examples else ""
                raise ServingError(400, f"{at}: JSON {_json_type(value)} {_shown(value)} is not of expected type "
                                        f"string{hint}")
            out.append(value.encode())
        elif dtype.is_integer:
            if isinstance(value, bool) or not isinstance(value, int):
                raise ServingError(400, f"{at}: JSON {_json_type(value)} {_shown(value)} is not of expected type "
                                        f"{dtype.name}")
            if not dtype.min <= value <= dtype.max:
                raise ServingError(400, f"{at}: {value} is out of the range of {dtype.name}")
            out.append(value)
        elif dtype.is_floating:
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ServingError(400, f"{at}: JSON {_json_type(value)} {_shown(value)} is not of expected type "
                                        f"{dtype.name}")
            if isinstance(value, float) and not math.isfinite(value):  # (math.isfinite overflows on a huge int)
                raise ServingError(400, f"{at}: {_shown(value)} is not a value the model was trained on; to send a "
                                        "missing value, send null (serving_raw, where the model lets the feature be "
                                        "missing) or leave the feature out of a tf.Example (serving_default)")
            if abs(value) > float(dtype.max):  # a Python float: exact against any int (numpy overflows)
                raise ServingError(400, f"{at}: {_shown(value)} is out of the range of {dtype.name}")
            out.append(value)
        else:
            raise ServingError(400, f"{at}: unsupported input dtype {dtype.name}")
    return np.array(out, dtype=object if dtype == tf.string else dtype.as_numpy_dtype)


def _signature(servable: Servable, name: str | None):
    name = name or DEFAULT_SIGNATURE
    signature = servable.loaded.signatures.get(name)
    if signature is None:
        raise ServingError(400, f"Serving signature name: \"{name}\" not found in signature def; "
                                f"signatures are {sorted(servable.loaded.signatures)}")
    return signature


def _check_names(given: dict, names: list[str], where: str) -> None:
    """Every named input of the signature present, and nothing else."""
    missing = [n for n in names if n not in given]
    unknown = sorted(set(given) - set(names))
    if missing and unknown:  # likely a misspelt name: say both
        raise ServingError(400, f"{where}: unknown named input(s) {unknown} and missing named input(s) {missing}; "
                                f"the signature takes {names}")
    if missing:
        raise ServingError(400, f"{where}: missing named input(s) {missing}")
    if unknown:
        raise ServingError(400, f"{where}: unknown named input(s) {unknown}; the signature takes {names}")


def _row_inputs(instances: Any, specs: dict) -> dict[str, np.ndarray]:
    names = sorted(specs)
    if isinstance(instances, Decoded):
        if len(names) == 1 and names != ["b64"] and specs[names[0]].dtype.name == "string":
            return {names[0]: instances.decoded}
        instances = instances.json()
    if not isinstance(instances, list):
        raise ServingError(400, "'instances' must be a JSON list")
    if not instances:
        raise ServingError(400, "'instances' is an empty list: send at least one instance")
    if (len(names) == 1 and names != ["b64"] and specs[names[0]].dtype.name == "string"
            and (decoded := _b64_values(instances)) is not None):
        return {names[0]: decoded}  # the usual tf.Example batch: every row is {"b64": ...} for the one input
    columns: dict[str, list] = {n: [] for n in names}
    for i, instance in enumerate(instances):
        where = f"instances[{i}]"
        if len(names) == 1 and not (isinstance(instance, dict) and set(instance) == set(names)):
            columns[names[0]].append(instance)  # single input: a bare value or {"b64": ...}
            continue
        if not isinstance(instance, dict):
            raise ServingError(400, f"{where}: expected a JSON object with named inputs {names}, "
                                    f"got {_json_type(instance)}")
        if set(instance) == {"b64"} and names != ["b64"]:
            raise ServingError(400, f"{where}: a {{\"b64\": ...}} row is a serialized tf.Example, which "
                                    "serving_default takes (leave signature_name out); this signature takes the named "
                                    f"inputs {names}")
        _check_names(instance, names, where)
        for n in names:
            columns[n].append(instance[n])
    return {n: _convert(columns[n], specs[n].dtype, f"named input '{n}'" if len(names) > 1 else "",
                        examples=n == "examples", row_format=True) for n in names}


def _columnar_inputs(inputs: Any, specs: dict) -> dict[str, np.ndarray]:
    names = sorted(specs)
    if len(names) == 1 and not (isinstance(inputs, dict) and set(inputs) == set(names)):
        inputs = {names[0]: inputs}  # single input: the value itself
    if not isinstance(inputs, dict):
        raise ServingError(400, f"'inputs' must be a JSON object with named inputs {names}")
    _check_names(inputs, names, "inputs")
    lengths = set()
    out = {}
    for n in names:
        values = inputs[n] if isinstance(inputs[n], list) else [inputs[n]]
        if not values:
            raise ServingError(400, f"inputs: named input '{n}' is an empty list")
        out[n] = _convert(values, specs[n].dtype, f"inputs: named input '{n}'", examples=n == "examples")
        lengths.add(len(values))
    if len(lengths) > 1:
        raise ServingError(400, f"inputs: named inputs have different batch sizes {sorted(lengths)}")
    return out




def _keys_known(servable: Servable, serialized: np.ndarray) -> bool:
    """Whether every feature key in a batch of serialized tf.Examples is one the model takes: one protobuf parse
    of the rows joined, which merges their feature maps, so the keys read are every row's (~1 us a row against
    ~15 us for the example-by-example check). False also when the joined rows are not one readable Example (then
    a row is malformed, and the example-by-example check names it) or the model has no raw signature."""
    import tensorflow as tf

    raw = servable.loaded.signatures.get(RAW_SIGNATURE)
    if raw is None:
        return False
    try:
        keys = tf.train.Example.FromString(b"".join(serialized)).features.feature
    except Exception:  # noqa: BLE001 - protobuf raises DecodeError and friends
        return False
    return set(keys) <= set(raw.structured_input_signature[1])


def check_examples(servable: Servable, serialized: np.ndarray) -> None:
    """tf.Example requests get the same 400s as named inputs: an unknown feature, a value of the wrong type
    or more than one value is named with what the model expects (``parse_example`` would ignore the
    first and answer the others with a bare 'Graph execution error'). ~15 us an example: ``predict`` runs it
    before the model's call only for a version whose signatures do not check values themselves, or when a
    key is unknown; otherwise after a call the model refused, to name the row and the feature."""
    import tensorflow as tf

    raw = servable.loaded.signatures.get(RAW_SIGNATURE)
    if raw is None:
        return
    expected = {name: spec.dtype for name, spec in raw.structured_input_signature[1].items()}
    kinds = {name: "bytes_list" if dtype == tf.string else "float_list" if dtype.is_floating else "int64_list"
             for name, dtype in expected.items()}
    required = sorted(set(expected) - servable.nullable) if servable.nullable is not None else []
    for i, payload in enumerate(serialized):
        try:
            example = tf.train.Example.FromString(payload)
        except Exception:  # noqa: BLE001 - protobuf raises DecodeError and friends
            raise ServingError(400, f"instances[{i}]: 'b64' is not a serialized tf.Example"
                                    + _bare_base64_hint(payload)) from None
        for name, feature in example.features.feature.items():
            if name not in expected:
                raise ServingError(400, f"instances[{i}]: unknown feature {name!r} in the tf.Example; the model "
                                        f"takes {sorted(expected)}")
            kind = feature.WhichOneof("kind")
            if kind is None:
                continue
            if kind != kinds[name]:
                raise ServingError(400, f"instances[{i}]: feature {name!r} is {'an' if kind[0] in 'aeiou' else 'a'} {kind} but the model expects "
                                        f"{expected[name].name} ({kinds[name]})")
            if kind == "float_list" and not all(math.isfinite(v) for v in feature.float_list.value):
                raise ServingError(400, f"instances[{i}]: feature {name!r} is {list(feature.float_list.value)}: NaN and "
                                        "infinity are not values the model was trained on; leave the feature out "
                                        "to send a missing value")
            if len(getattr(feature, kind).value) > 1:
                raise ServingError(400, f"instances[{i}]: feature {name!r} has {len(getattr(feature, kind).value)}"
                                        " values; the model takes one value per row (or none: missing)")
            if kind == "bytes_list" and name in required and feature.bytes_list.value[:1] == [b""]:
                raise ServingError(400, f"instances[{i}]: feature {name!r} is an empty string, which training "
                                        "reads as a missing value; the model needs a value for it")
        features = example.features.feature
        absent = [name for name in required if name not in features  # (`in` first: indexing would add it)
                  or not (kind := features[name].WhichOneof("kind")) or not getattr(features[name], kind).value]
        if absent:
            raise ServingError(400, f"instances[{i}]: {_listed('feature', absent)} missing, but the model needs a "
                                    "value for each feature its raw schema does not let be missing")


def _bare_base64_hint(payload: bytes) -> str:
    """When a row is base64 text of a tf.Example sent without its {"b64": ...} wrapper, say so."""
    import tensorflow as tf

    try:
        tf.train.Example.FromString(binascii.a2b_base64(payload, strict_mode=True))
    except Exception:  # noqa: BLE001 - not that either
        return ""
    return "; it is base64 text of one: send it as {\"b64\": \"...\"}"


def model_error(exc: Exception) -> str:
    """The line of a TensorFlow error that names the problem (the feature, the type), not 'Graph execution error'."""
    noise = ("Graph execution error", "Detected at node", "File ", "<stack traces", "[[", "Traceback")
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    useful = [line for line in lines if not line.startswith(noise)]
    for marker in ("Feature:", "Key:", "Name:", "required", "Data types"):
        for line in useful:
            if marker in line:
                return line
    return useful[0] if useful else (lines[0] if lines else type(exc).__name__)


def _listed(noun: str, names: list[str]) -> str:
    """'feature 'a' is' / 'features ['a', 'b'] are'."""
    return f"{noun} {names[0]!r} is" if len(names) == 1 else f"{noun}s {names} are"


def _is_missing(value: Any) -> bool:
    """null, or NaN as pandas writes an empty cell; Infinity is a value (refused: not one the model was trained on)."""
    return value is None or (isinstance(value, float) and math.isnan(value))


def _missing_as_examples(servable: Servable, body: dict, specs: dict) -> dict | None:
    """A ``serving_raw`` request whose rows hold JSON null or NaN for some features: when every such
    feature may be missing (the model's raw schema says nullable), the rows become tf.Examples without them and
    go to ``serving_default`` (the same TFT graph, filling them as in training); otherwise a 400 naming it."""
    from pipelines.serving.client import encode_example

    if "instances" in body and isinstance(body["instances"], list) and all(isinstance(r, dict)
                                                                           for r in body["instances"]):
        rows, where = body["instances"], "instances"
    elif "inputs" in body and isinstance(body["inputs"], dict) and all(isinstance(v, list)
                                                                        for v in body["inputs"].values()):
        names = list(body["inputs"])
        rows = [dict(zip(names, values, strict=False)) for values in zip(*body["inputs"].values(), strict=False)]
        where = "inputs"
    else:
        return None
    if not any(_is_missing(v) for row in rows for v in row.values()):
        return None
    if where == "inputs" and len(lengths := {len(v) for v in body["inputs"].values()}) > 1:
        raise ServingError(400, f"inputs: named inputs have different batch sizes {sorted(lengths)}")
    for i, row in enumerate(rows):
        _check_names(row, sorted(specs), f"{where}[{i}]")
        for name, value in row.items():
            if _is_missing(value) and (servable.nullable is None or name not in servable.nullable):
                raise ServingError(400, f"{where}[{i}]: feature {name!r} is {json.dumps(value)}, but the model needs "
                                        "a value for it (its raw schema does not let it be missing)")
    for name, spec in specs.items():  # the values given pass the checks a request without missing ones gets
        given = [i for i, row in enumerate(rows) if not _is_missing(row[name])]
        _convert([rows[i][name] for i in given], spec.dtype, f"named input '{name}'" if where == "instances" else
                 f"{where}: named input '{name}'", rows=given, row_format=where == "instances")
    types = {n: "DT_STRING" if spec.dtype.name == "string" else "DT_FLOAT" if spec.dtype.is_floating else "DT_INT64"
             for n, spec in specs.items()}
    try:
        examples = [encode_example({k: v for k, v in row.items() if not _is_missing(v)}, types) for row in rows]
    except ValueError as exc:
        raise ServingError(400, f"{where}: {exc}") from None
    return {"instances": [{"b64": base64.b64encode(e).decode()} for e in examples]}


def predict(servable: Servable, body: dict) -> dict:
    import tensorflow as tf

    if body.get("signature_name") == RAW_SIGNATURE and RAW_SIGNATURE in servable.loaded.signatures:
        specs = servable.loaded.signatures[RAW_SIGNATURE].structured_input_signature[1]
        if (as_examples := _missing_as_examples(servable, body, specs)) is not None:
            rows = predict(servable, as_examples)["predictions"]
            if "instances" in body:
                return {"predictions": rows}
            return {"outputs": {k: [r[k] for r in rows] for k in rows[0]} if isinstance(rows[0], dict) else rows}
    signature = _signature(servable, body.get("signature_name"))
    specs = signature.structured_input_signature[1]
    if "instances" in body and "inputs" in body:
        raise ServingError(400, "Not both 'instances' and 'inputs' may be given")
    if "instances" in body:
        columns, row_format = _row_inputs(body["instances"], specs), True
    elif "inputs" in body:
        columns, row_format = _columnar_inputs(body["inputs"], specs), False
    else:
        raise ServingError(400, "Missing 'instances' or 'inputs' key in the request body")
    examples = set(columns) == {"examples"} and specs["examples"].dtype == tf.string
    # A version exported with its value checks refuses NaN and extra values itself (tf_schema.value_checks, as
    # TF Serving would); what is left is the keys, in one parse. For such a batch, the row-by-row check runs only
    # after a refusal, to name the row. TensorFlow's Example parser, the model's own, and protobuf agree on
    # every canonical encoding; for encodings no library emits (a list split over two packed blocks) the model
    # reads the first block where protobuf merges both: such a row is answered by what the model reads, as TF
    # Serving would, unless a check runs first (an older version, or an unknown key), which refuses it.
    checked_by_model = examples and servable.checks_values and _keys_known(servable, columns["examples"])
    if examples and not checked_by_model:
        check_examples(servable, columns["examples"])
    try:
        outputs = signature(**{n: tf.constant(v, dtype=specs[n].dtype) for n, v in columns.items()})
    except (tf.errors.InvalidArgumentError, ValueError, TypeError) as exc:
        if checked_by_model:
            check_examples(servable, columns["examples"])
        log.warning("version %s rejected a request: %s", servable.number, exc)
        raise ServingError(400, f"the model rejected the request: {model_error(exc)}") from None
    outputs = {k: [x.decode() if isinstance(x, bytes) else x for x in v.numpy().tolist()] for k, v in outputs.items()}
    if not row_format:
        return {"outputs": next(iter(outputs.values())) if len(outputs) == 1 else outputs}
    if len(outputs) == 1:
        return {"predictions": next(iter(outputs.values()))}
    rows = len(next(iter(outputs.values())))
    return {"predictions": [{k: v[i] for k, v in outputs.items()} for i in range(rows)]}


def metadata(name: str, servable: Servable) -> dict:
    from google.protobuf import json_format
    from tensorflow_serving.apis import get_model_metadata_pb2

    signature_map = get_model_metadata_pb2.SignatureDefMap()
    for key, signature_def in servable.signature_defs.items():
        if not key.startswith("__"):
            signature_map.signature_def[key].CopyFrom(signature_def)
    return {
        "model_spec": {"name": name, "signature_name": "", "version": str(servable.number)},
        "metadata": {"signature_def": {
            **json_format.MessageToDict(signature_map, preserving_proto_field_name=True),
            "@type": "type.googleapis.com/tensorflow.serving.SignatureDefMap",
        }},
    }


MAX_BODY_BYTES = 64 << 20  # TF Serving's default gRPC message limit is 64 MiB too
MAX_JSON_DEPTH = 32  # a predict body nests four deep; deeper is an attack or a bug
READ_TIMEOUT_SECONDS = 10.0  # a client that stops sending gets a 408, not a hung thread


def _json_depth(value: Any, limit: int = MAX_JSON_DEPTH) -> int:
    """Nesting depth of parsed JSON, stopping early beyond ``limit``."""
    depth, level = 0, [value]
    while level and depth <= limit:
        depth += 1
        level = [v for item in level if isinstance(item, dict | list)
                 for v in (item.values() if isinstance(item, dict) else item)]
    return depth


def read_body(headers, rfile) -> bytes:
    """The request's body, sent with a Content-Length or chunked (as TF Serving takes it), or a ServingError:
    411/400 for a missing or bad Content-Length, 400 for a malformed chunk, 501 for a transfer coding other
    than chunked, 413 above the size limit, 408 when the client stops sending, 400 when it ends early."""
    lengths = headers.get_all("Content-Length") or []
    if len(set(lengths)) > 1:  # which one ends the body? (request smuggling)
        raise ServingError(400, f"conflicting Content-Length headers: {', '.join(lengths)}")
    if (encodings := headers.get_all("Transfer-Encoding")) is not None:
        if lengths:  # RFC 9112 6.3: Transfer-Encoding overrides it, a proxy may have read it the other way
            raise ServingError(400, f"Transfer-Encoding: {', '.join(encodings)} beside a Content-Length: send one "
                               "or the other")
        codings = [c.strip().lower() for value in encodings for c in value.split(",")]
        if codings != ["chunked"]:
            raise ServingError(501, f"Transfer-Encoding: {', '.join(encodings)} is not supported: send the body "
                               "with a Content-Length or Transfer-Encoding: chunked")
        return _read_chunked(rfile)
    if not lengths:
        raise ServingError(411, "Content-Length is required")
    declared = lengths[0]
    if not declared.strip().isdigit():
        raise ServingError(400, f"Content-Length {declared!r} is not a non-negative integer")
    length = int(declared)
    if length > MAX_BODY_BYTES:
        raise ServingError(413, f"request body of {length} bytes is over the limit of {MAX_BODY_BYTES} bytes")
    try:
        raw = rfile.read(length)
    except TimeoutError:
        raise ServingError(408, f"the request body did not arrive within {READ_TIMEOUT_SECONDS:g}s") from None
    if len(raw) < length:
        raise ServingError(400, f"the request body ended after {len(raw)} of {length} bytes")
    return raw


_CHUNK_SIZE = re.compile(rb"[0-9a-fA-F]{1,16}")
MAX_CHUNK_LINE = 4096  # a chunk-size line with its extensions, or one trailer field
MAX_TRAILERS = 100


def _read_chunked(rfile) -> bytes:
    """A ``Transfer-Encoding: chunked`` body (RFC 9112 7.1): each chunk's hexadecimal size line (extensions
    ignored), its bytes and CRLF, up to a chunk of size 0; trailer fields are read and dropped. The body's
    framing counts toward ``MAX_BODY_BYTES`` too (a body of 1-byte chunks costs its framing, not just its data)."""
    body = bytearray()
    received = 0
    chunks = 0

    def line(what: str) -> bytes:
        nonlocal received
        text = rfile.readline(MAX_CHUNK_LINE + 1)
        received += len(text)
        if not text.endswith(b"\n"):
            raise ServingError(400, f"the chunked body ended inside {what}" if len(text) <= MAX_CHUNK_LINE
                               else f"{what} is longer than {MAX_CHUNK_LINE} bytes")
        return text.rstrip(b"\r\n")

    try:
        while True:
            chunks += 1
            size_text = line(f"the size line of chunk {chunks}").split(b";", 1)[0].strip()
            if not _CHUNK_SIZE.fullmatch(size_text):
                raise ServingError(400, f"chunk {chunks}: size {size_text[:40].decode('latin-1')!r} is "
                                   "not a hexadecimal number")
            size = int(size_text, 16)
            if size == 0:
                break
            if received + size > MAX_BODY_BYTES:
                raise ServingError(413, f"the chunked request body is over the limit of {MAX_BODY_BYTES} bytes")
            data = rfile.read(size)
            received += len(data)
            if len(data) < size:
                raise ServingError(400, f"the chunked body ended inside chunk {chunks}, after {len(data)} of its "
                                   f"{size} bytes")
            body += data
            end = rfile.readline(3)
            received += len(end)
            if end not in (b"\r\n", b"\n"):
                raise ServingError(400, f"the chunked body ended after chunk {chunks}, without the 0-size chunk"
                                   if end in (b"", b"\r") else f"chunk {chunks} is longer than its declared {size} "
                                   "bytes")
        for _ in range(MAX_TRAILERS + 1):
            if not line("the trailer fields"):
                return bytes(body)
        raise ServingError(400, f"more than {MAX_TRAILERS} trailer fields")
    except TimeoutError:
        raise ServingError(408, f"the request body did not arrive within {READ_TIMEOUT_SECONDS:g}s") from None


class _B64(msgspec.Struct, forbid_unknown_fields=True):
    b64: bytes  # msgspec decodes the base64 (standard alphabet, padded) and refuses anything else


class _ExampleBatch(msgspec.Struct, forbid_unknown_fields=True):
    instances: list[_B64]
    signature_name: str | None = None


_EXAMPLE_BATCH = msgspec.json.Decoder(_ExampleBatch)


class Decoded:
    """``instances`` of the usual tf.Example batch, every row ``{"b64": ...}``, read with the base64 decoded
    (``decoded``: the rows' bytes). ``json()`` is the JSON as sent, for a signature that does not take one
    string input: its checks name what the request got wrong."""

    def __init__(self, decoded: np.ndarray, raw: bytes):
        self.decoded, self._raw = decoded, raw

    def json(self) -> list:
        return json.loads(self._raw)["instances"]


def parse_body(raw: bytes) -> dict:
    """The body's JSON object, or a ServingError 400 for malformed or too deeply nested JSON. The usual
    tf.Example batch is read in one pass that decodes its base64 too (``Decoded``); any other body, or one
    that pass refuses, is read as JSON and checked as such."""
    try:
        batch = _EXAMPLE_BATCH.decode(raw)
    except (msgspec.MsgspecError, UnicodeDecodeError):  # (msgspec raises the latter for a string it must read)
        pass
    else:
        if batch.instances:
            body = {"instances": Decoded(np.array([row.b64 for row in batch.instances], dtype=object), raw)}
            if batch.signature_name is not None:
                body["signature_name"] = batch.signature_name
            return body
    try:
        body = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ServingError(400, f"JSON Parse error: {exc}") from None
    except RecursionError:
        raise ServingError(400, f"JSON Parse error: nested deeper than {MAX_JSON_DEPTH} levels") from None
    if _json_depth(body) > MAX_JSON_DEPTH:
        raise ServingError(400, f"JSON Parse error: nested deeper than {MAX_JSON_DEPTH} levels")
    if not isinstance(body, dict):
        raise ServingError(400, "JSON Parse error: the request body must be a JSON object")
    return body


class _Handler(BaseHTTPRequestHandler):
    server: ModelHTTPServer
    _unread = False  # the request declares a body not read yet: answered now, the connection must close
    protocol_version = "HTTP/1.1"
    timeout = READ_TIMEOUT_SECONDS  # socket timeout for every read: no connection hangs a thread forever

    def setup(self) -> None:
        import socket

        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # no Nagle delay on small answers

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        log.debug("%s " + format, self.address_string(), *args)

    def _send(self, status: int, payload: dict) -> None:
        try:
            data = msgspec.json.encode(payload)
        except (TypeError, ValueError):  # e.g. a lone surrogate in a name the client sent, quoted in an error
            data = b"null"
        if b"null" in data:  # maybe a NaN or infinity, which msgspec writes as null: written as TF Serving does
            data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if self._unread:  # its bytes would be read as the next request
            self.send_header("Connection", "close")
            self.close_connection = True
        self._headers_buffer.append(b"\r\n")  # end_headers(), but headers and body leave in one send
        self.wfile.write(b"".join(self._headers_buffer) + data)
        self._headers_buffer = []

    def _route(self, method: str) -> None:
        self._unread = self.headers.get("Transfer-Encoding") is not None or \
            any(length.strip() != "0" for length in self.headers.get_all("Content-Length") or [])
        try:
            match = _PATH.match(self.path.split("?", 1)[0])
            if not match:
                raise ServingError(404, f"Malformed request: {method} {self.path}")
            name, label = match["name"], match["label"]
            version = None
            if match["version"] is not None:
                if not match["version"].isdigit():
                    raise ServingError(400, f"Malformed request: version '{match['version']}' is not an integer")
                version = int(match["version"])
            manager = self.server.manager
            if method == "GET" and not match["verb"]:
                if match["metadata"]:
                    self._send(200, metadata(name, manager.servable(name, version, label)))
                else:
                    self._send(200, {"model_version_status": manager.statuses(name, version, label)})
            elif method == "POST" and match["verb"] == "predict" and not match["metadata"]:
                raw = read_body(self.headers, self.rfile)
                self._unread = False  # a 4xx about this body keeps the connection
                self._send(200, predict(manager.servable(name, version, label), parse_body(raw)))
            elif match["verb"] in ("classify", "regress"):
                raise ServingError(400, f"this local server implements :predict only, not :{match['verb']}")
            else:
                raise ServingError(405 if match else 404, f"Malformed request: {method} {self.path}")
        except ServingError as exc:
            self._send(exc.status, {"error": exc.message})
        except Exception as exc:  # an unexpected server bug is a 500 with its message, never a dropped socket
            log.exception("request failed")
            self._send(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": f"{type(exc).__name__}: {exc}"})

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self._route("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._route("POST")

    def _other_method(self) -> None:  # a JSON 405 rather than http.server's HTML 501
        self._route(self.command)

    do_PUT = do_DELETE = do_PATCH = _other_method


class ModelHTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], manager: ModelManager):
        super().__init__(address, _Handler)
        self.manager = manager

    def serve_in_thread(self) -> threading.Thread:
        thread = threading.Thread(target=self.serve_forever, name="model-http", daemon=True)
        thread.start()
        return thread
