"""Airflow DAG: manual rollback of the taxi-tip model to a named (or the previous) version."""

from skewfree.dag_factory import rollback_dag

dag = rollback_dag("taxi")
