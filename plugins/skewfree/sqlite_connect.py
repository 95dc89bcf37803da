"""SQLite connect args for the standalone stack (``[database] sql_alchemy_connect_args`` imports them).

The scheduler, api-server, dag-processor, triggerer, LocalExecutor workers and the ``airflow`` CLI all
write to one SQLite file; Python's default 5 s busy timeout made ``backfill create`` fail with
"database is locked" while the scheduler held a write lock on a busy 2-core machine.
"""

CONNECT_ARGS = {"timeout": 60}
