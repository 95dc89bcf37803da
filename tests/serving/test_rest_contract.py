"""REST contract of the model server: the local dev server, and a real TF Serving when configured.

Set ``TF_SERVING_URL`` (e.g. http://127.0.0.1:8501) and ``TF_SERVING_MODEL_BASE_PATH`` (the
directory that server watches for the model ``taxi``, shared with this machine) to run every
test here against ``tensorflow/serving`` too; without them that target is skipped.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from pipelines.serving.client import ModelServerClient
from tests.conftest import END, ROOT, free_port

pytestmark = pytest.mark.slow
MODEL = "taxi"


@dataclass
class Target:
    url: str
    base_path: Path
    version: int
    local: bool = True  # the project's dev server (False: a real TF Serving)


def http(method: str, url: str, body: bytes | dict | None = None) -> tuple[int, dict]:
    root, _, path = url.partition("/v1/")
    return ModelServerClient(root).request(method, "/v1/" + path, body)


@pytest.fixture(scope="module", params=["local", "tf_serving"])
def target(request, trained_run, tmp_path_factory, taxi_config):
    from pipelines.publish import publish

    process = None
    if request.param == "tf_serving":
        url, base = os.environ.get("TF_SERVING_URL"), os.environ.get("TF_SERVING_MODEL_BASE_PATH")
        if not url or not base:
            pytest.skip("real TF Serving not configured: set TF_SERVING_URL and TF_SERVING_MODEL_BASE_PATH "
                        "(a model base path for 'taxi' shared with that server) to run this contract against it")
        base_path = Path(base)
        if base_path.name != MODEL:
            pytest.skip(f"TF_SERVING_MODEL_BASE_PATH must end in /{MODEL}")
        url = url.rstrip("/")
    else:
        base_path = tmp_path_factory.mktemp("serving") / MODEL
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        process = subprocess.Popen(
            [sys.executable, "-m", "pipelines", "serve", "--model-name", MODEL, "--model-base-path", str(base_path),
             "--port", str(port), "--file-system-poll-wait-seconds", "0.2"],
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
    published = publish(taxi_config, interval=END, artifact_root=trained_run["artifact_root"],
                        serving_root=base_path.parent)
    try:
        ModelServerClient(url).wait_until_available(MODEL, published.version)
        yield Target(url, base_path, published.version, local=process is not None)
    finally:
        if process:
            process.terminate()
            process.wait(timeout=30)


@pytest.fixture(scope="module")
def canary(trained_run):
    return json.loads(Path(trained_run["run"].read_result("evaluate")["canary"]).read_text())


def test_model_status(target):
    status, body = http("GET", f"{target.url}/v1/models/{MODEL}")
    assert status == 200
    assert {"version": str(target.version), "state": "AVAILABLE",
            "status": {"error_code": "OK", "error_message": ""}} in body["model_version_status"]
    status, body = http("GET", f"{target.url}/v1/models/{MODEL}/versions/{target.version}")
    assert status == 200 and body["model_version_status"][0]["state"] == "AVAILABLE"


def test_unknown_model_and_version_are_404(target):
    status, body = http("GET", f"{target.url}/v1/models/no_such_model")
    assert status == 404 and "no_such_model" in body["error"]
    status, body = http("GET", f"{target.url}/v1/models/{MODEL}/versions/7")
    assert status == 404 and "7" in body["error"]
    status, body = http("POST", f"{target.url}/v1/models/{MODEL}/versions/7:predict", {"instances": [{"b64": ""}]})
    assert status == 404 and "error" in body


def test_metadata_lists_both_raw_feature_signatures(target):
    status, body = http("GET", f"{target.url}/v1/models/{MODEL}/metadata")
    assert status == 200
    assert body["model_spec"]["name"] == MODEL and body["model_spec"]["version"] == str(target.version)
    signatures = body["metadata"]["signature_def"]["signature_def"]
    assert set(signatures) >= {"serving_default", "serving_raw"}
    assert set(signatures["serving_default"]["inputs"]) == {"examples"}
    assert signatures["serving_raw"]["inputs"]["trip_miles"]["dtype"] == "DT_FLOAT"
    assert signatures["serving_raw"]["inputs"]["company"]["dtype"] == "DT_STRING"
    assert "tipped" not in signatures["serving_raw"]["inputs"]


def test_predict_tf_examples_match_offline_predictions(target, canary):
    status, body = http("POST", f"{target.url}/v1/models/{MODEL}/versions/{target.version}:predict",
                        {"instances": [{"b64": row["b64"]} for row in canary]})
    assert status == 200, body
    np.testing.assert_allclose(body["predictions"], [row["prediction"] for row in canary], atol=1e-5)


def test_predict_json_rows_and_columns(target, canary):
    complete = [row for row in canary if len(row["features"]) == 11][:10]
    assert complete
    status, rows = http("POST", f"{target.url}/v1/models/{MODEL}:predict",
                        {"signature_name": "serving_raw", "instances": [row["features"] for row in complete]})
    assert status == 200, rows
    np.testing.assert_allclose(rows["predictions"], [row["prediction"] for row in complete], atol=1e-5)
    columns = {name: [row["features"][name] for row in complete] for name in complete[0]["features"]}
    status, cols = http("POST", f"{target.url}/v1/models/{MODEL}:predict",
                        {"signature_name": "serving_raw", "inputs": columns})
    assert status == 200, cols
    np.testing.assert_allclose(cols["outputs"], rows["predictions"], atol=1e-6)


def test_client_sends_sparse_dict_rows_as_tf_examples(target, canary):
    """pipelines.serving.client.predict_rows: plain dicts, missing features absent or None."""
    sparse = sorted(canary, key=lambda row: len(row["features"]))[:5]
    assert len(sparse[0]["features"]) < 11  # real rows with missing values
    rows = [dict(row["features"], fare=row["features"].get("fare")) for row in sparse]  # None: missing too
    predictions = ModelServerClient(target.url).predict_rows(MODEL, rows, version=target.version)
    np.testing.assert_allclose(predictions, [row["prediction"] for row in sparse], atol=1e-5)


def test_client_reads_csv_dictreader_rows_as_training_reads_the_csv(target, canary):
    """A user trial: csv.DictReader rows, which the README offers, failed with "'24.95' is not a number". A
    number feature's text is read by the grammar training's CSV reader uses: the same predictions as typed
    rows; text that reader would not take as a number ('1_000', which Python's float() takes) is refused."""
    import csv
    import io

    sparse = sorted(canary, key=lambda row: len(row["features"]))[:5]
    names = sorted({name for row in canary for name in row["features"]})
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=names)
    writer.writeheader()
    writer.writerows(row["features"] for row in sparse)  # an absent feature: an empty cell
    rows = list(csv.DictReader(io.StringIO(text.getvalue())))
    assert all(isinstance(v, str) for row in rows for v in row.values()) and any("" in row.values() for row in rows)
    client = ModelServerClient(target.url)
    predictions = client.predict_rows(MODEL, rows, version=target.version)
    np.testing.assert_allclose(predictions, [row["prediction"] for row in sparse], atol=1e-5)
    with pytest.raises(ValueError, match=r"feature 'trip_miles': '1_000' is not a number"):
        client.predict_rows(MODEL, [dict(rows[0], trip_miles="1_000")], version=target.version)


