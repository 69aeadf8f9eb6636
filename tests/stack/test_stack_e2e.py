"""`make stack` end to end: Airflow on the CeleryExecutor with two workers, PostgreSQL for the metadata and
the state store, Redis for Celery and the rate buckets, staging on an S3 server, every sandbox at the vendors'
real limit of 100 requests per minute.

All five DAGs run at once, with a two-day backfill of voucherify_sync; in the middle of a Voucherify load its
Celery worker is killed with SIGKILL. Then: the killed load was retried on the other worker, tasks ran on both
workers, staged files were read by a worker other than the one that wrote them, every record was taken
exactly once at its vendor, and no account got more than its limit in any 60 seconds.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections import Counter
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import urlsplit

import pytest
import requests
import sqlalchemy

from sandbox.env import REPO

sys.path.insert(0, str(REPO / "scripts"))
from stack_api import Stack, wait_for

from tests.conftest import POSTGRES_DSN, REDIS_URL
from tests.e2e.test_fault_matrix import HTTP, SPLIO, Destination

pytestmark = [
    pytest.mark.stack,
    pytest.mark.postgres,
    pytest.mark.serial,
]  # a lease of 20 s, clock-checked pacing
LIMIT = 100  # requests per minute and account, as the stack's sandboxes enforce
DAY = {"window_start": "2026-10-31", "window_end": "2026-11-01"}
CONNECTIF_INITIAL = {
    "window_start": "2026-10-01",
    "window_end": "2026-11-01",
    "entities": ["contacts", "products"],
}
BACKFILL = ("2026-10-28", "2026-10-30")  # logical dates 10-28 and 10-29 03:00: two daily runs
DAGS = ("voucherify_sync", "connectif_sync", "salesfire_sync", "salesmanago_sync", "splio_referral_sync")
TIMEOUT = 20 * 60
# per sandbox, the deliveries a resend would duplicate (Connectif: purchases; its contacts are upserts)
DELIVERIES = {
    "voucherify": HTTP["voucherify"],
    "connectif": Destination(
        "connectif_sync",
        "connectif",
        "purchases",
        "POST",
        "/purchases/",
        lambda r: r["body"]["purchaseId"],
        True,
        (),
    ),
    "salesfire": HTTP["salesfire"],
    "datatalks": HTTP["salesmanago"],
}


def admin_url() -> str:
    return urlsplit(POSTGRES_DSN)._replace(path="/postgres").geturl()


def drop_databases(name: str) -> None:
    import psycopg2

    conn = psycopg2.connect(admin_url())
    conn.autocommit = True
    with conn.cursor() as cur:
        for db in (f"{name}_airflow", f"{name}_state"):
            cur.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
    conn.close()


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    from tests.e2e.test_live_backfill import free_port

    name = f"retl_stack_t{os.getpid()}"
    env = {
        **os.environ,
        "RETL_STACK_HOME": str(tmp_path_factory.mktemp("stack")),
        "RETL_STACK_NAME": name,
        "RETL_STACK_PORT": str(free_port()),
        "RETL_STACK_POSTGRES_URL": admin_url(),
        "RETL_STACK_REDIS_URL": REDIS_URL,
        "RETL_STACK_CUSTOMERS": "1000",
        "RETL_LEASE_SECONDS": "20",  # the killed load's claim on its sync expires soon after
        # Connectif's initial load (a month of contacts) as CSV imports, polled every 2 s instead of 30 s
        "RETL_STACK_VENDOR_EXTRA": json.dumps({"bulk_threshold": 100, "import_poll_seconds": 2}),
    }
    drop_databases(name)
    try:
        yield Stack.start(env)
    finally:
        Stack.stop(env)
        drop_databases(name)


def start_everything(stack: Stack) -> None:
    """Unpause the five DAGs (each schedules its latest day, which has no sample data), trigger one day of
    each (Connectif: contacts and products since October first), and backfill two days of Voucherify."""
    stack.unpause_and_wait_parsed(DAGS)
    stack.trigger("connectif_sync", CONNECTIF_INITIAL)
    for dag_id in DAGS:
        stack.trigger(dag_id, DAY)
    stack.api(
        "POST",
        "backfills",
        json={
            "dag_id": "voucherify_sync",
            "from_date": f"{BACKFILL[0]}T00:00:00Z",
            "to_date": f"{BACKFILL[1]}T00:00:00Z",
            "max_active_runs": 1,
            "reprocess_behavior": "none",
            "run_backwards": False,
            "dag_run_conf": {},
        },
    )


def kill_a_loading_worker(stack: Stack) -> dict:
    """SIGKILL the worker of a Voucherify orders load once it has sent some orders; return that task and
    when it was killed. Until the kill, the sandbox answers each order half a second late: a day's 60-odd
    orders otherwise go in 3 s, and the load could finish between the check and the kill."""
    faults = f"{stack.state['sandboxes']['voucherify']}/_sandbox/faults"
    slow = {"kind": "slow", "method": "POST", "path_prefix": "/v1/orders", "delay": 0.5, "count": 100_000}
    requests.post(faults, json=slow, timeout=60).raise_for_status()

    def loading() -> dict | None:
        running = [
            ti
            for ti in stack.task_instances("voucherify_sync", state="running", task_id="orders.load")
            if ti.get("hostname") and not ti["dag_run_id"].startswith("scheduled")  # that day has no data
        ]
        if not running:
            return None
        since = datetime.fromisoformat(running[0]["start_date"]).timestamp()
        sent = [
            r
            for r in stack.sandbox("voucherify", "requests")
            if r["path"] == "/v1/orders" and r["t"] >= since
        ]
        return running[0] if len(sent) >= 10 else None

    victim = wait_for(loading, "a Voucherify orders load to be sending", TIMEOUT, every=1)
    stack.kill_worker(victim["hostname"].removeprefix("worker-"))
    killed_at = time.time()
    requests.delete(faults, timeout=60).raise_for_status()
    return {**victim, "killed_at": killed_at}


def ledger(stack: Stack, destination: str, entity: str) -> dict[str, str]:
    engine = sqlalchemy.create_engine(
        stack.state["env"]["AIRFLOW_CONN_RETL_STATE"].replace("postgres://", "postgresql+psycopg2://", 1)
    )
    try:
        with engine.connect() as con:
            rows = con.execute(
                sqlalchemy.text(
                    "SELECT record_key, status FROM sync_ledger WHERE destination = :d AND entity = :e"
                ),
                {"d": destination, "e": entity},
            ).fetchall()
    finally:
        engine.dispose()
    return dict(rows)


def max_in_any_minute(times: list[float]) -> int:
    times, best, low = sorted(times), 0, 0
    for high, t in enumerate(times):
        while t - times[low] >= 60:
            low += 1
        best = max(best, high - low + 1)
    return best


def test_five_dags_and_a_backfill_on_two_celery_workers_with_one_killed(stack):
    start_everything(stack)
    victim = kill_a_loading_worker(stack)
    runs = wait_for(lambda: stack.finished_runs(DAGS), "every run to finish", TIMEOUT, every=5)
    assert {run["state"] for run in runs} == {"success"}, [
        (r["dag_id"], r["dag_run_id"], r["state"]) for r in runs
    ]
    assert len([r for r in runs if r["run_type"] == "backfill"]) == 2

    # The killed load came back as a retry on the other worker and finished there.
    tries = stack.tries(victim)
    assert tries[0]["hostname"] == victim["hostname"] and tries[-1]["state"] == "success"
    assert tries[-1]["hostname"] not in (None, victim["hostname"])

    # Tasks ran on both workers, and some sync's extract (which stages its rows on S3) ran on one worker
    # while its validate or load (which read them) ran on the other.
    tis = [ti for run in runs for ti in stack.task_instances(run["dag_id"], run["dag_run_id"])]
    assert {ti["hostname"] for ti in tis} >= {"worker-1", "worker-2"}
    where = {(ti["dag_run_id"], ti["task_id"]): ti["hostname"] for ti in tis}
    crossed = [
        (run_id, task_id)
        for (run_id, task_id), host in where.items()
        if task_id.endswith(".extract")
        and {where.get((run_id, task_id.replace(".extract", s))) for s in (".validate", ".load")}
        - {host, None}
    ]
    assert crossed, "no staged file was read on another worker"

    # Both workers imported GX, pandas, DuckDB and the engine before forking (reverse_etl.celery_config).
    for worker in ("worker-1", "worker-2"):
        log = (Path(stack.state["airflow_home"]) / f"stack-{worker}.log").read_text()
        assert "reverse_etl: preloaded Great Expectations" in log, worker
    assert stack.state["env"]["RETL_STAGING_URL"].startswith("s3://")

    # Exactly once at each vendor, counted by the vendor's key: every record the ledger holds as delivered
    # was taken once (Voucherify: held once; the kill may resend what was on the wire, an upsert there).
    for sandbox, dest in DELIVERIES.items():
        log = stack.sandbox(sandbox, "requests")
        taken = dest.delivered(SimpleNamespace(requests=log))
        delivered = {
            k for k, status in ledger(stack, dest.ledger, dest.entity).items() if status == "delivered"
        }
        doubled = {k for k, n in taken.items() if n > 1}
        if sandbox == "voucherify":
            # Voucherify upserts orders on source_id: the orders whose POST was on the wire when the worker
            # died (answered, not yet recorded) go again on the retry, and only those.
            for key in doubled:
                sent_at = sorted(
                    r["t"] for r in dest.deliveries(SimpleNamespace(requests=log)) if dest.key(r) == key
                )
                assert len(sent_at) == 2 and sent_at[0] <= victim["killed_at"] < sent_at[1], (key, sent_at)
            assert len(doubled) <= 5, doubled
            assert delivered <= set(stack.sandbox("voucherify", "store")["orders"])
        else:
            assert not doubled, (sandbox, sorted(doubled)[:5])
        assert taken, sandbox
        assert len(taken) == len(delivered), sandbox
        if dest.ledger_keys:
            assert set(taken) == delivered, sandbox
        # The vendor's limit held in every 60 seconds, and the pipeline never ran into it.
        if sandbox != "salesfire":  # Salesfire documents no limit
            assert max_in_any_minute([r["t"] for r in log]) <= LIMIT, sandbox
            assert stack.sandbox(sandbox, "stats")["throttled_by_limiter"] == 0, sandbox
    assert stack.sandbox("connectif", "stats")["purchase_duplicates"] == 0
    rows = Counter()
    sftp_root = Path(stack.state["airflow_home"]) / "retl" / "splio-sftp"
    for path in sftp_root.rglob("*.csv*"):
        if path.is_file() and not path.name.startswith("."):
            rows.update(line.split(b";", 1)[0].decode() for line in path.read_bytes().splitlines()[1:])
    delivered = {k for k, s in ledger(stack, SPLIO.ledger, SPLIO.entity).items() if s == "delivered"}
    assert rows and max(rows.values()) == 1 and set(rows) == delivered
