"""Celery workers that import Great Expectations, pandas, DuckDB and the engine once, not once per task.

Why: on Celery, every task runs in a process forked from the worker. Airflow's own handler of Celery's
``import_modules`` signal preloads a few Airflow modules before the worker forks its pool; this one adds
what our tasks import (``reverse_etl.preload``), so a forked task finds them in ``sys.modules``. Point
``[celery] celery_config_options`` here (``make stack``, docker-compose.yaml and the Helm values do):

    AIRFLOW__CELERY__CELERY_CONFIG_OPTIONS=reverse_etl.celery_config.CELERY_CONFIG

The scheduler imports this module too (it reads the same setting to publish tasks): importing it is cheap,
the preload only runs in a worker.
"""

from __future__ import annotations

import gc

from airflow.providers.celery.executors.default_celery import DEFAULT_CELERY_CONFIG
from celery.signals import import_modules

from reverse_etl.preload import PRELOADED, preload, preload_and_log

__all__ = ["CELERY_CONFIG", "PRELOADED", "preload", "preload_before_forking"]

# Airflow's defaults, unchanged: the setting points here only for the preload below.
CELERY_CONFIG = dict(DEFAULT_CELERY_CONFIG)


@import_modules.connect
def preload_before_forking(*args, **kwargs) -> None:
    """Celery sends ``import_modules`` in the worker's main process before it forks the pool."""
    preload_and_log("worker")
    # What the pool inherits stays out of the collector's passes, so forked tasks do not copy its pages.
    gc.freeze()