def _example(row: dict, **override_types) -> dict:
    import base64

    from pipelines.serving.client import encode_example

    types = {"company": "DT_STRING", "payment_type": "DT_STRING", "trip_seconds": "DT_INT64", "pickup_hour": "DT_INT64",
             "pickup_day_of_week": "DT_INT64", "colour": "DT_STRING"}
    types = {name: types.get(name, "DT_FLOAT") for name in row} | override_types
    return {"b64": base64.b64encode(encode_example(row, types)).decode()}


def test_tf_example_with_a_wrong_type_is_400_naming_the_feature(target, canary):
    row = _row(canary)
    status, body = http("POST", f"{target.url}/v1/models/{MODEL}:predict",
                        {"instances": [_example(dict(row, trip_miles=3), trip_miles="DT_INT64")]})
    assert status == 400, body
    assert "trip_miles" in body["error"]
    if target.local:
        assert "feature 'trip_miles' is an int64_list but the model expects float32 (float_list)" in body["error"]


def test_tf_example_with_an_unknown_feature_is_400_on_the_local_server(target, canary):
    if not target.local:
        pytest.skip("TF Serving's parse_example ignores features the model does not take")
    status, body = http("POST", f"{target.url}/v1/models/{MODEL}:predict",
                        {"instances": [_example(dict(_row(canary), colour="red"))]})
    assert status == 400 and "unknown feature 'colour' in the tf.Example" in body["error"], body


def _row(canary) -> dict:
    return dict(next(row for row in canary if len(row["features"]) == 11)["features"])


def test_errors_name_the_row_and_say_what_to_send_instead(target, canary):
    """What a client integrating against the server gets wrong first: the message names the row among many and
    says what the server takes (the local server's wording)."""
    if not target.local:
        pytest.skip("the local server's wording")
    url = f"{target.url}/v1/models/{MODEL}:predict"
    rows = [_row(canary)] * 5
    rows[3] = {**rows[3], "trip_miles": True}
    status, body = http("POST", url, {"signature_name": "serving_raw", "instances": rows})
    assert status == 400 and "instances[3]: named input 'trip_miles': JSON boolean true is not of expected type " \
        "float32" in body["error"], body
    # named raw features sent to serving_default
    status, body = http("POST", url, {"instances": [_row(canary)]})
    assert status == 400 and '"signature_name": "serving_raw"' in body["error"], body
    status, body = http("POST", url, {"signature_name": "serving_raw", "instances": [{**_row(canary), "company": {}}]})
    assert status == 400 and "JSON object {} is not of expected type string" in body["error"], body
    assert "serving_raw" not in body["error"]  # the hint is for the tf.Example input only
    # a tf.Example's base64 text without its {"b64": ...} wrapper
    status, body = http("POST", url, {"instances": [canary[0]["b64"]]})
    assert status == 400 and 'it is base64 text of one: send it as {"b64": "..."}' in body["error"], body
    # methods the API does not have answer in JSON, like every other error
    for method in ("PUT", "DELETE"):
        status, body = http(method, url, {"instances": [{"b64": canary[0]["b64"]}]})
        assert status == 405 and f"Malformed request: {method} " in body["error"], body


