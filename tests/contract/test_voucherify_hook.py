"""The Voucherify hook and load adapter against the sandbox, over real HTTP: auth, pacing, 429s,
transient faults, async jobs with per-item errors, and batch splitting."""

from __future__ import annotations

import json
import time

import pytest

from reverse_etl.errors import ConfigError, VendorAuthError, VendorUnavailable
from reverse_etl.hooks.voucherify import VoucherifyHook
from reverse_etl.ledger import DELIVERED, FAILED, UPSERT, Ledger, Planned
from reverse_etl.operators.voucherify import VoucherifyCustomersOperator
from sandbox.env import SANDBOX_APP_ID, SANDBOX_APP_TOKEN, conn_json
from sandbox.voucherify import VoucherifySandbox

pytestmark = pytest.mark.serial  # clock-checked pacing: run alone (make test's second call)

CONN = "voucherify_contract"


@pytest.fixture
def sandbox():
    with VoucherifySandbox(port=0, limit=1000, window_seconds=1, async_delay=0.01) as sb:
        yield sb


@pytest.fixture
def connect(monkeypatch, state_store, sandbox):
    """Point the connection at the sandbox with the given extras; return a fresh hook."""

    def make(url: str | None = None, token: str = SANDBOX_APP_TOKEN, **extra) -> VoucherifyHook:
        extra = {
            "requests_per_minute": 60_000,
            "rate_window_seconds": 1,
            "backoff_base_seconds": 0.05,
            "async_poll_seconds": 0.02,
            **extra,
        }
        monkeypatch.setenv(
            f"AIRFLOW_CONN_{CONN.upper()}",
            conn_json("http", host=url or sandbox.url, login=SANDBOX_APP_ID, password=token, extra=extra),
        )
        return VoucherifyHook(CONN)

    return make


def customer(i: int, **fields) -> dict:
    return {"source_id": f"c{i}", "name": f"Customer {i}", "email": f"c{i}@example.com", **fields}


def sent(op, hook, ledger, batch: list) -> dict:
    """The load's own send, then each job it started collected: record key -> outcome."""
    outcomes, started = op._send(hook, ledger, batch, {"params": {}})
    for ref, records in started:
        outcomes += op.collect(hook, ref, records)
    return {o.key: o for o in outcomes}


def test_wrong_token_is_an_auth_error_naming_the_connection(connect):
    hook = connect(token="wrong")
    with pytest.raises(VendorAuthError, match=CONN):
        hook.upsert_order({"source_id": "o1", "status": "PAID", "amount": 100})


def test_missing_connection_says_how_to_define_it(state_store):
    with pytest.raises(ConfigError, match="AIRFLOW_CONN_NOPE"):
        VoucherifyHook("nope").get_conn()


def test_unreachable_vendor_fails_with_url_after_bounded_retries(connect):
    hook = connect(url="http://127.0.0.1:9", max_transient_retries=2, timeout_seconds=1)
    with pytest.raises(VendorUnavailable, match=r"127\.0\.0\.1:9.*failed 3 times"):
        hook.upsert_order({"source_id": "o1", "status": "PAID", "amount": 100})


def test_transient_faults_are_retried_then_succeed(connect, sandbox):
    sandbox.inject("status", status=503, count=2)
    sandbox.inject("drop", count=1)
    hook = connect()
    hook.upsert_order({"source_id": "o1", "status": "PAID", "amount": 100})
    assert hook.stats.transient_errors == 3
    assert "o1" in sandbox.store["orders"]


def test_429_waits_do_not_use_the_failure_budget(connect, sandbox):
    sandbox.inject("throttle", count=3, retry_after=1)
    hook = connect(max_transient_retries=0)
    started = time.monotonic()
    hook.upsert_order({"source_id": "o1", "status": "PAID", "amount": 100})
    assert hook.stats.throttled == 3 and hook.stats.transient_errors == 0
    assert time.monotonic() - started >= 3.0  # Retry-After honoured each time
    assert "o1" in sandbox.store["orders"]


def test_vendor_headers_pause_an_over_generous_client_before_any_429(connect, sandbox):
    sandbox.reset(limit=5, window_seconds=1)
    hook = connect()  # our bucket allows 1000/s: only X-Rate-Limit-Remaining/Retry hold us back
    for i in range(12):
        hook.upsert_order({"source_id": f"o{i}", "status": "PAID", "amount": 100})
    assert sandbox.stats()["throttled_by_limiter"] == 0
    assert hook.stats.throttle_wait_seconds > 0
    assert len(sandbox.store["orders"]) == 12


def test_pacing_keeps_the_vendor_under_its_limit(connect, sandbox):
    sandbox.reset(limit=5, window_seconds=1)
    hook = connect(requests_per_minute=300, rate_window_seconds=1)  # 5 per second, as the vendor
    started = time.monotonic()
    for i in range(15):
        hook.upsert_order({"source_id": f"o{i}", "status": "PAID", "amount": 100})
    assert sandbox.stats()["throttled_by_limiter"] == 0
    assert sandbox.max_in_window() <= 5
    assert time.monotonic() - started >= 2.0


def test_async_job_reports_per_item_errors(connect, sandbox, state_store):
    sandbox.inject(item_errors=["c2"])
    hook = connect()
    op = VoucherifyCustomersOperator(task_id="load", manifest=None)
    batch = [Planned(f"c{i}", UPSERT, "h", json.dumps(customer(i))) for i in range(4)]
    ledger = Ledger("voucherify", "customers", "run")
    ledger.plan(batch)
    outcomes = sent(op, hook, ledger, batch)
    assert outcomes["c2"].status == FAILED and "invalid" in outcomes["c2"].error.lower()
    assert {k for k, o in outcomes.items() if o.status == DELIVERED} == {"c0", "c1", "c3"}


def test_batch_refused_whole_is_split_until_the_bad_record_is_isolated(connect, sandbox, state_store):
    sandbox.configure(bulk_validation="request")
    hook = connect()
    op = VoucherifyCustomersOperator(task_id="load", manifest=None)
    records = [customer(i) for i in range(8)]
    records[5]["address"] = "not an object"
    batch = [Planned(r["source_id"], UPSERT, "h", json.dumps(r)) for r in records]
    ledger = Ledger("voucherify", "customers", "run")
    ledger.plan(batch)
    outcomes = sent(op, hook, ledger, batch)
    assert outcomes["c5"].status == FAILED and "address" in outcomes["c5"].error
    assert all(o.status == DELIVERED for k, o in outcomes.items() if k != "c5")
    assert set(sandbox.store["customers"]) == {f"c{i}" for i in range(8)} - {"c5"}
