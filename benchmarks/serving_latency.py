"""Print the local model server's latency beside the same signature called in-process (no assertions).

usage: python benchmarks/serving_latency.py [--serving-root .work/serving] [--model taxi] [--requests 500]
Uses the newest complete version under the serving root (run ``./dev demo`` first). The server runs as
``python -m pipelines serve`` in its own process; one client keeps its connection open (keep-alive) and
posts serialized tf.Example rows from the version's canary.json to ``serving_default``, at batch 1 and 256; then 4 clients at once;
then where a batch of 256 spends its time (each part timed alone, in this process).
Targets (issue 14): p50 and p99 at batch 1 within ~1 ms of in-process, at most 1.3x at batch 256.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, int(round(0.99 * (len(ordered) - 1))))]


def timed(call, requests: int) -> list[float]:
    for _ in range(20):
        call()
    times = []
    for _ in range(requests):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return times


def in_process(version_dir: Path, rows: list[dict], requests: int) -> list[float]:
    import base64

    import tensorflow as tf

    signature = tf.saved_model.load(str(version_dir)).signatures["serving_default"]
    tensors = {"examples": tf.constant([base64.b64decode(row["b64"]) for row in rows])}
    return timed(lambda: {k: v.numpy().tolist() for k, v in signature(**tensors).items()}, requests)


def breakdown(serving_root: str, model: str, rows: list[dict], requests: int) -> None:
    """Where a request's time goes, each part timed on its own in this process with the server's functions."""
    import msgspec
    import tensorflow as tf

    from pipelines.serving import rest
    from pipelines.serving.models import ModelManager, ModelSpec

    manager = ModelManager([ModelSpec(model, str(Path(serving_root, model)))])
    manager.poll_once()
    servable = manager.servable(model)
    signature = servable.loaded.signatures["serving_default"]
    body = json.dumps({"instances": rows}).encode()
    examples = rest.parse_body(body)["instances"].decoded
    answer = rest.predict(servable, rest.parse_body(body))
    built = tf.constant(examples)
    parts = {
        "parse_body(): JSON and base64 in one pass": lambda: rest.parse_body(body),
        "predict(): key check, model, outputs": lambda: rest.predict(servable, rest.parse_body(body)),
        "  of which the signature alone (checks values)": lambda: {k: v.numpy().tolist() for k, v in signature(
            examples=tf.constant(examples)).items()},
        "  the same, its input built once (the table's)": lambda: {
            k: v.numpy().tolist() for k, v in signature(examples=built).items()},
        "  of which the key check (_keys_known)": lambda: rest._keys_known(servable, examples),
        "  of which a no-op tf.function call": lambda: noop(tf.constant(examples)),
        "the response's JSON": lambda: msgspec.json.encode(answer),
        "for comparison: json.loads(request body)": lambda: json.loads(body),
    }

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def noop(batch):
        return tf.size(batch)

    print(f"batch {len(rows)}, {len(body):,} bytes of JSON, parts timed in-process (p50 ms):")
    p50 = {}
    for name, call in parts.items():
        p50[name] = statistics.median(timed(call, requests))
        print(f"  {name:<48} {p50[name] * 1e3:>7.2f}")
    least = p50["parse_body(): JSON and base64 in one pass"] + p50["predict(): key check, model, outputs"] + \
        p50["the response's JSON"]
    print(f"  the server's work without HTTP (parse_body, predict, the response's JSON): {least * 1e3:.2f} ms = "
          f"{least / p50['  of which the signature alone (checks values)']:.2f}x the signature")


def over_http(port: int, model: str, rows: list[dict], requests: int, status: int = 200) -> list[float]:
    """Round trips of one keep-alive connection; ``status``: the answer expected (404 for an unknown model,
    whose body the server reads and answers before parsing it: the cost of HTTP alone)."""
    body = json.dumps({"instances": rows}).encode()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    times = []
    for i in range(requests + 20):
        started = time.perf_counter()
        connection.request("POST", f"/v1/models/{model}:predict", body, {"Content-Type": "application/json"})
        response = connection.getresponse()
        payload = response.read()
        if response.status != status:
            raise RuntimeError(f"HTTP {response.status}: {payload[:300]!r}")
        if i >= 20:  # after warm-up
            times.append(time.perf_counter() - started)
    connection.close()
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serving-root", default=str(ROOT / ".work" / "serving"))
    parser.add_argument("--model", default="taxi")
    parser.add_argument("--requests", type=int, default=500)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from pipelines.objectstore import open_store

    store = open_store(args.serving_root)
    complete = store.complete_versions(args.model)
    if not complete:
        sys.exit(f"no complete version of {args.model} under {args.serving_root}: run ./dev demo first")
    version_dir = Path(args.serving_root, args.model, str(complete[-1]))
    canary = json.loads((version_dir / "canary.json").read_text())
    full = [{"b64": r["b64"]} for r in canary]
    batches = {1: full[:1], 256: (full * (256 // len(full) + 1))[:256]}

    port = int(os.environ.get("BENCH_PORT", "8599"))
    server = subprocess.Popen(
        [sys.executable, "-m", "pipelines", "serve", "--model-name", args.model, "--model-base-path",
         str(Path(args.serving_root, args.model)), "--port", str(port)],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                over_http(port, args.model, batches[1], 1)
                break
            except (OSError, RuntimeError):
                if time.monotonic() > deadline or server.poll() is not None:
                    raise
                time.sleep(0.5)
        print(f"{args.model} version {complete[-1]}, {args.requests} requests each, one keep-alive connection")
        print(f"{'batch':>5} {'in-process p50/p99 ms':>22} {'HTTP p50/p99 ms':>18} {'added p50/p99 ms':>18} {'ratio p50':>9}")
        for size, rows in batches.items():
            local = percentiles(in_process(version_dir, rows, args.requests))
            remote = percentiles(over_http(port, args.model, rows, args.requests))
            print(f"{size:>5} {local[0] * 1e3:>10.2f} /{local[1] * 1e3:>9.2f} {remote[0] * 1e3:>8.2f} /"
                  f"{remote[1] * 1e3:>7.2f} {(remote[0] - local[0]) * 1e3:>8.2f} /{(remote[1] - local[1]) * 1e3:>7.2f}"
                  f" {remote[0] / local[0]:>9.2f}")
        unknown = percentiles(over_http(port, "no-such-model", batches[256], args.requests, status=404))
        print(f"  256 rows to an unknown model (the body read, not parsed; a 404): p50 {unknown[0] * 1e3:.2f}"
              f" / p99 {unknown[1] * 1e3:.2f} ms")
        results: list[list[float]] = [[] for _ in range(4)]
        started = time.perf_counter()
        threads = [threading.Thread(target=lambda i=i: results[i].extend(
            over_http(port, args.model, batches[1], args.requests // 4))) for i in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        wall = time.perf_counter() - started
        p50, p99 = percentiles([t for r in results for t in r])
        print(f"4 concurrent clients, batch 1: {sum(map(len, results)) / wall:.0f} requests/s, "
              f"p50 {p50 * 1e3:.2f} ms, p99 {p99 * 1e3:.2f} ms")
        breakdown(args.serving_root, args.model, batches[256], args.requests)
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
