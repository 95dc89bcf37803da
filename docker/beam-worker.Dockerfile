# Beam SDK worker image for transform on runners elsewhere: Dataflow (--sdk_container_image) and the worker pool
# of Flink or Spark. The trainer image's stack (TF, TFT, Beam and this project, pinned by pyproject.toml and
# constraints.txt) plus Beam's boot program, which starts the SDK worker (Dataflow's documented custom-container
# layout: /opt/apache/beam/boot is the entrypoint). The SDK image's Beam and Python versions match the installed
# apache-beam 2.77.0 on Python 3.11. Not built here (no Docker engine on the development machines).
FROM apache/beam_python3.11_sdk:2.77.0 AS beam

FROM tensorflow/tensorflow:2.21.0-gpu

ENV PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    TF_USE_LEGACY_KERAS=1 \
    TF_CPP_MIN_LOG_LEVEL=2

WORKDIR /opt/skewfree
COPY pyproject.toml constraints.txt README.md ./
COPY pipelines ./pipelines
RUN python -m pip install --upgrade pip \
 && python -m pip install -c constraints.txt .
COPY --from=beam /opt/apache/beam /opt/apache/beam

ENTRYPOINT ["/opt/apache/beam/boot"]
