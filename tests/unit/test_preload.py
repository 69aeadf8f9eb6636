"""The preload of what tasks import, in the process that forks them: a Celery worker configured with
``reverse_etl.celery_config`` (before it forks its pool; Airflow's Celery settings kept), and the scheduler
running ``reverse_etl.local_executor.PreloadingLocalExecutor`` (before it forks its LocalExecutor workers).
Each is probed in a fresh interpreter through Airflow's own loaders, as the component starts."""

from __future__ import annotations

import json
import subprocess
import sys

from sandbox.env import airflow_env

PROBE = """
import gc, json, sys
from airflow.providers.celery.executors import celery_executor_utils as utils
from airflow.providers.celery.executors.default_celery import DEFAULT_CELERY_CONFIG
from reverse_etl import celery_config

before = "great_expectations" in sys.modules
utils.app.loader.import_default_modules()  # what `celery worker` does before forking: sends import_modules
print(json.dumps({
    "gx_before": before,
    "missing": [m for m in celery_config.PRELOADED if m not in sys.modules],
    "frozen": gc.get_freeze_count(),
    "defaults_kept": utils.get_celery_configuration() is celery_config.CELERY_CONFIG
        and celery_config.CELERY_CONFIG == DEFAULT_CELERY_CONFIG,
    "broker": utils.app.conf.broker_url,
}))
"""


def test_a_worker_preloads_what_tasks_import_and_keeps_airflows_celery_settings(tmp_path):
    env = {
        **airflow_env(tmp_path),
        "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
        "AIRFLOW__CELERY__BROKER_URL": "redis://127.0.0.1:1/0",  # never contacted
        "AIRFLOW__CELERY__CELERY_CONFIG_OPTIONS": "reverse_etl.celery_config.CELERY_CONFIG",
    }
    done = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    probe = json.loads(done.stdout.strip().splitlines()[-1])
    assert probe["gx_before"] is False  # importing the setting (the scheduler does) stays cheap
    assert probe["missing"] == []
    assert probe["frozen"] > 0
    assert probe["defaults_kept"] is True
    assert probe["broker"] == "redis://127.0.0.1:1/0"
    assert "reverse_etl: preloaded Great Expectations" in done.stderr + done.stdout


LOCAL_PROBE = """
import json, sys
from airflow.executors.executor_loader import ExecutorLoader
from reverse_etl.preload import PRELOADED

executor = ExecutorLoader.get_default_executor()  # what the scheduler does with [core] executor
before = "great_expectations" in sys.modules
executor.start()
try:
    # The workers were forked after the preload: DuckDB's and pyarrow's compiled modules are mapped in them.
    maps = {pid: open(f"/proc/{pid}/maps").read() for pid in executor.workers}
    print(json.dumps({
        "executor": type(executor).__name__,
        "gx_before": before,
        "missing": [m for m in PRELOADED if m not in sys.modules],
        "workers": len(maps),
        "workers_have_duckdb": all("/_duckdb." in m for m in maps.values()),
        "workers_have_pyarrow": all("/pyarrow/" in m for m in maps.values()),
    }))
finally:
    executor.end()
"""


def test_the_local_executor_preloads_in_the_scheduler_before_forking_its_workers(tmp_path):
    env = {
        **airflow_env(tmp_path),
        "AIRFLOW__CORE__EXECUTOR": "reverse_etl.local_executor.PreloadingLocalExecutor",
        "AIRFLOW__CORE__PARALLELISM": "2",
    }
    done = subprocess.run(
        [sys.executable, "-c", LOCAL_PROBE], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    probe = json.loads(next(line for line in done.stdout.splitlines() if line.startswith('{"executor"')))
    assert probe["executor"] == "PreloadingLocalExecutor"
    assert probe["gx_before"] is False  # loading the executor class (the API server does too) stays cheap
    assert probe["missing"] == []
    assert probe["workers"] == 2
    assert probe["workers_have_duckdb"] and probe["workers_have_pyarrow"]
    assert (
        "tasks forked from this scheduler's LocalExecutor workers skip those imports"
        in done.stderr + done.stdout
    )
