"""The rate budget per account and minute (reverse_etl.budget): counted in memory by the hook, added to
``sync_request_minutes`` by additive upserts that concurrent processes share without losing counts, and
read back by the Reverse ETL page's query."""

from __future__ import annotations

import datetime as dt
import logging
import multiprocessing

import pytest
import sqlalchemy

from reverse_etl.budget import RequestMinutes, add_request_minutes, utc_minute
from reverse_etl.store import init_store
from reverse_etl.ui.queries import budget

pytestmark = pytest.mark.serial  # clock-checked pacing: run alone (make test's second call)

ACCOUNT = "voucherify_voucherify_default"
T0 = dt.datetime(2026, 11, 1, 10, 0)


def minutes_of(url: str, account: str = ACCOUNT) -> dict[dt.datetime, tuple[int, int, int | None]]:
    engine = sqlalchemy.create_engine(url)
    with engine.connect() as conn:
        rows = conn.execute(
            sqlalchemy.text(
                "SELECT minute, requests, throttled, limit_per_minute FROM sync_request_minutes "
                "WHERE account = :a ORDER BY minute"
            ),
            {"a": account},
        ).all()
    engine.dispose()
    return {_as_datetime(m): (r, t, limit) for m, r, t, limit in rows}


def _as_datetime(value) -> dt.datetime:
    return value if isinstance(value, dt.datetime) else dt.datetime.fromisoformat(value)


def test_counts_stay_in_memory_until_the_minute_ends_then_add_up(state_store):
    url = f"sqlite:///{state_store}"
    counter = RequestMinutes(ACCOUNT, 100, url=url)
    for second in range(0, 60, 2):  # 30 requests in 10:00, three of them answered 429
        counter.count(throttled=second in (10, 12, 40), now=T0 + dt.timedelta(seconds=second))
    assert minutes_of(url) == {}  # nothing written per request
    counter.count(now=T0 + dt.timedelta(minutes=1, seconds=5))  # 10:01 begins: 10:00 is written
    assert minutes_of(url) == {T0: (30, 3, 100)}
    assert counter.pending == {T0 + dt.timedelta(minutes=1): (1, 0)}
    assert counter.flush(last=True)
    other = RequestMinutes(ACCOUNT, 120, url=url)  # another task on the same account, same minute
    other.count(throttled=True, now=T0 + dt.timedelta(minutes=1, seconds=30))
    other.flush(last=True)
    assert minutes_of(url) == {T0: (30, 3, 100), T0 + dt.timedelta(minutes=1): (2, 1, 120)}


def test_minutes_are_utc():
    paris = dt.timezone(dt.timedelta(hours=1))
    assert utc_minute(dt.datetime(2026, 11, 1, 11, 0, 59, 999, tzinfo=paris)) == T0


def test_a_failed_write_keeps_the_counts_and_the_last_one_says_what_was_lost(tmp_path, state_store, caplog):
    missing = f"sqlite:///{tmp_path / 'moved-away.db'}"
    counter = RequestMinutes(ACCOUNT, 100, url=missing)
    counter.count(now=T0)
    counter.count(throttled=True, now=T0 + dt.timedelta(seconds=1))
    with caplog.at_level(logging.WARNING, logger="reverse_etl.budget"):
        counter.count(now=T0 + dt.timedelta(minutes=1))  # the write of 10:00 fails: kept, not raised
        assert counter.pending == {T0: (2, 1), T0 + dt.timedelta(minutes=1): (1, 0)}
        assert "kept for the next write" in caplog.text and "does not exist" in caplog.text
        counter.url = f"sqlite:///{state_store}"  # the store is back: both minutes go in the next write
        assert counter.flush()
        assert minutes_of(counter.url) == {T0: (2, 1, 100), T0 + dt.timedelta(minutes=1): (1, 0, 100)}
        counter.url = missing
        counter.count(now=T0 + dt.timedelta(minutes=2))
        assert not counter.flush(last=True)
    assert f"'{ACCOUNT}': 1 requests (0 429s) of 2026-11-01 10:02 to 10:02 UTC not recorded" in caplog.text
    assert counter.pending == {}


ROUNDS = 150
M0, M1 = T0, T0 + dt.timedelta(minutes=1)


def _hammer(url: str, start, failures) -> None:
    """One worker: every round adds to 10:00 and 10:01 of one account, flushing at each minute change (two
    upserts per round, on the same two rows as the other worker)."""
    counter = RequestMinutes(ACCOUNT, 100, url=url)
    start.wait(30)
    for i in range(ROUNDS):
        counter.count(now=M0)
        counter.count(throttled=i % 5 == 0, now=M0 + dt.timedelta(seconds=30))
        counter.count(now=M1)  # 10:00 is written
        counter.count(now=M1 + dt.timedelta(seconds=59))
        counter.count(now=M0)  # 10:01 is written (a late request of 10:00 starts a new count)
        counter.count(throttled=True, now=M0)
    if not counter.flush(last=True):
        failures.value += 1


