"""Skewfree's Airflow glue, in the provider shape: operators, the DAG factory, the demo.

Nothing here imports TensorFlow, TFT or Beam: the DAG processor parses these
modules every few seconds. The ML steps run as ``python -m pipelines STEP``.
"""
