"""The local demo: 14 days of data, then one real daily run of the taxi DAG through Airflow.

``./dev demo`` runs this with AIRFLOW_HOME under the project's ignored ``.work/``.
It uses Airflow's own ``dag.test()`` machinery (SQLite metadata DB, real task
instances, real XCom) and ends by printing each task's state and duration, the
eval metrics and the published version. Running it again is safe: data is
rewritten only if it changed and publish does not duplicate an identical model.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import subprocess
import sys
import time
from pathlib import Path

DEFAULT_END = dt.date(2026, 11, 22)
DEFAULT_PORT = 8501  # TF Serving's REST port


def free_port(preferred: int) -> int:
    import socket

    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", preferred))
        except OSError:
            s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_and_predict(model: str, model_base_path: Path, version: int, canary_file: Path, port: int) -> None:
    """Start the local TF-Serving-compatible server on the base path and fetch one prediction over HTTP."""
    from pipelines.serving.client import ModelServerClient

    url = f"http://127.0.0.1:{port}"
    print(f"\n==> python -m pipelines serve --model-name {model} --model-base-path {model_base_path} --port {port}")
    server = subprocess.Popen(
        [sys.executable, "-m", "pipelines", "serve", "--model-name", model, "--model-base-path",
         str(model_base_path), "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        client = ModelServerClient(url)
        client.wait_until_available(model, version)
        rows = json.loads(canary_file.read_text())
        row = max(rows, key=lambda r: len(r["features"]))  # JSON carries no missing values: a complete row
        body = {"signature_name": "serving_raw", "instances": [row["features"]]}
        answer = client.predict(model, body)
        print(f"    POST {url}/v1/models/{model}:predict")
        print(f"    request:  {json.dumps(body)}")
        print(f"    response: {json.dumps(answer)}")
        print(f"    offline prediction for this eval row (evaluate step): {row['prediction']:.6f}")
    finally:
        server.terminate()
        server.wait(timeout=30)


def run_dag(dag_id: str, interval: dt.date):
    """Run ``dag_id`` once for the data interval [interval, interval + 1 day); return the DagRun."""
    from airflow import settings
    from airflow.dag_processing.dagbag import DagBag

    if settings.Session is None:
        settings.configure_orm()
    bag = DagBag(dag_folder=settings.DAGS_FOLDER)
    if bag.import_errors:
        raise SystemExit(f"DAG import errors: {bag.import_errors}")
    dag = bag.dags[dag_id]
    # A manual run's data interval is the full interval that ends at its logical date.
    logical = dt.datetime.combine(interval + dt.timedelta(days=1), dt.time(), tzinfo=dt.UTC)
    return dag.test(logical_date=logical)


def summarize(dag_run) -> list[tuple[str, str, float | None]]:
    order = ["validate", "transform", "train", "evaluate", "is_blessed", "publish"]
    tis = sorted(dag_run.get_task_instances(), key=lambda ti: order.index(ti.task_id) if ti.task_id in order else 99)
    return [(ti.task_id, str(ti.state), ti.duration) for ti in tis]


def main(argv: list[str] | None = None) -> int:
    from pipelines.config import load_model_config
    from pipelines.datagen import generate_data
    from pipelines.runs import Run
    from skewfree.settings import Settings

    parser = argparse.ArgumentParser(prog="./dev demo", description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="taxi")
    parser.add_argument("--end", type=dt.date.fromisoformat, default=DEFAULT_END, help="latest data day")
    parser.add_argument("--days", type=int, default=14)
    parser.add_argument("--rows-per-day", type=int, default=20_000)
    parser.add_argument("--no-generate", action="store_true", help="use the data already under the data root")
    parser.add_argument("--no-serve", action="store_true", help="skip starting the local model server")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="local model server port (if free)")
    args = parser.parse_args(argv)

    started = time.monotonic()
    settings = Settings.from_env()
    config = load_model_config(args.model)
    if not args.no_generate:
        print(f"==> generating {args.days} days x {args.rows_per_day} rows ending {args.end} under {settings.data_root}")
        gen = generate_data(config, data_root=settings.data_root, end=args.end, days=args.days,
                            rows_per_day=args.rows_per_day)
        print(f"    {gen.written} partitions written, {gen.unchanged} unchanged")

    print("==> airflow db migrate (SQLite)")
    subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], check=True, stdout=subprocess.DEVNULL)

    dag_id = f"{config.name}_retrain"
    print(f"==> running {dag_id} for data interval {args.end} with dag.test()")
    dag_run = run_dag(dag_id, args.end)

    print(f"\n==> {dag_id} run {dag_run.run_id}: {dag_run.state}")
    print(f"    {'task':<12} {'state':<10} {'duration':>9}")
    for task_id, state, duration in summarize(dag_run):
        shown = "-" if duration is None else f"{duration:.1f}s"
        print(f"    {task_id:<12} {state:<10} {shown:>9}")
    run = Run(Path(settings.artifact_root), config.name, args.end)
    validation = run.step_dir("validate") / "validation.json"
    if validation.is_file() and (errors := json.loads(validation.read_text())["errors"]):
        print("\n    validation failed:\n      - " + "\n      - ".join(errors))
    if run.result_path("evaluate").is_file():
        evaluation = run.read_result("evaluate")
        print(f"\n    eval metrics (serving signature, raw rows): {json.dumps(evaluation['metrics'])}")
        print(f"    train/serve skew: max |training path - serving path| = {evaluation['metrics']['max_abs_skew']:.3g}"
              f" over {int(evaluation['metrics']['examples'])} eval rows (gate: 1e-05)")
        print(f"    blessed: {evaluation['blessed']} {'; '.join(evaluation['reasons'])}")
    published = run.result_path("publish")
    if str(dag_run.state) == "success" and published.is_file():
        result = run.read_result("publish")
        note = " (identical model already published)" if result["reused"] else ""
        print(f"    published version {result['version']}{note}: {result['path']}")
        if not args.no_serve:
            serve_and_predict(config.name, Path(result["path"]).parent, result["version"],
                              Path(run.read_result("evaluate")["canary"]), free_port(args.port))
    print(f"    demo wall time: {time.monotonic() - started:.0f}s")
    return 0 if str(dag_run.state) == "success" else 1


if __name__ == "__main__":
    sys.exit(main())
