"""Print the time to parse ``dags/`` per DAG beside an empty two-task DAG (no assertions).

usage: python benchmarks/dag_parse.py [--repeat 7]
Each measurement is a fresh ``python`` process that first imports ``airflow.sdk`` (the DAG processor has
Airflow loaded before it parses a file), then times executing one DAG file, as the processor does. The
figure is the median over ``--repeat`` processes, divided by the number of DAGs the file defines.
Target (issue 14): at most 1.5x the empty DAG per DAG.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

EMPTY = '''
import datetime as dt
from airflow.sdk import DAG
from airflow.providers.standard.operators.empty import EmptyOperator

with DAG(dag_id="empty", schedule="@daily", start_date=dt.datetime(2026, 1, 1), catchup=False):
    EmptyOperator(task_id="a") >> EmptyOperator(task_id="b")
'''

PROBE = '''
import runpy, sys, time
import airflow.sdk  # noqa: F401  loaded before any DAG file, as in the DAG processor
from airflow.sdk import DAG
started = time.perf_counter()
namespace = runpy.run_path(sys.argv[1])
elapsed = time.perf_counter() - started
dags = [v for v in namespace.values() if isinstance(v, DAG)]
dags += [d for v in namespace.values() if isinstance(v, dict) for d in v.values() if isinstance(d, DAG)]
heavy = sorted(m for m in ("pyarrow", "numpy", "tensorflow", "tensorflow_transform", "apache_beam") if m in sys.modules)
print(elapsed, len(dags) or 1, ",".join(heavy) or "-")
'''


def measure(path: Path, repeat: int) -> tuple[float, int, str]:
    runs = []
    for _ in range(repeat):
        out = subprocess.run([sys.executable, "-c", PROBE, str(path)], cwd=ROOT, capture_output=True, text=True,
                             env={"PYTHONPATH": f"{ROOT}:{ROOT / 'plugins'}", "PATH": "/usr/bin:/bin",
                                  "AIRFLOW__CORE__LOAD_EXAMPLES": "false",
                                  "AIRFLOW_HOME": tempfile.gettempdir() + "/skewfree-parse-bench"})
        if out.returncode != 0:
            raise RuntimeError(out.stderr[-3000:])
        elapsed, count, heavy = out.stdout.split()[-3:]
        runs.append((float(elapsed), int(count), heavy))
    return statistics.median(r[0] for r in runs), runs[0][1], runs[0][2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        empty = Path(tmp, "empty_dag.py")
        empty.write_text(EMPTY)
        base, _, _ = measure(empty, args.repeat)
    print(f"empty two-task DAG: {base * 1e3:.1f} ms")
    for path in sorted((ROOT / "dags").glob("*.py")):
        elapsed, count, heavy = measure(path, args.repeat)
        print(f"{path.relative_to(ROOT)}: {elapsed * 1e3:.1f} ms for {count} DAGs = {elapsed / count * 1e3:.1f} ms "
              f"per DAG = {elapsed / count / base:.2f}x the empty DAG; heavy modules imported: {heavy}")


if __name__ == "__main__":
    main()
