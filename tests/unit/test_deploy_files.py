"""docker-compose.yaml and deploy/helm/values.yaml stay deployable although neither runs in CI (no container
engine, no cluster): both set the same reverse-ETL settings, under names the code reads and the docs list;
the compose workers can be scaled; staging is shared object storage; the pools are the ones the DAGs use.

The files are parsed with PyYAML (anchors and ``<<`` merges resolved as Compose does); Compose's
``${VAR:-default}`` is substituted with its default.
"""

from __future__ import annotations

import ast
import copy
import json
import re
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from sandbox.env import REPO
from tests.unit.test_docs import documented_env_vars, env_reads, python_files

COMPOSE = REPO / "docker-compose.yaml"
HELM = REPO / "deploy" / "helm" / "values.yaml"
POOLS_FILE = REPO / "deploy" / "pools.json"
# What has to agree between every place tasks run at scale: where the state, the rate buckets and the
# staging live, how often loads retry, and how tasks reach the workers.
AT_SCALE = {
    "RETL_STAGING_URL",
    "RETL_RATE_LIMIT_URL",
    "RETL_TASK_RETRIES",
    "AIRFLOW_CONN_RETL_STATE",
    "AIRFLOW_CONN_RETL_WAREHOUSE",
    "AIRFLOW_CONN_RETL_STAGING",
    "AIRFLOW__CORE__EXECUTOR",
    "AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__VISIBILITY_TIMEOUT",
    "AIRFLOW__CELERY__CELERY_CONFIG_OPTIONS",
}
AIRFLOW_SERVICES = (
    "airflow-init",
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
    "airflow-worker",
)


def interpolate(value: str) -> str:
    """Compose's interpolation with nothing set: ``${VAR:-default}`` → default, ``${VAR}`` → "", ``$$`` → $."""
    value = re.sub(r"(?<!\$)\$\{[A-Z0-9_]+(?::?-([^}]*))?\}", lambda m: m.group(1) or "", value)
    return value.replace("$$", "$")


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


@pytest.fixture(scope="module")
def helm() -> dict:
    return yaml.safe_load(HELM.read_text())


def compose_env(compose: dict, service: str = "airflow-worker") -> dict[str, str]:
    return {
        name: interpolate(str(value)) for name, value in compose["services"][service]["environment"].items()
    }


def helm_env(helm: dict) -> dict[str, str | None]:
    """Every variable the chart sets in the Airflow containers from these values: ``env`` (with its value),
    ``secret`` (value in a Kubernetes Secret: None), ``executor`` and ``config`` (as AIRFLOW__SECTION__KEY)."""
    env: dict[str, str | None] = {item["name"]: str(item["value"]) for item in helm.get("env", [])}
    env.update({item["envName"]: None for item in helm.get("secret", [])})
    env["AIRFLOW__CORE__EXECUTOR"] = helm["executor"]
    for section, options in helm.get("config", {}).items():
        for key, value in options.items():
            env[f"AIRFLOW__{section.upper()}__{key.upper()}"] = str(value)
    return env


def pipeline_names(env: dict) -> set[str]:
    """The reverse-ETL variables of an environment: RETL_* and the pipeline's own connections."""
    return {name for name in env if name.startswith(("RETL_", "AIRFLOW_CONN_RETL_"))}


def mismatches(compose_names: dict, helm_names: dict) -> list[str]:
    """Settings named in one file only, or missing from both, among those that matter at scale."""
    wanted = AT_SCALE | pipeline_names(compose_names) | pipeline_names(helm_names)
    problems = [
        f"{name}: only in docker-compose.yaml"
        for name in sorted(wanted - set(helm_names))
        if name in compose_names
    ]
    problems += [
        f"{name}: only in deploy/helm/values.yaml"
        for name in sorted(wanted - set(compose_names))
        if name in helm_names
    ]
    problems += [f"{name}: in neither" for name in sorted(AT_SCALE - set(compose_names) - set(helm_names))]
    return problems


def code_reads() -> set[str]:
    return {var for path in python_files("plugins", "dags", "scripts") for var in env_reads(path)}


# --- the same settings in both -------------------------------------------------------------------------


def test_both_files_name_the_same_settings_for_running_at_scale(compose, helm):
    assert mismatches(compose_env(compose), helm_env(helm)) == []


def test_a_variable_renamed_in_one_file_only_is_caught(compose, helm):
    renamed = copy.deepcopy(helm)
    renamed["env"] = [
        {**item, "name": "RETL_STAGING_ROOT"} if item["name"] == "RETL_STAGING_URL" else item
        for item in renamed["env"]
    ]
    before = set(mismatches(compose_env(compose), helm_env(helm)))
    after = set(mismatches(compose_env(compose), helm_env(renamed)))
    assert after - before == {
        "RETL_STAGING_URL: only in docker-compose.yaml",
        "RETL_STAGING_ROOT: only in deploy/helm/values.yaml",
    }


