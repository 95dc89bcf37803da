"""The local demo: days of a model's data, then one real daily run of its DAG through Airflow, served.

``./dev demo`` runs this with AIRFLOW_HOME under the project's ignored ``.work/``.
It uses Airflow's own ``dag.test()`` machinery (SQLite metadata DB, real task
instances, real XCom) and ends by printing each task's state and duration, the
eval metrics and the published version. Running it again is safe: data is
rewritten only if it changed and publish does not duplicate an identical model.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import logging
import math
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path


def yesterday() -> dt.date:
    """The newest complete day: a scheduled run the UI creates after the demo finds its data."""
    return dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)

DEFAULT_PORT = 8501  # TF Serving's REST port


def free_port(preferred: int) -> int:
    """``preferred`` unless something listens on it (the model server binds with SO_REUSEADDR, as asked here: a
    port the previous demo's server left in TIME_WAIT is free for it), else any free port. Nothing may answer
    on it either: on BSD and macOS SO_REUSEADDR would let the bind share a port another socket listens on."""
    import socket

    with socket.socket() as probe:
        probe.settimeout(1)
        listening = probe.connect_ex(("127.0.0.1", preferred)) == 0
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if listening:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]
        try:
            s.bind(("127.0.0.1", preferred))
        except OSError:
            s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def model_server(config_file: Path, port: int) -> Iterator[str]:
    """The local TF-Serving-compatible server following the model config file the rollout edits."""
    if not config_file.is_file():
        config_file.parent.mkdir(parents=True, exist_ok=True)
        config_file.write_text("model_config_list {\n}\n")
    url = f"http://127.0.0.1:{port}"
    log_file = config_file.with_name("model_server.log")
    print(f"==> python -m pipelines serve --model-config-file {config_file} --port {port}  (log: {log_file})")
    with open(log_file, "ab") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "pipelines", "serve", "--model-config-file", str(config_file), "--port", str(port)],
            stdout=log, stderr=subprocess.STDOUT,
        )
    try:
        yield url
    finally:
        server.terminate()
        server.wait(timeout=30)


def show_stable(url: str, model: str, serving) -> None:
    """What the server's 'stable' label serves, and one prediction fetched over HTTP from raw JSON, beside that
    version's own offline prediction (its canary rows): when this run promoted nothing, stable is another model
    than the one this run evaluated."""
    from pipelines.publish import CANARY
    from pipelines.serving.client import ModelServerClient

    client = ModelServerClient(url)
    status, body = client.request("GET", client.model_path(model, label="stable"))
    if status != 200:
        print(f"\n    model server: no stable version of {model} ({body.get('error')})")
        return
    version = body["model_version_status"][0]["version"]
    print(f"\n    model server {url}: label 'stable' -> version {version}"
          f" ({body['model_version_status'][0]['state']}); all versions {client.version_states(model)}")
    rows = serving.read_json(model, str(version), CANARY)
    if not rows:
        print(f"    (version {version} has no {CANARY} under {serving.url(model, str(version))}: no row to show)")
        return
    # the sparsest eval row: real data has missing values, which a tf.Example carries as absent features
    row = min(rows, key=lambda r: len(r["features"]))
    [served] = client.predict_rows(model, [row["features"]], label="stable")
    print(f"    POST {url}/v1/models/{model}/labels/stable:predict  (pipelines.serving.client.predict_rows: a plain "
          "dict, missing features left out, sent as a serialized tf.Example)")
    print(f"    row:      {json.dumps(row['features'])}")
    print(f"    response: {json.dumps({'predictions': [served]})}")
    offline = row["prediction"]
    shown = f"{offline:.6f}" if isinstance(offline, float) else json.dumps([round(v, 6) for v in offline])
    print(f"    offline prediction of version {version} for this eval row (its evaluate step, "
          f"{row.get('output', 'probability')}): {shown}")


class ApprovalWaitFilter(logging.Filter):
    """dag.test() logs "Waiting for Human-in-the-loop input" every second while an approval is pending: say
    once a minute where to answer instead."""

    def __init__(self, dag_id: str, every_seconds: float = 60.0):
        super().__init__()
        self.dag_id, self.every, self.last = dag_id, every_seconds, -math.inf

    def filter(self, record: logging.LogRecord) -> bool:
        if not str(record.msg).startswith("Waiting for Human-in-the-loop input"):
            return True
        if time.monotonic() - self.last < self.every:
            return False
        self.last = time.monotonic()
        print(f"    waiting for an approval of {self.dag_id}: run `./dev airflow` in another terminal, open the UI "
              "it prints, and answer 'approve_promotion' (Browse > Required Actions); no answer within the "
              "model's [rollout] approval_timeout_minutes rejects it", flush=True)
        return False


@contextlib.contextmanager
def approval_deadlines(every_seconds: float = 5.0) -> Iterator[None]:
    """Apply human-in-the-loop deadlines while ``dag.test()`` runs, as the scheduler does: dag.test() parks an
    approval task until someone answers and has no scheduler, whose sweep
    (``SchedulerJobRunner.check_awaiting_input_timeouts``) gives a task its defaults (Reject) at its deadline.
    That same sweep runs here every ``every_seconds``."""
    import threading
    from types import SimpleNamespace

    from airflow.jobs.scheduler_job_runner import SchedulerJobRunner

    stop = threading.Event()
    runner = SimpleNamespace(log=logging.getLogger("skewfree.demo.approval_deadlines"))

    def sweep() -> None:
        while not stop.wait(every_seconds):
            try:
                SchedulerJobRunner.check_awaiting_input_timeouts(runner)
            except Exception:  # noqa: BLE001 - a failed sweep is retried at the next tick, as the scheduler's
                runner.log.exception("approval deadline sweep failed; trying again in %ss", every_seconds)

    thread = threading.Thread(target=sweep, name="approval-deadlines", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=60)


def migrate_db() -> None:
    """``airflow db migrate`` and ``airflow pools set``, in this process (two CLI processes cost ~20 s)."""
    from airflow import settings
    from airflow.models.pool import Pool
    from airflow.utils import db

    from skewfree.dag_factory import TRAINING_POOL

    if settings.Session is None:
        settings.configure_orm()
    db.upgradedb()
    Pool.create_or_update_pool(TRAINING_POOL, 1, "concurrent training runs", include_deferred=False)


def run_dag(dag_id: str, interval: dt.date, conf: dict | None = None):
    """Run ``dag_id`` once for the data interval [interval, interval + 1 day); return the DagRun."""
    from airflow import settings
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=settings.DAGS_FOLDER)
    if dag_id not in bag.dags:
        errors = "".join(f"\n  {path}: {error}" for path, error in bag.import_errors.items())
        raise SystemExit(f"no DAG {dag_id!r} in {settings.DAGS_FOLDER} (DAGs: {', '.join(sorted(bag.dags))})"
                         + (f"; import errors:{errors}" if errors else ""))
    dag = bag.dags[dag_id]
    from airflow.sdk.definitions.param import ParamsDict
    from airflow.sdk.exceptions import ParamValidationError

    from skewfree.dag_factory import unknown_conf

    if problem := unknown_conf(conf or {}, set(dag.params), dag_id):  # every task would refuse it anyway
        raise SystemExit(f"--conf refused: {problem}")
    params = ParamsDict(dag.params)
    try:  # as the trigger form and the REST API check it: one line, before any run exists
        params.update(conf or {})
        params.validate()
    except ParamValidationError as exc:
        raise SystemExit(f"--conf refused: {str(exc).splitlines()[0]}") from None
    started = dt.datetime.now(dt.UTC)
    from skewfree.task_logs import TaskLogCapture

    with TaskLogCapture() as task_logs:  # dag.test() writes no task log files: the UI would show none
        dag_run = dag.test(logical_date=demo_logical_date(interval), run_conf=conf)
    try:
        task_logs.write(dag_run)
    except Exception as exc:  # noqa: BLE001 - the run's outcome stands; only the UI's copy of its logs is missing
        print(f"    warning: the run's task logs were not filed for the Airflow UI ({type(exc).__name__}: {exc}); "
              "they are in this output above", flush=True)
    # dag.test() records the logical date as the run's start: for an interval in the past the UI would show
    # a duration of days. The run started now.
    from airflow.models.dagrun import DagRun

    with settings.Session() as session:
        stored = session.get(DagRun, dag_run.id)
        if stored is not None and (stored.start_date is None or stored.start_date < started):
            stored.start_date = started
            session.commit()
            dag_run.start_date = started
    return dag_run


def demo_logical_date(interval: dt.date) -> dt.datetime:
    """A manual run's data interval is the full interval that ends at or before its logical date. The demo's
    logical date is the end of ``interval`` plus the current time of day: never midnight, where scheduled
    runs' logical dates are (so the scheduler never finds its run taken), and new at every demo (``dag.test``
    clears the runs at its logical date: an earlier demo's run stays in the history)."""
    now = dt.datetime.now(dt.UTC)
    moment = now.time() if now.time() != dt.time() else dt.time(microsecond=1)
    return dt.datetime.combine(interval + dt.timedelta(days=1), moment, tzinfo=dt.UTC)


def summarize(dag_run) -> list[tuple[str, str, float | None]]:
    from skewfree.run_note import ORDER

    tis = sorted(dag_run.get_task_instances(), key=lambda ti: ORDER.index(ti.task_id) if ti.task_id in ORDER else 99)
    return [(ti.task_id, str(ti.state), ti.duration) for ti in tis]


def main(argv: list[str] | None = None) -> int:
    from pipelines.config import load_model_config
    from pipelines.datagen import generate_data
    from pipelines.staging import Staging
    from skewfree.hooks.artifacts import open_root
    from skewfree.settings import Settings

    parser = argparse.ArgumentParser(prog="./dev demo", description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="taxi")
    parser.add_argument("--end", type=dt.date.fromisoformat, default=yesterday(),
                        help="latest data day (default: yesterday, UTC), the run's data interval")
    parser.add_argument("--days", type=int, default=14)
    parser.add_argument("--rows-per-day", type=int, default=20_000)
    parser.add_argument("--no-generate", action="store_true", help="use the data already under the data root")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="local model server port (if free)")
    parser.add_argument("--conf", type=json.loads, default=None,
                        help='trigger params as JSON, e.g. \'{"require_approval": true}\'')
    args = parser.parse_args(argv)

    started = time.monotonic()
    settings = Settings.from_env()
    config = load_model_config(args.model)
    if not args.no_generate:
        print(f"==> generating {args.days} days x {args.rows_per_day} rows ending {args.end} under {settings.data_root}")
        staging = Staging({"data": settings.data_root})  # an s3:// data root: written locally, then uploaded
        try:
            roots = staging.local_roots({"data": settings.data_root})
            try:
                gen = generate_data(config, data_root=roots["data"], end=args.end, days=args.days,
                                    rows_per_day=args.rows_per_day)
            except ValueError as exc:
                raise SystemExit(f"error: {exc}") from None
            staging.push("generate-data", config, gen, roots=roots)
        finally:
            staging.close()
        print(f"    {gen.written} partitions written, {gen.unchanged} unchanged")

    print("==> airflow db migrate (SQLite)")
    migrate_db()

    dag_id = f"{config.name}_retrain"
    with model_server(Path(settings.model_server_config), free_port(args.port)) as url:
        # the DAG's rollout task finds the server through this Airflow connection
        os.environ["AIRFLOW_CONN_MODEL_SERVER_DEFAULT"] = url
        print(f"==> running {dag_id} for data interval {args.end} with dag.test()")
        approval = bool((args.conf or {}).get("require_approval"))
        if approval:
            logging.getLogger("airflow.sdk.definitions.dag").addFilter(ApprovalWaitFilter(dag_id))
        with approval_deadlines() if approval else contextlib.nullcontext():
            dag_run = run_dag(dag_id, args.end, args.conf)
        state = report(dag_run, dag_id, settings, config, args.end)
        show_stable(url, config.name, open_root(settings.serving_root, settings.aws_conn_id))
    print(f"    demo wall time: {time.monotonic() - started:.0f}s")
    return 0 if state == "success" else 1


