"""Celery workers that import Great Expectations, pandas, DuckDB and the engine once, not once per task.

Why: on Celery, every task runs in a process forked from the worker. Airflow's own handler of Celery's
``import_modules`` signal preloads a few Airflow modules before the worker forks its pool; this one adds
what our tasks import (Great Expectations alone costs a validate task 4-5 s from a fresh interpreter), so a
forked task finds them in ``sys.modules``. Point ``[celery] celery_config_options`` here (``make stack``,
docker-compose.yaml and the Helm values do):

    AIRFLOW__CELERY__CELERY_CONFIG_OPTIONS=reverse_etl.celery_config.CELERY_CONFIG

The scheduler imports this module too (it reads the same setting to publish tasks): importing it is cheap,
the preload only runs in a worker.
"""

from __future__ import annotations

import gc
import importlib
import logging
import time

from airflow.providers.celery.executors.default_celery import DEFAULT_CELERY_CONFIG
from celery.signals import import_modules

log = logging.getLogger(__name__)

# Airflow's defaults, unchanged: the setting points here only for the preload below.
CELERY_CONFIG = dict(DEFAULT_CELERY_CONFIG)

# What a task imports before it does any work, heaviest first. The engine's own modules come last: they are
# light, but each imports a vendor client or a driver the tasks would otherwise pay for.
PRELOADED = (
    "reverse_etl.gx_suite",  # first: it defers Great Expectations' rarely used imports (scipy.stats, altair)
    "great_expectations",
    "great_expectations.expectations",
    "pandas",
    "pyarrow.parquet",
    "pyarrow.compute",
    "duckdb",
    "duckdb_engine",
    "sqlalchemy",
    "requests",
    "jinja2",
    "reverse_etl.extract",
    "reverse_etl.store",
    "reverse_etl.warehouse",
    "reverse_etl.validate",
    "reverse_etl.gx_duckdb",
    "reverse_etl.ledger",
    "reverse_etl.staging",
    "reverse_etl.alerts",
    "reverse_etl.operators.load",
    "reverse_etl.hooks.voucherify",
    "reverse_etl.hooks.connectif",
    "reverse_etl.hooks.salesfire",
    "reverse_etl.hooks.datatalks",
    "reverse_etl.hooks.splio",
)


def preload(modules: tuple[str, ...] = PRELOADED) -> list[str]:
    """Import ``modules``; one that fails is logged and left to the task that needs it (where its error
    names the problem in that task's log). Returns the names that failed."""
    from reverse_etl.gx_suite import defer_gx_imports

    defer_gx_imports()
    failed = []
    for name in modules:
        try:
            importlib.import_module(name)
        except Exception as err:
            failed.append(name)
            log.warning(
                "reverse_etl: could not preload %s (%s: %s); tasks import it themselves",
                name,
                type(err).__name__,
                err,
            )
    return failed


@import_modules.connect
def preload_before_forking(*args, **kwargs) -> None:
    """Celery sends ``import_modules`` in the worker's main process before it forks the pool."""
    started = time.monotonic()
    failed = preload()
    # What the pool inherits stays out of the collector's passes, so forked tasks do not copy its pages.
    gc.freeze()
    log.info(
        "reverse_etl: preloaded Great Expectations, pandas, DuckDB and the engine in %.1f s (%d modules%s); "
        "tasks forked from this worker skip those imports",
        time.monotonic() - started,
        len(PRELOADED) - len(failed),
        f", {len(failed)} failed" if failed else "",
    )