def test_settings_with_values_in_both_files_agree(compose, helm):
    ours, theirs = compose_env(compose), helm_env(helm)
    shared = {name for name in AT_SCALE if theirs.get(name) is not None}
    assert {"RETL_STAGING_URL", "RETL_TASK_RETRIES", "AIRFLOW__CORE__EXECUTOR"} <= shared
    assert {name: ours[name] for name in shared} == {name: theirs[name] for name in shared}
    assert ours["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"


def test_every_retl_variable_they_set_is_read_by_the_code_and_documented(compose, helm):
    names = {name for name in {*compose_env(compose), *helm_env(helm)} if name.startswith("RETL_")}
    assert names, "neither file sets a RETL_* variable"
    read, documented = code_reads(), documented_env_vars()
    assert sorted(names - read) == [], (
        "set by a deploy file but read by no code in plugins/, dags/ or scripts/"
    )
    assert sorted(names - documented) == [], "set by a deploy file but missing from docs/configuration.md"


def test_every_airflow_service_of_the_compose_file_shares_the_settings(compose):
    worker = compose_env(compose)
    for service in AIRFLOW_SERVICES:
        env = compose_env(compose, service)
        assert {name: env.get(name) for name in AT_SCALE} == {name: worker[name] for name in AT_SCALE}, (
            service
        )


# --- compose: scalable workers on shared services ------------------------------------------------------


def test_the_compose_worker_scales(compose):
    worker = compose["services"]["airflow-worker"]
    assert "container_name" not in worker and "ports" not in worker  # both would clash at --scale N > 1
    assert worker["command"] == "celery worker"
    assert "inspect ping" in " ".join(worker["healthcheck"]["test"])
    assert worker["environment"]["DUMB_INIT_SETSID"] == "0"  # warm shutdown: Celery finishes its tasks
    assert worker["depends_on"]["airflow-init"]["condition"] == "service_completed_successfully"


def test_compose_publishes_ports_on_the_loopback_only(compose):
    published = [port for service in compose["services"].values() for port in service.get("ports", [])]
    assert published and all(str(port).startswith("127.0.0.1:") for port in published), published


def test_compose_keeps_broker_and_rate_buckets_apart_and_results_in_postgres(compose):
    env = compose_env(compose)
    broker, buckets = urlsplit(env["AIRFLOW__CELERY__BROKER_URL"]), urlsplit(env["RETL_RATE_LIMIT_URL"])
    assert (broker.scheme, buckets.scheme) == ("redis", "redis")
    assert broker.hostname == buckets.hostname == "redis" and broker.path != buckets.path
    assert env["AIRFLOW__CELERY__RESULT_BACKEND"].startswith("db+postgresql://")
    assert urlsplit(env["AIRFLOW_CONN_RETL_STATE"]).hostname == "postgres"
    assert {"postgres", "redis"} <= set(compose["services"])


def test_staging_is_s3_through_the_connection_it_names(compose, helm):
    for env in (compose_env(compose), helm_env(helm)):
        url = urlsplit(env["RETL_STAGING_URL"])
        assert url.scheme == "s3"
        assert f"AIRFLOW_CONN_{url.username.upper()}" in env, "the staging URL names a connection nobody sets"
    env = compose_env(compose)
    url = urlsplit(env["RETL_STAGING_URL"])
    conn = json.loads(env[f"AIRFLOW_CONN_{url.username.upper()}"])
    assert conn["conn_type"] == "aws"
    endpoint = urlsplit(conn["extra"]["endpoint_url"])
    assert endpoint.hostname in compose["services"], "the staging endpoint is not a compose service"
    bucket_init = " ".join(compose["services"]["minio-init"]["entrypoint"])
    assert f"mb --ignore-existing local/{url.hostname}" in bucket_init
    assert compose["services"]["airflow-worker"]["depends_on"]["minio-init"]["condition"] == (
        "service_completed_successfully"
    )


def test_compose_init_creates_every_pool_the_dags_use(compose):
    tree = ast.parse((REPO / "scripts" / "prepare.py").read_text())
    constants = {
        node.targets[0].id: ast.literal_eval(node.value)
        for node in tree.body
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name)
    }
    pools = json.loads(POOLS_FILE.read_text())
    assert sorted(pools) == sorted(constants["POOLS"])
    assert {pool["slots"] for pool in pools.values()} == {constants["POOL_SLOTS"]}
    init = compose["services"]["airflow-init"]
    config = compose["configs"][init["configs"][0]["source"]]
    assert (COMPOSE.parent / config["file"]).resolve() == POOLS_FILE
    script = " ".join(init["command"])
    assert f"airflow pools import {init['configs'][0]['target']}" in script
    assert "python -m reverse_etl.cli init" in script


# --- helm ----------------------------------------------------------------------------------------------


def test_helm_values_run_celery_workers_from_our_image(helm):
    assert helm["executor"] == "CeleryExecutor"
    assert helm["workers"]["replicas"] == 2
    assert helm["redis"]["enabled"] is True
    assert helm["images"]["airflow"]["repository"] and helm["images"]["airflow"]["tag"]
    # the DAGs are in the image: nothing else may provide (and override) the DAGs folder
    assert helm["dags"]["gitSync"]["enabled"] is False and helm["dags"]["persistence"]["enabled"] is False


def test_helm_values_keep_credentials_in_kubernetes_secrets(helm):
    secret_names = {item["envName"] for item in helm["secret"]}
    assert {"AIRFLOW_CONN_RETL_STATE", "AIRFLOW_CONN_RETL_STAGING", "RETL_RATE_LIMIT_URL"} <= secret_names
    plain = {item["name"] for item in helm["env"]}
    assert not plain & secret_names and not any(name.startswith("AIRFLOW_CONN_") for name in plain)
    assert "secretRef" in helm["extraEnvFrom"]
    assert helm["jwtSecretName"] and helm["fernetKeySecretName"]


def test_the_deploy_files_exist_where_the_docs_say():
    deployment = (REPO / "docs" / "deployment.md").read_text()
    for path in (COMPOSE, HELM, POOLS_FILE):
        assert Path(path).is_file()
        assert path.relative_to(REPO).as_posix() in deployment, (
            f"docs/deployment.md does not mention {path.name}"
        )
