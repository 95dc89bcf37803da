# Airflow image: apache/airflow at an exact tag plus the providers Skewfree uses, the plugins and
# DAGs, and the light part of `pipelines` (config, CLI argv, rollout). No TensorFlow: steps run in
# trainer pods, and the DAG processor must never pay for a TF import.
FROM apache/airflow:3.3.2-python3.11

COPY --chown=airflow:root constraints.txt /opt/skewfree/constraints.txt
RUN pip install --no-cache-dir -c /opt/skewfree/constraints.txt \
      "apache-airflow==3.3.2" \
      "apache-airflow-providers-cncf-kubernetes==10.25.0" \
      "apache-airflow-providers-amazon==9.39.0" \
      "apache-airflow-providers-apache-beam==6.3.1" \
      "apache-airflow-providers-standard==1.21.0" \
      pyarrow numpy protobuf \
 # the serving config protos only: tensorflow-serving-api would otherwise pull in TensorFlow
 && pip install --no-cache-dir --no-deps "tensorflow-serving-api==2.19.1"

COPY --chown=airflow:root pipelines /opt/skewfree/pipelines
COPY --chown=airflow:root plugins /opt/airflow/plugins
COPY --chown=airflow:root dags /opt/airflow/dags
ENV PYTHONPATH=/opt/skewfree
