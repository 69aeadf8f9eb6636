"""Every DAG imports, parses fast without heavy imports, and has retries and a pool on vendor tasks."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys

import pytest

from sandbox.env import REPO

HEAVY = ("pandas", "great_expectations", "duckdb", "pyarrow", "psycopg2", "psycopg", "numpy")
DAG_FILES = sorted((REPO / "dags").glob("*.py"))


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(REPO / "dags"))


def test_every_dag_imports(dagbag):
    assert dagbag.import_errors == {}
    assert {
        "voucherify_sync",
        "salesfire_sync",
        "connectif_sync",
        "splio_referral_sync",
        "salesmanago_sync",
    } <= set(dagbag.dags)


@pytest.mark.parametrize("path", DAG_FILES, ids=lambda p: p.name)
def test_dag_file_parses_fast_without_heavy_imports(path):
    probe = f"""
import json, runpy, sys, time
import airflow.sdk  # Airflow itself is loaded by the parser before any DAG file
before = set(sys.modules)
started = time.perf_counter()
runpy.run_path({str(path)!r})
print(json.dumps({{"seconds": time.perf_counter() - started, "new": sorted(set(sys.modules) - before)}}))
"""
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    heavy = sorted({m.split(".")[0] for m in result["new"]} & set(HEAVY))
    assert heavy == [], f"{path.name} imports {heavy} at parse time"
    assert result["seconds"] < 2.0


def test_schedule_and_run_settings(dagbag):
    from airflow.sdk import CronDataIntervalTimetable

    for dag in dagbag.dags.values():
        assert isinstance(dag.timetable, CronDataIntervalTimetable), "cron default gives zero-width intervals"
        assert dag.catchup is False and dag.max_active_runs == 1
        for param in (
            "dry_run",
            "full_resync",
            "reconcile",
            "window_start",
            "window_end",
            "entities",
            "max_rejected_share",
        ):
            assert param in dag.params


def test_vendor_tasks_have_pool_and_exponential_retries(dagbag):
    for dag in dagbag.dags.values():
        # every task that talks to a vendor takes its connection as vendor_conn_id
        vendor_tasks = [t for t in dag.tasks if getattr(t, "vendor_conn_id", None)]
        assert len(vendor_tasks) >= len([t for t in dag.tasks if t.task_id.endswith(".load")]) > 0
        for t in vendor_tasks:
            assert t.pool not in (None, "default_pool"), t.task_id
            assert t.retries >= 1 and t.retry_exponential_backoff
            assert t.retry_delay >= dt.timedelta(minutes=1)


def test_voucherify_orders_wait_for_customers_and_products(dagbag):
    dag = dagbag.dags["voucherify_sync"]
    upstream = dag.get_task("orders.load").upstream_task_ids
    assert {"customers.load", "products.load", "orders.validate"} <= upstream


def test_dags_that_delete_offer_the_erasure_params(dagbag):
    for dag_id in ("voucherify_sync", "salesmanago_sync"):
        params = dagbag.dags[dag_id].params
        assert params["detect_erasures"] is True and params["max_erasure_share"] == 0.05
    assert "detect_erasures" not in dagbag.dags["salesfire_sync"].params  # nothing there can delete
