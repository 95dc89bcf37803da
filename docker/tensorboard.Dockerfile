# TensorBoard for the training curves that train writes under the artifact root (s3://.../{model}/runs/
# {interval}/train/tensorboard). Without TensorFlow on purpose: TensorFlow's own file system has no s3:// since
# 2.6, while TensorBoard's fallback reader reads S3 with boto3 (endpoint from S3_ENDPOINT, e.g. MinIO).
FROM python:3.11.10-slim-bookworm

RUN pip install --no-cache-dir "tensorboard==2.21.0" "boto3==1.44.5" \
 && useradd --uid 1000 --create-home tensorboard
USER 1000
EXPOSE 6006
ENTRYPOINT ["tensorboard"]
