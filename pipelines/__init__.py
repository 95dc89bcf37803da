"""Skewfree ML steps: plain functions plus one CLI (``python -m pipelines STEP``).

Nothing here imports Airflow; TensorFlow, TFT and Beam are imported inside the
steps that need them so that ``validate``, ``publish`` and the config readers
stay light.
"""
