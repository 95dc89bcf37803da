"""Roots on the Airflow side: local directories, or S3 through the amazon provider's ``S3Hook``."""

from __future__ import annotations

from pipelines.objectstore import Store, is_s3, open_store


def open_root(root: str, aws_conn_id: str = "aws_default") -> Store:
    """A ``pipelines.objectstore.Store`` for ``root``; an ``s3://`` root uses the credentials and endpoint
    of the Airflow connection ``aws_conn_id`` (boto3's defaults when that connection is not defined)."""
    if not is_s3(root):
        return open_store(root)
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    return open_store(root, client=S3Hook(aws_conn_id=aws_conn_id).get_conn())