@pytest.mark.parametrize(
    ("edit", "named"),
    [
        (lambda r: {k: v for k, v in r.items() if k != "company"}, "company"),
        (lambda r: {**r, "colour": "red"}, "colour"),
        (lambda r: {**{k: v for k, v in r.items() if k != "fare"}, "fair": r["fare"]}, "fair"),  # both named
        (lambda r: {**r, "trip_miles": "three"}, "trip_miles"),
        (lambda r: {**r, "pickup_hour": 7.5}, "pickup_hour"),
        (lambda r: {**r, "company": 12}, "company"),
    ],
    ids=["missing-feature", "unknown-feature", "misspelt-feature", "string-for-float", "float-for-int",
         "number-for-string"],
)
def test_bad_rows_are_400_naming_the_feature(target, canary, edit, named):
    if named == "fair" and not target.local:
        pytest.skip("naming both the misspelt and the missing input is the local server's wording")
    status, body = http("POST", f"{target.url}/v1/models/{MODEL}:predict",
                        {"signature_name": "serving_raw", "instances": [edit(_row(canary))]})
    assert status == 400, body
    assert named in body["error"]
    if named == "fair":  # the misspelt name and the one it stands for, in one message
        assert "unknown named input(s) ['fair'] and missing named input(s) ['fare']" in body["error"], body


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (b'{"instances": [', "JSON"),
        (b'{"signature_name": "serving_raw", "instances": []}', "empty"),
        (b'{"signature_name": "nope", "instances": [1]}', "nope"),
        (b'{"nothing": 1}', "instances"),
    ],
    ids=["malformed-json", "empty-batch", "unknown-signature", "no-instances"],
)
def test_bad_bodies_are_400(target, body, says):
    status, answer = http("POST", f"{target.url}/v1/models/{MODEL}:predict", body)
    assert status == 400, answer
    assert says.lower() in answer["error"].lower()


@pytest.mark.parametrize("literal", ["NaN", "null", "Infinity", "-Infinity"])
def test_json_nan_and_null_are_missing_where_the_schema_allows_it(target, canary, literal):
    """A nullable feature (trip_miles) given as NaN (a pandas frame's empty cell) or null is served as missing,
    exactly as a tf.Example without it; a feature that may not be missing (pickup_hour) is a 400 naming it.
    Infinity is a value, not a missing one: a 400 for any feature (it used to be served as missing)."""
    if not target.local:
        pytest.skip("TF Serving has no notion of a nullable raw feature (its JSON parser refuses NaN)")
    row = _row(canary)

    def post(feature: str, rows_format: bool = True):
        text = json.dumps({**row, feature: 0}).replace(f'"{feature}": 0', f'"{feature}": {literal}')
        body = (f'{{"signature_name": "serving_raw", "instances": [{text}]}}' if rows_format else
                '{"signature_name": "serving_raw", "inputs": {' + ", ".join(
                    f'"{k}": [{json.dumps(v) if k != feature else literal}]' for k, v in {**row, feature: 0}.items())
                + "}}")
        return http("POST", f"{target.url}/v1/models/{MODEL}:predict", body.encode())

    if "Infinity" in literal:
        for feature in ("trip_miles", "fare"):
            for rows_format in (True, False):
                status, body = post(feature, rows_format)
                where = f"instances[0]: named input '{feature}':" if rows_format else f"'{feature}', row 0:"
                assert status == 400 and f"{where} {literal} is not a value the model was trained on" \
                    in body["error"], (feature, body)
        row["company"] = None  # with a missing value beside it the rows go another way: the same refusal
        status, body = post("trip_miles")
        assert status == 400 and f"instances[0]: named input 'trip_miles': {literal} is not a value" in body["error"], body
        return
    status, body = post("trip_miles")
    assert status == 200, body
    [missing] = ModelServerClient(target.url).predict_rows(MODEL, [{**row, "trip_miles": None}])
    [as_nan] = ModelServerClient(target.url).predict_rows(MODEL, [{**row, "trip_miles": float("nan")}])  # pandas
    assert as_nan == missing
    assert body["predictions"][0] == pytest.approx(missing, abs=1e-6)
    status, columns = post("trip_miles", rows_format=False)
    assert status == 200 and columns["outputs"][0] == pytest.approx(missing, abs=1e-6), columns
    status, body = post("pickup_hour")
    assert status == 400 and "feature 'pickup_hour'" in body["error"] and "needs a value" in body["error"], body
    assert f"is {literal}," in body["error"], body  # the JSON the client sent, not Python's None or nan


def test_a_request_with_missing_values_gets_every_other_check(target, canary):
    """A missing value sends the rows down another path (tf.Examples without it); the values given must
    still meet every check a complete row meets: before, an int64 of 2**70 was cut to 0 and served, a float
    over float32's range was a 500, 12.0 passed as an int64 and columns of different lengths lost rows."""
    if not target.local:
        pytest.skip("TF Serving has no notion of a nullable raw feature")
    row = {**_row(canary), "trip_miles": None}
    for feature, value, says in (("trip_seconds", 2**70, "out of the range of int64"),
                                 ("trip_seconds", 12.0, "JSON number 12.0 is not of expected type int64"),
                                 ("fare", 1e39, "out of the range of float32"),
                                 ("fare", 10**400, "out of the range of float32"),  # was a 500 (OverflowError)
                                 ("company", 7, "JSON integer 7 is not of expected type string")):
        for rows_format in (True, False):
            bad = {**row, feature: value}
            body = ({"signature_name": "serving_raw", "instances": [row, bad]} if rows_format else
                    {"signature_name": "serving_raw", "inputs": {k: [row[k], bad[k]] for k in row}})
            status, answer = http("POST", f"{target.url}/v1/models/{MODEL}:predict", body)
            where = f"instances[1]: named input '{feature}': " if rows_format else f"named input '{feature}', row 1: "
            assert status == 400 and where in answer["error"], (feature, value, answer)
            assert says in answer["error"], (feature, value, answer)
    # the row named is the request's row, also when earlier rows left that feature out
    status, answer = http("POST", f"{target.url}/v1/models/{MODEL}:predict", {
        "signature_name": "serving_raw", "instances": [{**row, "fare": None}, row, {**row, "fare": 1e39}]})
    assert status == 400 and "instances[2]: named input 'fare': 1e+39 is out of the range of float32" in answer["error"], answer
    columns = {k: [v, v, v] for k, v in row.items()} | {"fare": [1.0, 2.0]}
    status, answer = http("POST", f"{target.url}/v1/models/{MODEL}:predict",
                          {"signature_name": "serving_raw", "inputs": columns})
    assert status == 400 and "different batch sizes [2, 3]" in answer["error"], answer


