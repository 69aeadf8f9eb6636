"""The Celery preload: a worker configured with ``reverse_etl.celery_config`` imports what tasks need before
it forks its pool, and keeps Airflow's Celery settings. Probed in a fresh interpreter through Airflow's own
Celery app and Celery's own signal, as a worker starts."""

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
