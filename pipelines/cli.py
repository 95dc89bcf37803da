"""``python -m pipelines STEP ...``: the one entry point a container (or a local subprocess) runs.

Every step takes the same core flags: ``--model`` (a registered name or a path to a
config.toml), ``--interval`` (the data interval's date, YYYY-MM-DD) and the roots.
The step's result is printed as JSON on the last line and saved as result.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import logging
import os
import sys
from pathlib import Path

from pipelines.config import HEADLINE_METRIC, ConfigError, load_model_config
from pipelines.objectstore import s3_problem
from pipelines.runs import CACHED_STEPS, STEPS, Run, StepError, claim_interval, owner_problem
from pipelines.staging import Staging
from pipelines.storage import check_commit, commit_guard, jsonable, sweep_leftovers

log = logging.getLogger("pipelines")


def _date(value: str) -> dt.date:
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {value!r}") from None


def _int_from(least: int):
    def parse(value: str) -> int:
        try:
            number = int(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not an integer: {value!r}") from None
        if number < least:
            raise argparse.ArgumentTypeError(f"must be at least {least}, got {number}")
        return number
    return parse


_positive_int = _int_from(1)


# the same default folders under SKEWFREE_HOME as the Airflow side (skewfree.settings.Settings)
ROOT_DIRS = {"data": "data", "artifact": "artifacts", "serving": "serving"}


def _root(name: str, default: str) -> str:
    # Read when the CLI runs, never at import: a container passes every root as a flag.
    return os.environ.get(f"SKEWFREE_{name.upper()}_ROOT", default)


# The roots each step reads or writes; the Airflow side builds argv from this same table.
STEP_ROOTS: dict[str, tuple[str, ...]] = {
    "validate": ("data", "artifact"),
    "transform": ("artifact",),
    "train": ("artifact",),
    "evaluate": ("artifact", "serving"),
    "publish": ("artifact", "serving"),
}


def step_argv(step: str, *, model: str, interval: str, roots: dict[str, str], extra: tuple[str, ...] = ()) -> list[str]:
    """The exact argv a container runs for one step (``python -m pipelines STEP ...``)."""
    if step not in STEP_ROOTS:
        raise ValueError(f"unknown step {step!r}; steps are {', '.join(STEP_ROOTS)}")
    argv = ["python", "-m", "pipelines", step, "--model", model, "--interval", interval]
    for root in STEP_ROOTS[step]:
        argv += [f"--{root}-root", roots[root]]
    return [*argv, *extra]


def build_parser() -> argparse.ArgumentParser:
    home = os.environ.get("SKEWFREE_HOME", ".work")
    parser = argparse.ArgumentParser(prog="python -m pipelines", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="step", required=True, metavar="STEP")

    def step(name: str, help: str, *roots: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help)
        p.add_argument("--model", required=True, help="registered model name or path to its config.toml")
        if name != "generate-data":
            p.add_argument("--interval", required=True, type=_date, help="data interval date, YYYY-MM-DD")
        if name in STEPS:
            p.add_argument("--run-id", default="", help="the orchestrator's run id: validate claims the interval's "
                           "run directory for it, and a run that another claimed since stops at its next commit; "
                           "publish records it in the version's manifest")
        for root in roots:
            p.add_argument(f"--{root}-root", default=_root(root, f"{home}/{ROOT_DIRS[root]}"),
                           help=f"{root} root directory (env SKEWFREE_{root.upper()}_ROOT)")
        return p

    gen = step("generate-data", "write demo date partitions dt=YYYY-MM-DD/", "data")
    gen.add_argument("--end", type=_date, required=True, help="last day to generate")
    gen.add_argument("--days", type=_positive_int, default=14)
    gen.add_argument("--rows-per-day", type=_positive_int, default=20_000)
    gen.add_argument("--format", choices=("csv", "parquet"), help="default: the model config's format")

    val = step("validate", "the data gate: schema, values, volume and drift of the interval's window",
               *STEP_ROOTS["validate"])
    val.add_argument("--data-dir", help="read partitions from this directory under the data root instead")
    val.add_argument("--accept-anomaly", action="append", default=[], dest="accept", metavar="ID",
                     help="accept a known drift-like anomaly for this run, by id (KIND or KIND:COLUMN, as the "
                          "failed validation lists it); repeatable or comma-separated; recorded in the lineage")
    inf = sub.add_parser("infer-schema", help="write a starting feature contract (features.py) from data",
                         description="Infer types, nullability, min/max and small categorical domains from a "
                                     "partition directory or file, as TFDV's infer_schema does; edit the result.")
    inf.add_argument("--data", required=True, help="a partition directory or a .csv / .parquet file")
    inf.add_argument("--label", required=True, help="the label column")
    inf.add_argument("--max-values", type=_positive_int, default=20,
                     help="string columns with at most this many distinct values get a closed domain")
    inf.add_argument("--out", help="write here (features.py, or schema.pbtxt for a tensorflow_metadata Schema); "
                                   "default: print")
    inf.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    tr = step("transform", "TFT analyze (train window) and transform (train + eval) on Beam",
              *STEP_ROOTS["transform"])
    tr.add_argument("--beam-arg", action="append", default=None, dest="beam_args",
                    help="a Beam pipeline option, repeatable (default: the local FnApiRunner in memory)")
    train = step("train", "train the tf_keras model and export a raw-feature SavedModel", *STEP_ROOTS["train"])
    train.add_argument("--epochs", type=_positive_int)
    train.add_argument("--batch-size", type=_positive_int)
    train.add_argument("--learning-rate", type=float)
    train.add_argument("--gpus", type=_int_from(0), default=0, help="GPUs the step must see (fails fast otherwise)")
    ev = step("evaluate", "metrics through the serving signature on raw eval rows, against the baseline; bless "
              "or not", *STEP_ROOTS["evaluate"])
    ev.add_argument("--model-server-config", help="the model server's config file: its 'stable' label is the "
                                                  "baseline (default: {serving_root}/models.config)")
    ev.add_argument("--stable-version", type=_positive_int,
                    help="the version the model server serves as 'stable' (the baseline), as read from its config "
                         "file by the caller: a pod cannot read that file (the kubernetes backend passes it)")
    for name in CACHED_STEPS:
        sub.choices[name].add_argument("--force", action="store_true",
                                       help="recompute even if a cached output matches")
    pub = step("publish", "copy a blessed model to {serving_root}/{model}/{version} atomically",
               *STEP_ROOTS["publish"])
    pub.add_argument("--image", default="local", help="trainer image, recorded in the version's manifest")
    ver = sub.add_parser("versions", help="list a model's published versions with their lineage")
    ver.add_argument("--model", required=True)
    ver.add_argument("--serving-root", default=_root("serving", f"{home}/serving"))
    ver.add_argument("--json", action="store_true", help="JSON instead of a table")
    serve = sub.add_parser("serve", help="local TF-Serving-compatible REST server (stand-in for tensorflow/serving)")
    serve.add_argument("--model-name", help="serve one model from --model-base-path with the latest policy")
    serve.add_argument("--model-base-path", help="directory of integer-named SavedModel versions")
    serve.add_argument("--model-config-file", help="model_config_list in protobuf text format (re-read on change)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8501, help="REST port (TF Serving's default 8501)")
    serve.add_argument("--file-system-poll-wait-seconds", type=float, default=1.0)
    serve.add_argument("--model-config-file-poll-wait-seconds", type=float, default=1.0)
    return parser


def print_versions(args: argparse.Namespace) -> int:
    from pipelines.publish import list_versions

    config = load_model_config(args.model)
    rows = list_versions(args.serving_root, config.name)
    headline = HEADLINE_METRIC[config.task.type]  # auc, accuracy or rmse
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print(f"no published versions under {args.serving_root}")
        return 0
    print(f"{'version':<11} {'labels':<24} {'interval':<10} {headline:>8} {'code':<16} {'image':<12} "
          f"{'epochs':>6} {'baseline':<11} {'inputs':>6}  run_id")
    for r in rows:
        value = r["metrics"].get(headline)
        shown = f"{value:.4f}" if isinstance(value, int | float) else "-"
        labels = ",".join(filter(None, [r["labels"], "rejected" if r.get("rejected") else "",
                                        "PARTIAL" if r.get("partial") else ""]))
        print(f"{r['version']:<11} {labels or '-':<24} {r['interval']:<10} {shown:>8} {r['code']:<16} "
              f"{r['image']:<12} {r['params'].get('epochs', '-'):>6} {r['baseline'] or '-'!s:<11} "
              f"{r['inputs']:>6}  {r['run_id']}")
    for r in rows:
        if r.get("partial"):
            print(f"PARTIAL {r['version']}: not a complete version, ignored by publish, rollback and the servers: "
                  f"{r['partial']}. Remove the directory once no copy into it is running.")
    return 0


def _same_stream(a, b) -> bool:
    """Whether two streams write to one file, pipe or terminal."""
    try:
        return os.path.samestat(os.fstat(a.fileno()), os.fstat(b.fileno()))
    except (OSError, ValueError, AttributeError):  # not a file (captured by a test): they differ
        return False


def serve(args: argparse.Namespace) -> int:
    import signal
    import threading

    from pipelines.serving.models import ModelManager, ModelSpec
    from pipelines.serving.rest import ModelHTTPServer

    if bool(args.model_config_file) == bool(args.model_base_path):
        raise ValueError("give either --model-config-file or --model-name with --model-base-path")
    specs = None
    if args.model_base_path:
        if not args.model_name:
            raise ValueError("--model-base-path needs --model-name")
        specs = [ModelSpec(name=args.model_name, base_path=args.model_base_path)]
    elif not Path(args.model_config_file).is_file():
        raise FileNotFoundError(f"model config file not found: {args.model_config_file}")
    manager = ModelManager(specs, config_file=args.model_config_file,
                           fs_poll_seconds=args.file_system_poll_wait_seconds,
                           config_poll_seconds=args.model_config_file_poll_wait_seconds)
    manager.start()
    server = ModelHTTPServer((args.host, args.port), manager)
    stopped = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stopped.set())
    server.serve_in_thread()
    log.info("serving REST on http://%s:%d/v1/models/...", args.host, server.server_address[1])
    stopped.wait()
    server.shutdown()
    manager.stop()
    return 0


def run(args: argparse.Namespace, staging: Staging):
    """Run one step; with roots on S3, on the local mirror with its inputs pulled and outputs pushed. With a
    ``--run-id``, validate claims the interval for the run, and every commit checks it still owns it."""
    config = load_model_config(args.model)
    names = [n for n in ("data", "artifact") if hasattr(args, f"{n}_root")]
    interval = getattr(args, "interval", None)
    guard = None
    if getattr(args, "run_id", "") and args.step in STEPS:
        artifact_root, run_id = args.artifact_root, args.run_id  # (the root's URL, not its mirror)

        def guard() -> None:
            if (problem := owner_problem(artifact_root, config.name, interval, run_id)) is not None:
                raise StepError(problem)

        if args.step == "validate":
            claim_interval(artifact_root, config.name, interval, run_id)
        guard()  # before any work: a run that lost its interval stops at once
    roots = staging.local_roots({n: getattr(args, f"{n}_root") for n in names})
    for name, value in roots.items():
        setattr(args, f"{name}_root", value)
    try:
        with commit_guard(guard):
            staging.pull(args.step, config, interval=interval, roots=roots, data_dir=getattr(args, "data_dir", None))
            result = run_step(args, config)
            check_commit()  # (on S3 the push is the commit)
            return staging.push(args.step, config, result, interval=interval, roots=roots)
    finally:
        staging.close()


def run_step(args: argparse.Namespace, config):
    if args.step == "generate-data":
        from pipelines.datagen import generate_data

        return generate_data(config, data_root=args.data_root, end=args.end, days=args.days,
                             rows_per_day=args.rows_per_day, fmt=args.format)
    common = {"interval": args.interval, "artifact_root": Path(args.artifact_root)}
    sweep_leftovers(Run(common["artifact_root"], config.name, args.interval).run_dir)  # a killed attempt's temporaries
    if args.step == "validate":
        from pipelines.validate import validate

        return validate(config, data_root=args.data_root, data_dir=args.data_dir, accept=args.accept, **common)
    if args.step == "transform":
        from pipelines.transform import transform

        return transform(config, beam_args=args.beam_args, force=args.force, **common)
    if args.step == "train":
        from pipelines.train import train

        overrides = {k: v for k in ("epochs", "batch_size", "learning_rate") if (v := getattr(args, k)) is not None}
        return train(config, overrides=overrides, force=args.force, gpus=args.gpus, **common)
    if args.step == "evaluate":
        from pipelines.evaluate import evaluate

        return evaluate(config, serving_root=args.serving_root, server_config=args.model_server_config,
                        stable_version=args.stable_version, force=args.force, **common)
    if args.step == "publish":
        from pipelines.publish import publish

        return publish(config, serving_root=args.serving_root, run_id=args.run_id, image=args.image, **common)
    raise AssertionError(args.step)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stdout)
    args = build_parser().parse_args(argv)
    staging = Staging({n: getattr(args, f"{n}_root") for n in ("data", "artifact") if hasattr(args, f"{n}_root")})
    try:
        if args.step == "serve":
            return serve(args)
        if args.step == "versions":
            return print_versions(args)
        if args.step == "infer-schema":
            from pipelines.infer_schema import infer_schema_command

            return infer_schema_command(args.data, label=args.label, max_values=args.max_values, out=args.out,
                                        force=args.force)
        payload = run(args, staging)
    except Exception as exc:  # noqa: BLE001 - which ones are expected is decided here; the rest go on
        expected = (ConfigError, StepError, ValueError, FileNotFoundError, FileExistsError)
        if not isinstance(exc, expected) and (problem := s3_problem(exc)) is None:
            raise
        # Expected failures (bad input, missing data, a refused publish, an S3 setup error): one clear message,
        # no traceback.
        message = staging.describe(str(exc) if isinstance(exc, expected) else problem)
        one_line = f"error: {args.step}: {' '.join(message.split())}"
        # The last line of stdout is what the orchestrator reports: the whole message on one line. Where stdout
        # is stderr (a terminal, the step operator's pipe, 2>&1) everything goes to stdout, in order, and a
        # one-line message is printed once; elsewhere stderr gets it as written, too.
        same = _same_stream(sys.stdout, sys.stderr)
        if "\n" in message or not same:
            print(f"error: {args.step}: {message}", file=sys.stdout if same else sys.stderr, flush=True)
        print(one_line, flush=True)
        # a pod's failed step: KubernetesPodOperator pushes the XCom file of a failed container too, and the
        # run note names the problem from it (the local step operator pushes the line itself)
        _write_pod_xcom({"error": one_line.removeprefix(f"error: {args.step}:").strip()})
        return 1
    payload = jsonable(dataclasses.asdict(payload) if dataclasses.is_dataclass(payload) else payload)
    _write_pod_xcom(payload)
    print(json.dumps(payload, default=str), flush=True)
    return 0


def _write_pod_xcom(payload: dict) -> None:
    """In a pod (``SKEWFREE_XCOM_RETURN``), the step's XCom: the file KubernetesPodOperator's sidecar reads."""
    if xcom := os.environ.get("SKEWFREE_XCOM_RETURN"):
        Path(xcom).parent.mkdir(parents=True, exist_ok=True)
        Path(xcom).write_text(json.dumps(payload, default=str))