def test_the_client_refuses_values_a_tf_example_cannot_carry():
    from pipelines.serving.client import encode_example

    with pytest.raises(ValueError, match="feature 'n': 1180591620717411303424 is out of the range of int64"):
        encode_example({"n": 2**70}, {"n": "DT_INT64"})
    for huge in (1e39, 10**400):
        with pytest.raises(ValueError, match="feature 'x': .* is out of the range of float32"):
            encode_example({"x": huge}, {"x": "DT_FLOAT"})
    assert encode_example({"n": -(2**63)}, {"n": "DT_INT64"}) != encode_example({"n": 0}, {"n": "DT_INT64"})
    # a pandas frame's empty cell is NaN, also in an int column (which pandas then holds as floats): missing
    types = {"n": "DT_INT64", "x": "DT_FLOAT"}
    assert encode_example({"n": float("nan"), "x": float("nan")}, types) == encode_example({}, types)
    assert encode_example({"n": 3.0, "x": float("nan")}, types) == encode_example({"n": 3}, types)
    assert encode_example({"x": math.inf}, types) != encode_example({}, types)  # a value (the server refuses it)
    with pytest.raises(ValueError, match="unknown feature 'fair'"):  # a misspelt column, also where it is empty
        encode_example({"fair": float("nan")}, types)
    # numpy's scalars (a frame's to_numpy(), or values taken from an array) are numbers like Python's
    assert encode_example({"n": np.int64(3), "x": np.float32(1.5)}, types) == encode_example({"n": 3, "x": 1.5}, types)
    assert encode_example({"n": np.float64("nan"), "x": np.float32("nan")}, types) == encode_example({}, types)
    with pytest.raises(ValueError, match="feature 'n': 2.5 is not an integer"):
        encode_example({"n": np.float32(2.5)}, types)
    # nothing is sent when a row cannot be encoded, and the error names the row
    with pytest.raises(ValueError, match=r"^rows\[1\]: feature 'n': 2.5 is not an integer$"):
        ModelServerClient("http://127.0.0.1:9").predict_rows(MODEL, [{"n": 1}, {"n": 2.5}], types=types)
    # csv.DictReader's empty cell is "": missing, as training reads an empty CSV cell (an int's "" was refused, a
    # string's "" sent as the value "")
    types["s"] = "DT_STRING"
    assert encode_example({"n": "", "x": "", "s": ""}, types) == encode_example({}, types)
    assert encode_example({"s": b""}, types) == encode_example({}, types)
    assert encode_example({"s": " "}, types) != encode_example({}, types)  # a value, as in training
    with pytest.raises(ValueError, match=r"feature 's': array\(\['a'\]"):  # (not a TypeError: the row is named)
        encode_example({"s": np.array(["a"])}, types)

def _raw_exchange(url: str, request: bytes) -> tuple[int, float]:
    """Send bytes as they are (malformed on purpose); the status line and how long it took."""
    import socket

    host, port = url.split("//", 1)[1].split(":")
    started = time.monotonic()
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(request)
        head = sock.recv(4096).split(b"\r\n", 1)[0]
    return int(head.split()[1]), time.monotonic() - started


@pytest.mark.parametrize(("headers", "body", "status"), [
    ("Content-Length: abc", b"{}", 400),
    ("Content-Length: -1", b"{}", 400),
    (f"Content-Length: {1 << 40}", b"{}", 413),
    (None, b"[" * 1000 + b"]" * 1000, 400),
    (None, b'{"signature_name": "serving_raw", "instances": [{"pickup_hour": 1000000000000000000000000000000}]}', 400),
], ids=["length-not-a-number", "negative-length", "too-large", "nested-1000-deep", "int-overflow"])
def test_malformed_requests_get_a_4xx_at_once_and_the_server_keeps_serving(target, canary, headers, body, status):
    if not target.local:
        pytest.skip("the local server's request limits; TF Serving has its own")
    headers = headers or f"Content-Length: {len(body)}"
    request = (f"POST /v1/models/{MODEL}:predict HTTP/1.1\r\nHost: x\r\n{headers}\r\n\r\n").encode() + body
    got, seconds = _raw_exchange(target.url, request)
    assert got == status and seconds < 1.0
    ok, answer = http("POST", f"{target.url}/v1/models/{MODEL}:predict", {"instances": [{"b64": canary[0]["b64"]}]})
    assert ok == 200, answer


