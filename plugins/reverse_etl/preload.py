"""Import what our tasks need once, in a process that then forks the task processes.

Every Airflow task process pays its imports; Great Expectations alone costs a validate task 4-5 s from a fresh
interpreter. Where tasks are forked from a long-lived process (a Celery worker's main process, a
LocalExecutor's workers forked from the scheduler), importing these there first means a task finds them in
``sys.modules``: ``reverse_etl.celery_config`` does it for Celery, ``reverse_etl.local_executor`` for the
LocalExecutor.
"""

from __future__ import annotations

import importlib
import logging
import time

log = logging.getLogger(__name__)

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
    from reverse_etl.errors import ConfigError
    from reverse_etl.gx_suite import defer_gx_imports

    try:
        defer_gx_imports()
    except ConfigError as err:  # a bad RETL_GX_LOG_LEVEL: each validate task fails on it, with this message
        log.warning("reverse_etl: %s", err)
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


def preload_and_log(where: str) -> None:
    """``preload`` with one INFO line saying how long it took, for the log of the process that forks."""
    started = time.monotonic()
    failed = preload()
    log.info(
        "reverse_etl: preloaded Great Expectations, pandas, DuckDB and the engine in %.1f s (%d modules%s); "
        "tasks forked from this %s skip those imports",
        time.monotonic() - started,
        len(PRELOADED) - len(failed),
        f", {len(failed)} failed" if failed else "",
        where,
    )
