# Image for the Airflow components that parse and run the reverse-ETL DAGs (scheduler, dag-processor,
# triggerer, api-server, Celery workers). Used by docker-compose.yaml and deploy/helm/values.yaml.
#
#   docker build -t reverse-etl-airflow:local .
#
# Not built in CI (no container engine there): `make test` checks the code and requirements.txt, not this
# file. Keep it conventional.
FROM apache/airflow:3.3.2-python3.11

# Dependencies. The base image already holds Airflow 3.3.2 and its providers, installed under Airflow's
# constraints file (constraints-3.3.2/constraints-3.11.txt). requirements.txt is this project's own full lock
# (`make lock`, resolved by uv without those constraints): it pins apache-airflow==3.3.2 itself, so Airflow
# stays as it is, but pip may move some shared libraries from the constraint pins to ours - which is the set
# `make test` checks. It also carries pytest and ruff, harmless here. Installed as the image's airflow user.
COPY --chown=airflow:root requirements.txt /requirements.txt
RUN pip install --no-cache-dir -r /requirements.txt

# The code: DAG files, the reverse_etl package (Airflow puts plugins/ on sys.path) and the SQL mappings and
# expectation suites (found as /opt/airflow/include, or wherever RETL_INCLUDE_DIR says).
COPY --chown=airflow:root dags/ /opt/airflow/dags/
COPY --chown=airflow:root plugins/ /opt/airflow/plugins/
COPY --chown=airflow:root include/ /opt/airflow/include/

# Default staging area ($AIRFLOW_HOME/retl/staging), created here so that a volume mounted on it is
# owned by the airflow user.
RUN mkdir -p /opt/airflow/retl/staging

# No usage statistics from Great Expectations; `python -m reverse_etl.cli` works in the container.
ENV GX_ANALYTICS_ENABLED=False \
    PYTHONPATH=/opt/airflow/plugins
