"""A live ``airflow standalone`` (scheduler, DAG processor, API server, LocalExecutor) runs a backfill
created with ``airflow backfill create``: the runs take their windows from the data intervals, share the
account's bucket, and deliver exactly what changed in those intervals. Then a manual ``connectif_sync``
run whose loads run at the same time in separate processes: together they never pass the account's limit."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter

import duckdb
import psutil
import pytest

from sandbox.connectif import ConnectifSandbox
from sandbox.env import airflow_env
from sandbox.voucherify import VoucherifySandbox
from tests.e2e.harness import LIMIT, WINDOW_SECONDS, run_env, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.serial]  # clock-checked pacing: run alone
FROM, TO = "2026-10-29", "2026-10-31"  # logical dates 10-29 03:00 and 10-30 03:00: two daily runs
INTERVAL = ("2026-10-29 03:00:00", "2026-10-31 03:00:00")


def airflow(env: dict, *args: str, check: bool = True) -> str:
    """Run an ``airflow`` CLI command; retried while the live SQLite metadata database is locked."""
    for _ in range(10):
        done = subprocess.run(
            [sys.executable, "-m", "airflow", *args], env=env, capture_output=True, text=True, timeout=300
        )
        if "database is locked" not in done.stderr + done.stdout:
            break
        time.sleep(2)
    if check and done.returncode:
        raise AssertionError(f"airflow {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    return done.stdout


def list_runs(env: dict, dag_id: str) -> list[dict]:
    out = airflow(env, "dags", "list-runs", dag_id, "-o", "json", check=False)
    lines = [line for line in out.splitlines() if line.startswith("[{") or line == "[]"]  # logs share stdout
    return json.loads(lines[-1]) if lines else []


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def standalone(warehouse, tmp_path):
    with (
        VoucherifySandbox(port=0, limit=LIMIT, window_seconds=WINDOW_SECONDS, async_delay=0.02) as sandbox,
        ConnectifSandbox(port=0, limit=LIMIT, window_seconds=WINDOW_SECONDS, async_delay=0.02) as connectif,
    ):
        port = free_port()
        env = run_env(tmp_path, warehouse, voucherify_url=sandbox.url, connectif_url=connectif.url)
        # Every contact one by one: a long stream of requests for the other loads to run beside.
        env["AIRFLOW_CONN_CONNECTIF_DEFAULT"] = env["AIRFLOW_CONN_CONNECTIF_DEFAULT"].replace(
            '"requests_per_minute"', '"bulk_threshold": 1000000000, "requests_per_minute"'
        )
        # Scheduler, API server, DAG processor, triggerer and three task processes share two cores: a task
        # can be descheduled for longer than the default 0.25 s between its slot and the wire, which a
        # one-second window turns into a 429. Busy workers widen the margin, as the docs say.
        for name in ("AIRFLOW_CONN_CONNECTIF_DEFAULT", "AIRFLOW_CONN_VOUCHERIFY_DEFAULT"):
            env[name] = env[name].replace(
                '"requests_per_minute"', '"rate_margin_seconds": 0.75, "requests_per_minute"'
            )
        env.update(airflow_env(tmp_path / "airflow"))
        env.update(
            {
                "AIRFLOW__API__HOST": "127.0.0.1",  # no login (all admins): never on 0.0.0.0
                "AIRFLOW__API__PORT": str(port),
                "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
                "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
                "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
                "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
            }
        )
        airflow(env, "db", "migrate")
        airflow(env, "pools", "set", "voucherify_default", "2", "Voucherify account")
        airflow(env, "pools", "set", "connectif_default", "3", "Connectif account")
        log = (tmp_path / "standalone.log").open("w")
        proc = subprocess.Popen(
            [sys.executable, "-m", "airflow", "standalone"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            yield sandbox, env, tmp_path, connectif
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)


def test_backfill_create_runs_the_intervals_and_shares_the_bucket(standalone, warehouse):
    sandbox, env, tmp_path, connectif = standalone

    def dag_parsed() -> bool:
        listed = airflow(env, "dags", "list", "-o", "plain", check=False)
        return "voucherify_sync" in listed and "connectif_sync" in listed

    wait_for(dag_parsed, timeout=240, every=3)
    airflow(env, "dags", "unpause", "voucherify_sync")
    airflow(env, "backfill", "create", "--dag-id", "voucherify_sync", "--from-date", FROM, "--to-date", TO)

    def backfill_runs() -> list[dict]:
        return [r for r in list_runs(env, "voucherify_sync") if r["run_id"].startswith("backfill")]

    def finished() -> bool:
        runs = backfill_runs()
        return len(runs) == 2 and all(r["state"] in ("success", "failed") for r in runs)

    wait_for(finished, timeout=600, every=5)
    runs = backfill_runs()
    assert [r["state"] for r in runs] == ["success", "success"], tmp_path / "standalone.log"
    # The tasks reached the execution API on 127.0.0.1, where the API server alone listens.
    port = int(env["AIRFLOW__API__PORT"])
    listening = {
        c.laddr.ip for c in psutil.net_connections("tcp") if c.status == "LISTEN" and c.laddr.port == port
    }
    assert listening == {"127.0.0.1"}, listening

    con = duckdb.connect(str(warehouse), read_only=True)
    changed = {
        str(k)
        for (k,) in con.execute(
            "SELECT DISTINCT customer_id FROM customers WHERE updated_at >= ?::TIMESTAMP AND updated_at < ?::TIMESTAMP "
            "AND deleted_at IS NULL",
            list(INTERVAL),
        ).fetchall()
    }
    sent = Counter(
        item["source_id"]
        for r in sandbox.requests
        if r["path"] == "/v1/customers/bulk/async" and r["status"] == 202
        for item in r["body"]
    )
    assert max(sent.values()) == 1
    assert set(sent) <= changed and len(sent) >= 0.9 * len(changed)  # the rest were quarantined
    assert sandbox.stats()["throttled_by_limiter"] == 0
    assert sandbox.max_in_window() <= LIMIT

    # Connectif: contacts, products and coupons load at once (pool of 3), each task its own process.
    airflow(env, "dags", "unpause", "connectif_sync")
    conf = {
        "window_start": "2026-10-01",
        "window_end": "2026-11-01",
        "entities": ["contacts", "products", "coupons"],
    }
    connectif.inject("slow", delay=0.1, count=100000, path_prefix="/products/")  # long enough to overlap
    airflow(env, "dags", "trigger", "connectif_sync", "--conf", json.dumps(conf))

    def manual_runs() -> list[dict]:  # unpausing also schedules the latest day, which has no sample data
        return [r for r in list_runs(env, "connectif_sync") if r["run_id"].startswith("manual")]

    wait_for(lambda: [r["state"] for r in manual_runs()] in (["success"], ["failed"]), timeout=600, every=5)
    assert [r["state"] for r in manual_runs()] == ["success"], tmp_path / "standalone.log"
    spans = {}
    for prefix in ("/contacts/", "/products/", "/imports/"):
        times = [r["t"] for r in connectif.requests if r["path"].startswith(prefix)]
        assert times, prefix
        spans[prefix] = (min(times), max(times))
    contacts = spans["/contacts/"]

    def overlaps(other: tuple[float, float]) -> bool:
        return max(contacts[0], other[0]) < min(contacts[1], other[1])

    # The other loads ran while contacts were being sent: several processes on one bucket...
    assert any(overlaps(spans[p]) for p in ("/products/", "/imports/")), spans
    # ...and together they never passed the account's limit.
    assert connectif.stats()["throttled_by_limiter"] == 0
    assert connectif.max_in_window() <= LIMIT