@pytest.mark.parametrize(("framing", "status", "says"), [
    ("Content-Length: {n}\r\nContent-Length: {more}", 400, "conflicting Content-Length headers: {n}, {more}"),
    ("Content-Length: 0\r\nContent-Length: {n}", 400, "conflicting Content-Length headers: 0, {n}"),
    ("Transfer-Encoding: chunked\r\nContent-Length: {n}", 400,
     "Transfer-Encoding: chunked beside a Content-Length: send one or the other"),
    ("Transfer-Encoding: gzip, chunked", 501, "Transfer-Encoding: gzip, chunked is not supported"),
], ids=["two-lengths", "zero-then-length", "chunked-and-length", "other-coding"])
def test_a_body_of_two_possible_lengths_is_refused_and_the_connection_closed(target, canary, framing, status, says):
    """Which header ends the body decides where the next request starts (request smuggling behind a proxy):
    the server picks none, answers at once and closes the connection, so no byte of it is read as a request."""
    if not target.local:
        pytest.skip("the local server's request limits; TF Serving has its own")
    import socket

    body = json.dumps({"instances": [{"b64": canary[0]["b64"]}]}).encode()
    n, more = len(body), len(body) + 40
    host, port = target.url.split("//", 1)[1].split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(f"POST /v1/models/{MODEL}:predict HTTP/1.1\r\nHost: x\r\n{framing.format(n=n, more=more)}"
                     "\r\n\r\n".encode() + body)
        answer = sock.recv(65536)
    assert answer.startswith(f"HTTP/1.1 {status}".encode()) and b"Connection: close" in answer, answer[:300]
    assert says.format(n=n, more=more).encode() in answer


def test_a_chunked_body_is_read_as_its_content_length_twin(target, canary):
    """TF Serving takes chunked request bodies (what a client streaming its body sends): same answer as the
    same bytes with a Content-Length, and the connection serves the next request."""
    import http.client

    host, port = target.url.split("//", 1)[1].split(":")
    body = json.dumps({"instances": [{"b64": row["b64"]} for row in canary[:3]]}).encode()
    conn = http.client.HTTPConnection(host, int(port), timeout=10)

    def post(chunks) -> tuple[int, dict]:
        conn.request("POST", f"/v1/models/{MODEL}:predict", chunks, {"Content-Type": "application/json"},
                     encode_chunked=not isinstance(chunks, bytes))
        response = conn.getresponse()
        return response.status, json.loads(response.read())

    status, whole = post(body)
    assert status == 200, whole
    assert post(iter([body[:7], body[7:100], body[100:]])) == (200, whole)
    assert post(iter([body])) == (200, whole)
    conn.close()


@pytest.mark.parametrize(("chunks", "status", "says"), [
    (b"zz\r\n{body}\r\n0\r\n\r\n", 400, "chunk 1: size 'zz' is not a hexadecimal number"),
    (b"3\r\n{body}\r\n0\r\n\r\n", 400, "chunk 1 is longer than its declared 3 bytes"),
    (b"1\r\n{{\r\nFFFFFFFF\r\n{body}", 413, "the chunked request body is over the limit of 67108864 bytes"),
    (b"{size:x}; ext=1\r\n{body}\r\n0\r\n" + b"X-T: 1\r\n" * 101 + b"\r\n", 400, "more than 100 trailer fields"),
    (b"{size:x}\r\n{body}", 400, "the chunked body ended after chunk 1, without the 0-size chunk"),
    (b"1\r\n{{\r\n" * 40 + b"FFFFFF\r\n" + b"x" * 100, 400, "ended inside chunk 41, after 100 of its 16777215"),
], ids=["size-not-hex", "chunk-longer-than-its-size", "over-the-limit", "too-many-trailers", "no-last-chunk",
        "ended-inside-a-chunk"])
