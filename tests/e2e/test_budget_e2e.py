"""The rate budget per account and minute after real loads (voucherify_sync through Airflow against the
sandbox): the minutes the HTTP transport wrote add up to the requests and 429s of the load reports, a
failed load's included (its ``finally`` writes them), and the page's query reads them back."""

from __future__ import annotations

import json

import pytest
import sqlalchemy

from reverse_etl.ui.queries import budget

pytestmark = [pytest.mark.e2e, pytest.mark.serial]  # clock-checked pacing: run alone

ACCOUNT = "voucherify_voucherify_default"  # the vendor and the connection id: no rate_limit_account set


def _totals(url: str) -> tuple[dict, dict]:
    """Requests and 429s of every load report, and of every minute row per account (plain SQL)."""
    engine = sqlalchemy.create_engine(url)
    with engine.connect() as conn:
        reports = [json.loads(r) for (r,) in conn.execute(sqlalchemy.text("SELECT report FROM sync_runs"))]
        minutes = conn.execute(
            sqlalchemy.text(
                "SELECT account, sum(requests), sum(throttled), min(limit_per_minute), "
                "max(limit_per_minute) FROM sync_request_minutes GROUP BY account"
            )
        ).all()
    engine.dispose()
    from_reports = {
        "requests": sum(r.get("requests", 0) for r in reports),
        "throttled": sum(r.get("throttled", 0) for r in reports),
        "failed_loads": [r["entity"] for r in reports if r["status"] == "failed"],
    }
    return from_reports, {a: (req, thr, lo, hi) for a, req, thr, lo, hi in minutes}


def test_the_minutes_of_a_failed_and_a_throttled_load_add_up_to_their_reports(harness):
    check_minutes_add_up(harness)


@pytest.mark.postgres
def test_same_with_a_postgresql_state_store(harness, warehouse, postgres_database):
    from sandbox.warehouse import load_postgres

    load_postgres(warehouse, postgres_database)
    harness.use_postgres(postgres_database)
    check_minutes_add_up(harness)


def check_minutes_add_up(harness) -> None:
    # Run 1: Voucherify answers the customers' bulk upserts 503 more often than the hook retries: that
    # load fails (after its requests were counted); products and orders go through.
    harness.sandbox.inject("status", count=6, status=503, path_prefix="/v1/customers/bulk")
    first = harness.run(expect_success=False)
    assert first["state"] == "failed"
    reports, minutes = _totals(harness.state_url)
    assert reports["failed_loads"] == ["customers"]
    assert set(minutes) == {ACCOUNT}
    assert minutes[ACCOUNT][:2] == (reports["requests"], reports["throttled"]) and reports["requests"] > 6

    # Run 2: the customers go out under a storm of 429s; the minutes still add up, 429s included.
    harness.sandbox.clear_faults()
    harness.sandbox.inject("throttle", count=4, retry_after=1, path_prefix="/v1/customers/bulk")
    second = harness.run()
    assert second["reports"]["customers"]["throttled"] == 4
    reports, minutes = _totals(harness.state_url)
    requests, throttled, lowest, highest = minutes[ACCOUNT]
    assert (requests, throttled) == (reports["requests"], reports["throttled"]) and throttled == 4
    assert lowest == highest == 3000  # the harness's 50 requests per second, per minute

    # What the page shows: the same totals (every minute fits in the default 360), and a peak under the limit.
    [account] = budget(harness.state_url, 360)
    assert (account["account"], account["limit_per_minute"]) == (ACCOUNT, 3000)
    assert (account["requests"], account["throttled"]) == (requests, throttled)
    assert sum(m["throttled"] for m in account["minutes"]) == 4 and account["throttled_minutes"]
    assert 0 < account["share"] <= 1 and account["over_limit_minutes"] == 0
