"""Airflow DAGs for every Skewfree model: ``<name>_retrain`` and ``<name>_rollback`` per model folder.

Models are discovered in ``pipelines/models/*`` and in the folders of ``SKEWFREE_MODELS_DIR``; adding
a model folder adds its DAGs, with no DAG file. A broken model shows as an import error naming it.
(Airflow's safe-mode scan only parses files that mention both "airflow" and "dag".)
"""

from skewfree.dag_factory import model_dags

globals().update(model_dags())
