"""Long waits show in the task log (RETL_PROGRESS_LOG_SECONDS): a load waiting for another run's lease, a
request waiting for the account's rate budget, a reader waiting for the DuckDB lock. Real parts: two
Ledgers on one SQLite store, the SQLite bucket, a second process holding the DuckDB file."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import pytest

from reverse_etl.errors import ConfigError, SyncError
from reverse_etl.ledger import Ledger
from reverse_etl.ratelimit import AccountLimiter, RateSpec

pytestmark = pytest.mark.serial  # clock-checked pacing: run alone (make test's second call)

INTERVAL = 0.2  # PROGRESS_INTERVAL of tests/conftest.py


def at_most_one_per_interval(lines: list[str], seconds: float) -> bool:
    return len(lines) <= seconds / INTERVAL + 1


def test_a_load_waiting_for_the_lease_says_who_holds_it_until_it_gets_it(state_store, progress_log):
    daily, backfill = Ledger("v", "orders", "daily"), Ledger("v", "orders", "backfill")
    daily.acquire_lease("dag/daily/orders.load", ttl=2, wait=0)
    release = threading.Timer(1.0, daily.release_lease)
    started = time.monotonic()
    release.start()
    try:
        backfill.acquire_lease("dag/backfill/orders.load", ttl=2, wait=60)
    finally:
        release.join()
    waited = time.monotonic() - started

    lines = progress_log("waiting for the lease on v.orders: ")
    assert lines, "a wait longer than the interval must be reported"
    assert at_most_one_per_interval(lines, waited)  # one line per interval, not one per look
    assert all(" s of 60 s, held by dag/daily/orders.load until " in line for line in lines), lines
    assert all(line.endswith(" UTC") for line in lines)
    done = progress_log("done waiting for the lease on v.orders after ")
    assert len(done) == 1 and done[0].endswith("dag/backfill/orders.load holds it")


def test_a_load_that_gives_up_on_the_lease_reported_its_wait(state_store, progress_log):
    Ledger("v", "orders", "daily").acquire_lease("dag/daily/orders.load", ttl=60, wait=0)
    with pytest.raises(SyncError, match=r"being loaded by dag/daily/orders\.load"):
        Ledger("v", "orders", "backfill").acquire_lease("dag/backfill/orders.load", ttl=2, wait=0.7)
    lines = progress_log("waiting for the lease on v.orders: ")
    assert lines and all("s of 0.7 s, held by dag/daily/orders.load" in line for line in lines)


def test_a_wait_longer_than_the_lease_keeps_it_when_logging_is_rarer(state_store, progress_log, monkeypatch):
    """A load pausing for its rate budget (37 s in a CI run) with a 20-s lease and 30-s progress lines: the
    lease must be renewed during the pause, or another run's load takes it and sends the same records."""
    from reverse_etl.progress import Wait

    monkeypatch.setenv("RETL_PROGRESS_LOG_SECONDS", "30")
    holder, other = Ledger("v", "orders", "backfill"), Ledger("v", "orders", "daily")
    holder.acquire_lease("dag/backfill/orders.load", ttl=1.5, wait=0)
    took = []

    def take() -> None:  # tries without waiting: a Wait here would beat the holder's heartbeat (one process)
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            try:
                other.acquire_lease("dag/daily/orders.load", ttl=1.5, wait=0)
                took.append("daily")
                other.release_lease()
                return
            except SyncError:
                time.sleep(0.1)
        took.append("refused")

    contender = threading.Thread(target=take)
    contender.start()
    try:
        Wait("v account budget to reset", 4, detail="pausing").sleep(4)
    finally:
        contender.join()
        holder.release_lease()
    assert took == ["refused"]


