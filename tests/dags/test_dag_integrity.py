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


def test_engine_tasks_retry_once_for_a_lost_worker(dagbag):
    """extract, validate and report run again once when their worker dies (Celery); data failures raise
    AirflowFailException, which no retry count can repeat."""
    for dag in dagbag.dags.values():
        for t in dag.tasks:
            if t.task_id.rsplit(".", 1)[-1] in ("extract", "validate", "report"):
                assert t.retries == 1, t.task_id


def test_voucherify_orders_wait_for_customers_and_products(dagbag):
    dag = dagbag.dags["voucherify_sync"]
    upstream = dag.get_task("orders.load").upstream_task_ids
    assert {"customers.load", "products.load", "orders.validate"} <= upstream


def test_dags_that_delete_offer_the_erasure_params(dagbag):
    for dag_id in ("voucherify_sync", "salesmanago_sync"):
        params = dagbag.dags[dag_id].params
        assert params["detect_erasures"] is True and params["max_erasure_share"] == 0.05
    assert "detect_erasures" not in dagbag.dags["salesfire_sync"].params  # nothing there can delete


def test_every_dag_says_in_one_sentence_what_it_syncs_where(dagbag):
    for dag in dagbag.dags.values():
        destination = dag.dag_id.removesuffix("_sync").split("_")[0]
        assert dag.description and dag.description.endswith(".") and dag.description.count(". ") == 0
        assert destination.lower() in dag.description.lower(), dag.dag_id


def test_window_params_are_dates_and_refuse_anything_else_before_a_run_exists(dagbag):
    from airflow.sdk.exceptions import ParamValidationError

    for dag in dagbag.dags.values():
        for name in ("window_start", "window_end"):
            param = dag.params.get_param(name)
            assert param.schema["format"] == "date"  # the trigger form's date picker
            assert param.resolve("2026-10-31") == "2026-10-31" and param.resolve(None) is None
            for bad in ("2026-13-01", "31/10/2026", "yesterday", "2026-10-31T06:00:00Z"):
                with pytest.raises(ParamValidationError):
                    param.resolve(bad)
    # The scheduler's copy of the DAG checks the whole conf when the UI or the API creates a run.
    from airflow.exceptions import ParamValidationError as ServerParamValidationError
    from airflow.serialization.serialized_objects import DagSerialization

    served = DagSerialization.from_dict(DagSerialization.to_dict(dagbag.dags["voucherify_sync"]))
    served.params.deep_merge({"window_start": "2026-10-31", "window_end": "2026-11-01"}).validate()
    with pytest.raises(ServerParamValidationError, match="window_start"):
        served.params.deep_merge({"window_start": "2026-02-30", "window_end": "2026-11-01"}).validate()


def test_entities_param_is_a_multi_select_of_the_dags_own_entities(dagbag):
    from airflow.sdk.exceptions import ParamValidationError

    dag = dagbag.dags["voucherify_sync"]
    param = dag.params.get_param("entities")
    entities = ["customers", "products", "orders"]
    # type array + examples is what Airflow's trigger form renders as a multi-select
    assert param.schema["type"] == "array" and param.schema["examples"] == entities
    assert param.resolve(["orders", "customers"]) == ["orders", "customers"]
    for bad in (["contacts"], ["customers", "customers"], "customers"):
        with pytest.raises(ParamValidationError):
            param.resolve(bad)
    for other in dagbag.dags.values():
        loads = sorted(t.task_id.removesuffix(".load") for t in other.tasks if t.task_id.endswith(".load"))
        assert sorted(other.params.get_param("entities").schema["examples"]) == loads
