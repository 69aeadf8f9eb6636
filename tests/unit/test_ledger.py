from reverse_etl.ledger import (
    DELETE,
    DELETED,
    DELIVERED,
    FAILED,
    IN_FLIGHT,
    PENDING,
    UPSERT,
    Ledger,
    Outcome,
    Planned,
    record_history,
)


def test_plan_deliver_resume_and_history(state_store):
    ledger = Ledger("vendor", "customers", "run-1")
    ledger.plan([Planned(str(i), UPSERT, f"h{i}", f'{{"id": {i}}}') for i in range(5)])
    pages = list(ledger.iter_status(PENDING, 2))
    assert [len(p) for p in pages] == [2, 2, 1]
    assert [p.key for page in pages for p in page] == ["0", "1", "2", "3", "4"]

    ledger.mark_in_flight(["0", "1"], "job-1")
    assert {k: [p.key for p in v] for k, v in ledger.in_flight().items()} == {"job-1": ["0", "1"]}
    ledger.apply([Outcome("0", DELIVERED), Outcome("1", FAILED, "bad email")])
    assert ledger.in_flight() == {}
    known = ledger.lookup(["0", "1", "2", "9"])
    assert known["0"]["status"] == DELIVERED and known["0"]["delivered_hash"] == "h0"
    assert known["1"]["status"] == FAILED
    assert known["2"]["status"] == PENDING and "9" not in known

    # A later run deletes record 0, which we delivered.
    later = Ledger("vendor", "customers", "run-2")
    later.plan([Planned("0", DELETE, None, None)])
    later.apply([Outcome("0", DELETED)])
    history = record_history("vendor", "customers", "0")
    assert history["current"]["status"] == DELETED
    assert [e["status"] for e in history["events"]] == [DELIVERED, DELETED]
    assert record_history("vendor", "customers", "1")["events"][0]["detail"] == "bad email"


def test_scopes_are_separate(state_store):
    Ledger("a", "customers", "r").plan([Planned("1", UPSERT, "h", "{}")])
    assert Ledger("b", "customers", "r").lookup(["1"]) == {}
    assert IN_FLIGHT not in Ledger("a", "customers", "r").lookup(["1"])["1"]["status"]


def test_rejected_records_are_kept_with_reason(state_store):
    ledger = Ledger("vendor", "customers", "run-1")
    ledger.mark_rejected([("7", 'email must be a valid address when given on email: "x@"')])
    history = record_history("vendor", "customers", "7")
    assert history["current"]["status"] == "rejected"
    assert "valid address" in history["current"]["error"]


def test_one_load_per_sync_at_a_time(state_store):
    import time

    import pytest

    from reverse_etl.errors import SyncError

    daily, backfill = Ledger("v", "orders", "daily"), Ledger("v", "orders", "backfill")
    daily.acquire_lease("dag/daily/orders.load", ttl=1.5, wait=0)
    daily.acquire_lease("dag/daily/orders.load", ttl=1.5, wait=0)  # its own retry takes it back at once
    with pytest.raises(SyncError, match=r"being loaded by dag/daily/orders\.load"):
        backfill.acquire_lease("dag/backfill/orders.load", ttl=1.5, wait=0.3)
    Ledger("v", "customers", "backfill").acquire_lease("dag/backfill/customers.load", ttl=1.5, wait=0)
    daily.release_lease()
    backfill.acquire_lease("dag/backfill/orders.load", ttl=1.0, wait=0)
    # A crashed holder never releases: its lease expires.
    time.sleep(1.1)
    daily.acquire_lease("dag/daily/orders.load", ttl=1.0, wait=0)


def test_a_long_wait_inside_a_load_keeps_its_lease_alive(state_store, monkeypatch):
    """A 429 storm or a vendor job can outlast the lease's ttl: every wait's tick renews the holder's lease,
    so another run cannot take the sync over while this one still sends."""
    import pytest

    from reverse_etl.errors import SyncError
    from reverse_etl.progress import Wait

    monkeypatch.setenv("RETL_PROGRESS_LOG_SECONDS", "0.2")
    daily, backfill = Ledger("v", "orders", "daily"), Ledger("v", "orders", "backfill")
    daily.acquire_lease("dag/daily/orders.load", ttl=1.0, wait=0)
    Wait("Voucherify to stop throttling").sleep(1.6)  # longer than the ttl
    with pytest.raises(SyncError, match=r"being loaded by dag/daily/orders\.load"):
        backfill.acquire_lease("dag/backfill/orders.load", ttl=1.0, wait=0)
    daily.release_lease()
    backfill.acquire_lease("dag/backfill/orders.load", ttl=1.0, wait=0)
    backfill.release_lease()


def test_two_tries_of_one_task_never_share_its_lease(state_store):
    """A retry that starts while the earlier try still runs (Airflow gave up on it; it did not stop) waits
    for that try's lease; once it has the lease, the earlier try stops before its next request."""
    import time
    from types import SimpleNamespace

    import pytest

    from reverse_etl.errors import LeaseLost, SyncError
    from reverse_etl.leases import holder_of

    def context(try_number):
        return {
            "dag": SimpleNamespace(dag_id="d"),
            "run_id": "r",
            "ti": SimpleNamespace(try_number=try_number),
        }

    first, retry = holder_of(context(1), "orders.load"), holder_of(context(2), "orders.load")
    assert (first, retry) == ("d/r/orders.load (try 1)", "d/r/orders.load (try 2)")
    zombie, again = Ledger("v", "orders", "r"), Ledger("v", "orders", "r")
    zombie.acquire_lease(first, ttl=0.6, wait=0)
    with pytest.raises(SyncError, match=r"being loaded by d/r/orders\.load \(try 1\)"):
        again.acquire_lease(retry, ttl=60, wait=0)
    time.sleep(0.7)  # the first try froze past its lease
    again.acquire_lease(retry, ttl=60, wait=0)
    with pytest.raises(LeaseLost, match=r"\(try 2\) took it"):
        zombie.renew_lease()
    again.release_lease()