def test_a_load_that_stalled_past_its_lease_stops_before_its_next_request(state_store, tmp_path):
    """A holder frozen longer than its ttl (a stopped VM) finds its lease taken on its next request's slot
    and stops with ``LeaseLost``, instead of sending records the other load now owns."""
    from reverse_etl.errors import LeaseLost
    from reverse_etl.progress import Wait

    holder, other = Ledger("v", "orders", "backfill"), Ledger("v", "orders", "daily")
    holder.acquire_lease("dag/backfill/orders.load", ttl=0.6, wait=0)
    time.sleep(0.7)  # the stall: no beat, the lease lapses
    other.acquire_lease("dag/daily/orders.load", ttl=60, wait=0)
    limiter = AccountLimiter("stalled", RateSpec(100, 1.0), url=f"sqlite:///{tmp_path / 'b.sqlite'}")
    with pytest.raises(
        LeaseLost,
        match=r"dag/backfill/orders\.load lost its lease on v\.orders: .* and "
        r"dag/daily/orders\.load took it\. This load stops before sending more",
    ):
        limiter.acquire()
    # It is dropped from the heartbeats: the other load's waits go on, the lease stays the other's.
    Wait("v account budget to reset", 0.1).sleep(0.1)
    other.renew_lease()
    with pytest.raises(SyncError, match=r"being loaded by dag/daily/orders\.load"):
        holder.acquire_lease("dag/backfill/orders.load", ttl=0.6, wait=0)
    other.release_lease()


def test_a_short_wait_logs_nothing_extra(state_store, progress_log, monkeypatch):
    monkeypatch.setenv("RETL_PROGRESS_LOG_SECONDS", "30")
    Ledger("v", "orders", "daily").acquire_lease("dag/daily/orders.load", ttl=60, wait=0)
    with pytest.raises(SyncError):
        Ledger("v", "orders", "backfill").acquire_lease("dag/backfill/orders.load", ttl=2, wait=0.5)
    limiter = AccountLimiter("short", RateSpec(1, 0.5), url=f"sqlite:///{state_store.parent / 'b.sqlite'}")
    limiter.acquire()
    assert limiter.acquire() > 0.4  # it did wait, for less than an interval
    assert progress_log("waiting for ") == [] and progress_log("done waiting") == []


def test_a_request_waiting_for_the_rate_budget_names_the_account(tmp_path, progress_log):
    limiter = AccountLimiter("voucherify_main", RateSpec(1, 1.0), url=f"sqlite:///{tmp_path / 'b.sqlite'}")
    limiter.acquire()
    waited = limiter.acquire()  # the window (1 s plus its margin) must pass first
    assert waited >= 1.0
    lines = progress_log("waiting for a request slot of the rate budget 'voucherify_main': ")
    assert lines and at_most_one_per_interval(lines, waited)
    assert all(
        line.endswith("1 requests per 1 s, shared by every task, run and worker using this account")
        for line in lines
    ), lines


HOLD_DUCKDB = """
import sys, duckdb
con = duckdb.connect(sys.argv[1])
print("locked", flush=True)
sys.stdin.read()
"""


def test_a_reader_waiting_for_the_duckdb_lock_names_the_holder(tmp_path, progress_log, monkeypatch):
    import duckdb

    from reverse_etl.warehouse import WarehouseHook
    from sandbox.env import conn_json

    path = tmp_path / "w.duckdb"
    duckdb.connect(str(path)).close()
    monkeypatch.setenv("AIRFLOW_CONN_RETL_WAREHOUSE", conn_json("duckdb", host=str(path)))
    monkeypatch.setenv("RETL_DUCKDB_LOCK_WAIT_SECONDS", "0.8")
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_DUCKDB, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(ConfigError, match="Cannot open the DuckDB warehouse"):
            WarehouseHook()._duckdb_connect(read_only=True)
    finally:
        holder.communicate("")
    lines = progress_log(f"waiting for the DuckDB lock on '{path}': ")
    assert lines and all(f"s of 0.8 s, held by process {holder.pid}" in line for line in lines), lines


def test_a_malformed_interval_is_a_config_error_naming_the_variable(monkeypatch):
    from reverse_etl.progress import Wait

    monkeypatch.setenv("RETL_PROGRESS_LOG_SECONDS", "soon")
    with pytest.raises(ConfigError, match="RETL_PROGRESS_LOG_SECONDS='soon'"):
        Wait("anything")
