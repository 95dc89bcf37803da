"""Airflow DAG: daily retraining of the taxi-tip model (one factory call, nothing else).

(Airflow's safe-mode scan only parses files that mention both "airflow" and "dag".)
"""

from skewfree.dag_factory import retrain_dag

dag = retrain_dag("taxi")