def test_a_malformed_chunked_body_is_refused_and_the_connection_closed(target, canary, chunks, status, says):
    if not target.local:
        pytest.skip("the local server's request limits; TF Serving has its own")
    import socket

    body = json.dumps({"instances": [{"b64": canary[0]["b64"]}]})
    host, port = target.url.split("//", 1)[1].split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(f"POST /v1/models/{MODEL}:predict HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                     "\r\n".encode() + chunks.decode().format(body=body, size=len(body)).encode())
        sock.shutdown(socket.SHUT_WR)  # the client is done: a body cut short ends here
        answer = sock.recv(65536)
    assert answer.startswith(f"HTTP/1.1 {status}".encode()) and b"Connection: close" in answer, answer[:300]
    assert says.encode() in answer


def test_a_4xx_about_a_read_body_keeps_the_connection_an_unread_body_closes_it(target, canary):
    """A client's bad row or bad JSON costs no reconnect; a body the server did not read (an unknown path, a
    size over the limit) ends the connection, else its bytes would be read as the next request."""
    if not target.local:
        pytest.skip("about the local server's connection handling")
    import http.client

    host, port = target.url.split("//", 1)[1].split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    good = json.dumps({"instances": [{"b64": canary[0]["b64"]}]})
    bad_row = json.dumps({"signature_name": "serving_raw", "instances": [{**_row(canary), "trip_miles": "far"}]})

    def post(path: str, body: str) -> tuple[int, str | None]:
        conn.request("POST", path, body, {"Content-Type": "application/json"})
        response = conn.getresponse()
        response.read()
        return response.status, response.getheader("Connection")

    assert post(f"/v1/models/{MODEL}:predict", good) == (200, None)
    sock = conn.sock
    assert post(f"/v1/models/{MODEL}:predict", bad_row) == (400, None)
    assert post(f"/v1/models/{MODEL}:predict", "{not json") == (400, None)
    assert post("/v1/models/nope:predict", good) == (404, None)  # the body was read before the lookup
    assert post(f"/v1/models/{MODEL}:predict", good) == (200, None)
    assert conn.sock is sock  # five answers on one connection
    assert post("/v2/elsewhere", good) == (404, "close")
    conn.close()


def test_responses_leave_in_one_send_without_nagle(target):
    """Headers and body in one write with TCP_NODELAY: no 40 ms delayed-ACK stall per request."""
    if not target.local:
        pytest.skip("about the local server's socket handling")
    import socket

    from pipelines.serving.rest import _Handler

    writes, options = [], []

    class Conn:
        def setsockopt(self, *args):
            options.append(args)

        def settimeout(self, seconds):
            options.append(("timeout", seconds))

        def makefile(self, mode, *args, **kwargs):
            return __import__("io").BytesIO(b"")

        def sendall(self, data):  # the handler's wfile writes straight to the socket (wbufsize 0)
            writes.append(bytes(data))

    handler = _Handler.__new__(_Handler)
    handler.request, handler.client_address, handler.server = Conn(), ("127.0.0.1", 1), None
    handler.setup()
    handler.request_version, handler.command, handler.requestline = "HTTP/1.1", "POST", "POST / HTTP/1.1"
    handler._send(200, {"predictions": [0.5]})
    assert (socket.IPPROTO_TCP, socket.TCP_NODELAY, 1) in options and ("timeout", 10.0) in options
    assert len(writes) == 1 and writes[0].startswith(b"HTTP/1.1 200")
    assert json.loads(writes[0].split(b"\r\n\r\n", 1)[1]) == {"predictions": [0.5]}
    # a model's NaN or infinity is written as TF Serving writes it, not as null
    writes.clear()
    handler._send(200, {"predictions": [float("nan"), float("inf"), 0.5]})
    assert writes[0].endswith(b'{"predictions": [NaN, Infinity, 0.5]}')


def test_a_tf_example_batch_read_in_one_pass_is_answered_as_the_json_path(target, canary):
    """The usual body ({"instances": [{"b64": ...}]}) is read with its base64 in one pass (``rest.Decoded``);
    bodies that pass refuses (bad base64, another key, a row with another shape) are read as JSON, and a
    tf.Example batch sent to ``serving_raw`` gets the named-input error it got before."""
    if not target.local:
        pytest.skip("the local server's reading of a body")
    from pipelines.serving import rest

    rows = [{"b64": row["b64"]} for row in canary[:5]]
    fast = rest.parse_body(json.dumps({"instances": rows}).encode())
    assert isinstance(fast["instances"], rest.Decoded) and len(fast["instances"].decoded) == 5
    slow = rest.parse_body(json.dumps({"instances": rows, "extra": 1}).encode())
    assert isinstance(slow["instances"], list)
    url = f"{target.url}/v1/models/{MODEL}:predict"
    status, fast_answer = http("POST", url, {"instances": rows})
    assert status == 200
    status, answer = http("POST", url, {"instances": rows, "extra": 1})  # not the one-pass shape: read as JSON
    assert status == 200 and answer == fast_answer
    row = json.dumps(rows[0]).encode()
    for body, says in ((b'{"instances": [' + row + b'], "signature_name": "\xff"}', "JSON Parse error: 'utf-8' codec"),
                       (b'{"instances": [' + row + b'], "signature_name": "\\ud800"}',  # quoted back in the error
                        "Serving signature name: "),
                       ({"instances": [rows[0], {"b64": "YWJj!"}]}, "instances[1]: 'b64' value is not valid base64"),
                       ({"instances": rows, "signature_name": "serving_raw"}, "instances[0]: a {\"b64\": ...} row is a "
                        "serialized tf.Example, which serving_default takes (leave signature_name out)"),
                       ({"instances": rows, "signature_name": "nope"}, 'Serving signature name: "nope" not found')):
        status, answer = http("POST", url, body)
        assert status == 400 and says in answer["error"], answer


def test_new_version_is_loaded_before_the_old_is_unloaded(target, canary):
    """Last in this module: it changes what is served."""
    client = ModelServerClient(target.url)
    old, new = target.version, target.version + 1
    staging = target.base_path / f".publishing-{new}"
    shutil.copytree(target.base_path / str(old), staging)
    time.sleep(1.0)  # a few polls: a non-integer directory is never loaded
    assert new not in client.version_states(MODEL)
    states_seen = []
    staging.rename(target.base_path / str(new))
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        states_seen.append(client.version_states(MODEL))
        if states_seen[-1].get(new) == "AVAILABLE" and states_seen[-1].get(old) == "END":
            break
        time.sleep(0.1)
    else:
        pytest.fail(f"version {new} never replaced {old}: last states {states_seen[-1]}")
    # never a moment with nothing available: old stays AVAILABLE until new is
    assert all("AVAILABLE" in s.values() for s in states_seen)
    status, body = http("POST", f"{target.url}/v1/models/{MODEL}:predict",
                        {"instances": [{"b64": canary[0]["b64"]}]})
    assert status == 200 and abs(body["predictions"][0] - canary[0]["prediction"]) < 1e-5
    status, body = http("POST", f"{target.url}/v1/models/{MODEL}/versions/{old}:predict",
                        {"instances": [{"b64": canary[0]["b64"]}]})
    assert status == 404




def test_tf_examples_with_nan_or_several_values_are_400_naming_the_row_and_feature(target, canary):
    """A bad row among good ones is named with its index and feature by the local server, whichever check
    refuses it: the key check, the model's own value checks, or TensorFlow's parser (TF Serving answers with
    the model's message, which names the feature and the rows, or the parser's)."""
    if not target.local:
        pytest.skip("the row-and-feature wording is the local server's")
    import base64

    import tensorflow as tf

    good = base64.b64decode(canary[0]["b64"])

    def edited(name: str, values: list[float]) -> dict:
        example = tf.train.Example.FromString(good)
        example.features.feature[name].float_list.value[:] = values
        return {"b64": base64.b64encode(example.SerializeToString()).decode()}

    def retyped(name: str) -> dict:
        example = tf.train.Example.FromString(good)
        del example.features.feature[name]
        example.features.feature[name].int64_list.value[:] = [3]
        return {"b64": base64.b64encode(example.SerializeToString()).decode()}

    def removed(*names: str) -> dict:
        example = tf.train.Example.FromString(good)
        for name in names:
            del example.features.feature[name]
        return {"b64": base64.b64encode(example.SerializeToString()).decode()}

    for bad, says in ((edited("trip_miles", [float("nan")]), "feature 'trip_miles' is [nan]: NaN and infinity"),
                      # the model's own parser would say "Name: <unknown>, Feature: pickup_hour ... is required"
                      (removed("pickup_hour"), "feature 'pickup_hour' is missing, but the model needs a value"),
                      (removed("pickup_hour", "pickup_day_of_week"),
                       "features ['pickup_day_of_week', 'pickup_hour'] are missing, but the model needs a value"),
                      (edited("fare", [1.0, 2.0]), "feature 'fare' has 2 values; the model takes one value"),
                      (edited("fare_amount", [1.0]), "unknown feature 'fare_amount' in the tf.Example"),
                      (retyped("trip_miles"), "feature 'trip_miles' is an int64_list but the model expects float32"),
                      ({"b64": "bm90IGFuIGV4YW1wbGU="}, "'b64' is not a serialized tf.Example")):
        # a small batch and large ones, the bad row first,
        # in the middle and last (a check that reads only one row's features would pass some of these)
        for before, after in ((1, 1), (40, 1), (0, 40), (20, 20), (40, 0)):
            rows = ([{"b64": r["b64"]} for r in (canary * 50)[:before]] + [bad]
                    + [{"b64": r["b64"]} for r in (canary * 50)[1:after + 1]])
            status, body = http("POST", f"{target.url}/v1/models/{MODEL}:predict", {"instances": rows})
            assert status == 400 and f"instances[{before}]: {says}" in body["error"], (before, after, body)
    status, body = http("POST", f"{target.url}/v1/models/{MODEL}:predict",
                        {"instances": [{"b64": row["b64"]} for row in canary[:256]]})
    assert status == 200 and len(body["predictions"]) == min(256, len(canary)), body


def test_the_model_refuses_nan_and_extra_values_itself_anywhere_in_a_batch(target, canary, monkeypatch):
    """The exported signature checks the values it parses (``tf_schema.value_checks``), so TF Serving refuses
    them too: each planted fault anywhere in a batch fails the model's own call, naming the feature and the
    row; valid rows with missing features and empty value lists pass it. The local server then checks only
    the keys (``rest._keys_known``, one parse of the batch), and a version without the checks (an older
    export) is checked example by example before its call, as before."""
    import base64
    import struct

    import tensorflow as tf

    from pipelines.serving import rest
    from pipelines.serving.models import ModelManager, ModelSpec

    good = [base64.b64decode(row["b64"]) for row in canary]
    assert any(len(row["features"]) < 11 for row in canary)  # rows with missing features are among them

    def changed(edit) -> bytes:
        example = tf.train.Example.FromString(good[0])
        edit(example.features.feature)
        return example.SerializeToString()

    emptied = changed(lambda f: (f.__delitem__("trip_miles"), f["trip_miles"].float_list.value.extend([])))
    valid = (good * 40)[:40] + [emptied]
    value_faults = {  # the model's own check: feature named, row named
        "fare": changed(lambda f: f["fare"].float_list.value.__setitem__(0, float("nan"))),
        "trip_miles": changed(lambda f: f["trip_miles"].float_list.value.__setitem__(0, float("-inf"))),
        "trip_seconds": changed(lambda f: f["trip_seconds"].int64_list.value.extend([5, 6])),  # nullable
    }
    assert "trip_seconds" in {n for n in _nullable_features(target)}
    for name, bad in value_faults.items():
        for position in (0, 20, 41):
            batch = list(valid)
            batch.insert(position, bad)
            status, body = http("POST", f"{target.url}/v1/models/{MODEL}:predict",
                                {"instances": [{"b64": base64.b64encode(b).decode()} for b in batch]})
            assert status == 400 and name in body["error"], (name, position, body)
            if target.local:  # the row-by-row check names the row after the model refused
                assert f"instances[{position}]: feature {name!r}" in body["error"], body
    # an empty string is a missing value, as training reads an empty cell: the model answers the row as the row
    # without the feature (a nullable one), on TF Serving too (a user trial's "" was an unknown value's bucket)
    blank = changed(lambda f: f["company"].bytes_list.value.__setitem__(slice(None), [b""]))
    absent = changed(lambda f: f.__delitem__("company") if "company" in f else None)
    named = changed(lambda f: f["company"].bytes_list.value.__setitem__(slice(None), [b"No Such Cab Company"]))
    status, body = http("POST", f"{target.url}/v1/models/{MODEL}:predict",
                        {"instances": [{"b64": base64.b64encode(b).decode()} for b in (blank, absent, named)]})
    assert status == 200 and body["predictions"][0] == pytest.approx(body["predictions"][1], abs=1e-6), body
    assert body["predictions"][0] != pytest.approx(body["predictions"][2], abs=1e-6), body  # "" is not a value
    if not target.local:
        return

    manager = ModelManager([ModelSpec(MODEL, str(target.base_path))])
    manager.poll_once()
    servable = manager.servable(MODEL)
    assert servable.checks_values
    signature = servable.loaded.signatures["serving_default"]
    outputs = signature(examples=tf.constant(valid))
    assert np.isfinite(outputs["probability"].numpy()).all()
    for name, bad in value_faults.items():
        with pytest.raises(tf.errors.InvalidArgumentError, match=f"feature {name} .*rows \\(from 0\\):.*\\b20\\b"):
            signature(examples=tf.constant([*valid[:20], bad, *valid[20:]]))
    # serving_raw takes the same checks: NaN in a named input is refused by the model itself
    raw = servable.loaded.signatures["serving_raw"]
    columns = {n: tf.constant([canary[0]["features"].get(n, 0.0 if s.dtype.is_floating else 0 if s.dtype.is_integer
                                                           else "")] * 3, dtype=s.dtype)
               for n, s in raw.structured_input_signature[1].items()}
    columns["fare"] = tf.constant([1.0, float("nan"), 2.0])
    with pytest.raises(tf.errors.InvalidArgumentError, match="feature fare is NaN.*rows \\(from 0\\):.*1"):
        raw(**columns)

    assert rest._keys_known(servable, np.array(valid, dtype=object))
    for bad in (changed(lambda f: f["fare_amount"].float_list.value.append(1.0)),  # unknown key
                # a map entry with its value and no key is feature "" (protobuf's default key): unknown
                good[0] + b"\x0a\x10\x0a\x0e\x12\x0c\x12\x0a\x0a\x08" + bytes(8),
                b"\xff not an example"):
        for position in (0, 20, 41):
            batch = list(valid)
            batch.insert(position, bad)
            assert not rest._keys_known(servable, np.array(batch, dtype=object)), (bad, position)
            with pytest.raises(rest.ServingError, match=f"instances\\[{position}\\]"):
                rest.predict(servable, {"instances": [{"b64": base64.b64encode(b).decode()} for b in batch]})

    # An encoding no protobuf library emits: 'fare' as two packed blocks, [value] then [NaN]. Protobuf merges
    # them (the row-by-row check refuses the NaN); TensorFlow's Example parser, the model's own, reads only the
    # first block. The model's check sees what the model reads, as TF Serving would: the NaN never reaches the
    # model, and the row is answered as the row with that one value.
    canonical = tf.train.Example.FromString(good[0])
    value = canonical.features.feature["fare"].float_list.value[0]
    del canonical.features.feature["fare"]
    blocks = b"\x0a\x04" + struct.pack("<f", value) + b"\x0a\x04" + struct.pack("<f", float("nan"))
    feature = b"\x12" + bytes([len(blocks)]) + blocks  # Feature.float_list
    entry = b"\x0a\x04fare\x12" + bytes([len(feature)]) + feature  # map entry: key, value
    crafted = canonical.SerializeToString() + b"\x0a" + bytes([len(entry) + 2]) + b"\x0a" + bytes([len(entry)]) + entry
    with pytest.raises(rest.ServingError, match="feature 'fare' is .*nan"):
        rest.check_examples(servable, np.array([crafted], dtype=object))
    answer = rest.predict(servable, {"instances": [{"b64": base64.b64encode(b).decode()} for b in [crafted, *valid]]})
    assert answer["predictions"][0] == pytest.approx(
        signature(examples=tf.constant([good[0]]))["probability"].numpy()[0], abs=1e-6)

    # a version exported without the checks (no serving_checks.json) is checked row by row before its call
    from pipelines.schema import SERVING_CHECKS_ASSET

    older_path = target.base_path.parent / "older" / MODEL
    shutil.copytree(target.base_path / str(target.version), older_path / "1")
    (older_path / "1" / SERVING_CHECKS_ASSET).unlink()
    (older_path / "1" / "manifest.json").unlink()  # (which lists it) as a SavedModel copied in by hand
    older_manager = ModelManager([ModelSpec(MODEL, str(older_path))])
    older_manager.poll_once()
    older = older_manager.servable(MODEL)
    assert not older.checks_values
    checked = []
    original = rest.check_examples
    monkeypatch.setattr(rest, "check_examples", lambda *args: checked.append(len(args[1])) or original(*args))
    rest.predict(older, {"instances": [{"b64": base64.b64encode(b).decode()} for b in valid]})
    assert checked == [len(valid)]
    rest.predict(servable, {"instances": [{"b64": base64.b64encode(b).decode()} for b in valid]})
    assert checked == [len(valid)]  # not for a version that checks values itself


def _nullable_features(target) -> set[str]:
    from pipelines.schema import RAW_FEATURES_ASSET

    described = json.loads((target.base_path / str(target.version) / RAW_FEATURES_ASSET).read_text())
    return {f["name"] for f in described if f["nullable"]}