def _concurrently(url: str, workers: int = 2) -> None:
    context = multiprocessing.get_context("spawn")  # fresh processes: no engine shared with this one
    start, failures = context.Event(), context.Value("i", 0)
    procs = [context.Process(target=_hammer, args=(url, start, failures)) for _ in range(workers)]
    for proc in procs:
        proc.start()
    start.set()
    for proc in procs:
        proc.join(180)
        assert proc.exitcode == 0
    assert failures.value == 0
    throttled_m0 = sum(1 for i in range(ROUNDS) if i % 5 == 0) + ROUNDS
    assert minutes_of(url) == {
        M0: (workers * ROUNDS * 4, workers * throttled_m0, 100),
        M1: (workers * ROUNDS * 2, 0, 100),
    }


def test_two_processes_adding_to_the_same_minutes_lose_no_count_sqlite(tmp_path):
    url = f"sqlite:///{tmp_path / 'state.db'}"
    init_store(url)
    _concurrently(url)


@pytest.mark.postgres
def test_two_processes_adding_to_the_same_minutes_lose_no_count_postgresql(postgres_database):
    url = postgres_database.replace("postgresql://", "postgresql+psycopg2://", 1)
    init_store(url)
    _concurrently(url)


def _fill(url: str) -> None:
    minute = T0.replace
    add_request_minutes(  # a day earlier, with the old limit
        url, ACCOUNT, 100, [(minute(hour=9) - dt.timedelta(days=1), 100, 0)]
    )
    add_request_minutes(
        url,
        ACCOUNT,
        100,
        [(minute(minute=m), r, t) for m, r, t in ((0, 50, 0), (1, 100, 0), (2, 98, 2), (3, 30, 0))],
    )
    add_request_minutes(url, ACCOUNT, 120, [(minute(minute=9), 10, 1)])  # the limit was raised since
    add_request_minutes(url, "connectif_connectif_default", 60, [(minute(minute=5), 70, 0)])


def test_the_page_gets_each_accounts_limit_latest_minutes_peak_share_and_429s(state_store):
    url = f"sqlite:///{state_store}"
    _fill(url)
    connectif, voucherify = budget(url, 4)
    assert voucherify["account"] == ACCOUNT and voucherify["limit_per_minute"] == 120
    assert [(m["minute"], m["requests"], m["throttled"]) for m in voucherify["minutes"]] == [
        ("2026-11-01T10:01", 100, 0),
        ("2026-11-01T10:02", 98, 2),
        ("2026-11-01T10:03", 30, 0),
        ("2026-11-01T10:09", 10, 1),
    ]  # the latest 4 minutes with traffic, oldest first: 10:00 and the day before are left out
    assert voucherify["peak"] == {
        "minute": "2026-11-01T10:01",
        "requests": 100,
        "throttled": 0,
        "limit_per_minute": 100,  # the limit in force then
    }
    assert voucherify["share"] == 1.0 and voucherify["over_limit_minutes"] == 0
    assert voucherify["throttled_minutes"] == ["2026-11-01T10:02", "2026-11-01T10:09"]
    assert (voucherify["requests"], voucherify["throttled"]) == (238, 3)
    assert (voucherify["first_minute"], voucherify["last_minute"]) == ("2026-11-01T10:01", "2026-11-01T10:09")
    assert connectif["share"] == 1.167 and connectif["over_limit_minutes"] == 1
    assert connectif["throttled_minutes"] == []
    assert len(budget(url, 100)[1]["minutes"]) == 6


def test_no_traffic_no_accounts(state_store):
    assert budget(f"sqlite:///{state_store}", 360) == []


def test_the_hook_counts_every_request_and_429_as_its_report_does(state_store, monkeypatch):
    """A real VoucherifyHook against the sandbox over HTTP: 429s and a 503 retried, then a flush."""
    from reverse_etl.hooks.voucherify import VoucherifyHook
    from sandbox.env import SANDBOX_APP_ID, SANDBOX_APP_TOKEN, conn_json
    from sandbox.voucherify import VoucherifySandbox

    extra = {"requests_per_minute": 6000, "backoff_base_seconds": 0.05, "rate_limit_account": "shared"}
    with VoucherifySandbox(port=0, limit=1000, window_seconds=1, async_delay=0.01) as sandbox:
        monkeypatch.setenv(
            "AIRFLOW_CONN_VOUCHERIFY_BUDGET",
            conn_json(
                "http", host=sandbox.url, login=SANDBOX_APP_ID, password=SANDBOX_APP_TOKEN, extra=extra
            ),
        )
        sandbox.inject("throttle", count=2, retry_after=0)
        sandbox.inject("status", count=1, status=503)
        hook = VoucherifyHook("voucherify_budget")
        for i in range(3):
            hook.upsert_order({"source_id": f"o{i}", "status": "PAID", "amount": 100})
        hook.flush_request_minutes()
    assert (hook.stats.requests, hook.stats.throttled, hook.stats.transient_errors) == (6, 2, 1)
    rows = minutes_of(f"sqlite:///{state_store}", "voucherify_shared")
    assert sum(r for r, _, _ in rows.values()) == 6 and sum(t for _, t, _ in rows.values()) == 2
    assert {limit for _, _, limit in rows.values()} == {6000}
