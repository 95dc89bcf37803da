# Trainer image: runs `python -m pipelines STEP ...` in a KubernetesPodOperator pod.
# Exact TensorFlow GPU base; TF, TFT and Beam pinned by pyproject.toml + constraints.txt; no Airflow.
FROM tensorflow/tensorflow:2.21.0-gpu

ENV PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    TF_USE_LEGACY_KERAS=1 \
    TF_CPP_MIN_LOG_LEVEL=2

WORKDIR /opt/skewfree
COPY pyproject.toml constraints.txt README.md ./
COPY pipelines ./pipelines
RUN python -m pip install --upgrade pip \
 && python -m pip install -c constraints.txt . \
 && useradd --uid 1000 --create-home --shell /usr/sbin/nologin skewfree \
 && mkdir -p /airflow/xcom && chown skewfree /airflow/xcom

# Non-root, matching the pod's securityContext (runAsUser 1000).
USER 1000
ENTRYPOINT []
CMD ["python", "-m", "pipelines", "--help"]