def report(dag_run, dag_id: str, settings, config, interval: dt.date) -> str:
    """Print each task's state and duration, why validation failed, metrics, skew and the published version."""
    from skewfree.hooks.artifacts import open_root

    print(f"\n==> {dag_id} run {dag_run.run_id}: {dag_run.state}")
    print(f"    {'task':<18} {'state':<16} {'duration':>9}")
    states = {}
    for task_id, state, duration in summarize(dag_run):
        states[task_id] = state
        shown = "-" if duration is None else f"{duration:.1f}s"
        print(f"    {task_id:<18} {state:<16} {shown:>9}")
    artifacts = open_root(settings.artifact_root, settings.aws_conn_id)

    def output(step: str, name: str = "result.json"):
        return artifacts.read_json(config.name, "runs", interval.isoformat(), step, name)

    if states.get("validate") == "failed" and (validation := output("validate", "rejected/validation.json")):
        print("\n    validation failed:\n      - " + "\n      - ".join(validation["errors"]))
    # this run's evaluation only: an earlier run's output of the interval stays where a step failed before it
    if states.get("evaluate") == "success" and (evaluation := output("evaluate")) is not None:
        print(f"\n    eval metrics (serving signature, raw rows): {json.dumps(evaluation['metrics'])}")
        print(f"    train/serve skew: max |training path - serving path| = {evaluation['metrics']['max_abs_skew']:.3g}"
              f" over {int(evaluation['metrics']['examples'])} eval rows")
        print(f"    blessed: {' '.join(map(str, [evaluation['blessed'], '; '.join(evaluation['reasons'])])).strip()}")
        from skewfree.dag_factory import gate_report

        print("    candidate vs baseline (the version serving as 'stable', on the same eval rows):")
        print("\n".join("  " + line for line in gate_report(evaluation).splitlines()
                        if not line.startswith("  - ")))
    if states.get("rollout") == "failed":
        print("    rollout FAILED: the previous stable version was restored; the rollout task log says which check failed")
    if states.get("publish") == "success" and (result := output("publish")):
        note = " (identical model already published)" if result["reused"] else ""
        print(f"    published version {result['version']}{note}: {result['path']}")
    from airflow.models.dagrun import DagRunNote
    from airflow.utils.session import create_session

    with create_session() as session:  # what the run-note listener wrote (skewfree.run_note)
        if run_note := session.get(DagRunNote, dag_run.id):
            print(f"    run note: {run_note.content}")
    return str(dag_run.state)


if __name__ == "__main__":
    sys.exit(main())
