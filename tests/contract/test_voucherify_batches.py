"""Voucherify bulk batches and async jobs through the real hook and load engine against the sandbox:
batches cut by the 10 MB body cap on the bytes sent, several jobs in flight polled together with a
growing interval, and a killed load that resumes every job it left. Counts come from the sandbox's log."""

from __future__ import annotations

import itertools
import json
from types import SimpleNamespace

import pytest

from reverse_etl.batching import Batcher, JsonArraySize
from reverse_etl.errors import VendorRejected
from reverse_etl.hooks.voucherify import VoucherifyHook, compact_json
from reverse_etl.ledger import DELIVERED, UPSERT, Ledger, Planned
from reverse_etl.operators.voucherify import MAX_BODY_BYTES, VoucherifyCustomersOperator
from reverse_etl.payload import canonical_json
from sandbox.env import SANDBOX_APP_ID, SANDBOX_APP_TOKEN, conn_json
from sandbox.voucherify import BULK_MAX_BYTES, VoucherifySandbox

CONN = "voucherify_batches"
BULK = "/v1/customers/bulk/async"


@pytest.fixture
def sandbox():
    with VoucherifySandbox(port=0, limit=1000, window_seconds=1, async_delay=0.01) as sb:
        yield sb


@pytest.fixture
def connect(monkeypatch, state_store, sandbox):
    """Point the connection at the sandbox with these extras; return a fresh hook."""

    def make(**extra) -> VoucherifyHook:
        extra = {"requests_per_minute": 60_000, "rate_window_seconds": 1, "async_poll_seconds": 0.02, **extra}
        monkeypatch.setenv(
            f"AIRFLOW_CONN_{CONN.upper()}",
            conn_json(
                "http", host=sandbox.url, login=SANDBOX_APP_ID, password=SANDBOX_APP_TOKEN, extra=extra
            ),
        )
        return VoucherifyHook(CONN)

    return make


def customer(i: int, pad: int = 0) -> dict:
    body = {"source_id": f"c{i:05d}", "name": f"Łucja Żak {i}", "email": f"c{i}@example.com"}
    if pad:
        body["metadata"] = {"note": "x" * pad}
    return body


def planned(customers: list[dict]) -> list[Planned]:
    return [Planned(c["source_id"], UPSERT, f"h{c['source_id']}", canonical_json(c)) for c in customers]


def deliver(op, hook, records: list[Planned], run_id: str = "r1") -> dict:
    """Plan ``records`` in the ledger and run the load's delivery (the engine's own path)."""
    ledger = Ledger("voucherify", "customers", run_id)
    ledger.plan(records)
    counts = {"to_send": len(records), "to_delete": 0, "sent": 0, "deleted": 0, "failed": 0}
    op._deliver(hook, ledger, counts, {"params": {}})
    return counts


def requests_of(sandbox, method: str, path: str) -> list[dict]:
    return [r for r in sandbox.requests if r["method"] == method and r["path"] == path]


def body_of(size: int) -> bytes:
    """A valid bulk body of exactly ``size`` bytes: one customer padded in its metadata."""
    bare = len(compact_json([customer(0, pad=1)])) - 1
    return compact_json([customer(0, pad=size - bare)])


def test_the_documented_cap_is_accepted_to_the_byte_and_one_byte_over_is_413(connect, sandbox):
    hook = connect()
    assert len(body_of(BULK_MAX_BYTES)) == BULK_MAX_BYTES == 10_485_760  # the 413 example's figure
    hook.wait_async_action(hook.bulk_upsert("customers", body_of(BULK_MAX_BYTES)))
    with pytest.raises(VendorRejected) as refused:
        hook.bulk_upsert("customers", body_of(BULK_MAX_BYTES + 1))
    assert refused.value.status == 413
    assert [r["bytes"] for r in requests_of(sandbox, "POST", BULK)] == [BULK_MAX_BYTES, BULK_MAX_BYTES + 1]


def test_batches_fill_10_mb_of_compact_utf8_json_and_the_sandbox_takes_them(connect, sandbox):
    hook = connect()
    op = VoucherifyCustomersOperator(task_id="load", manifest=None)
    records = planned([customer(i, pad=990_000) for i in range(11)])  # ~0.99 MB each: 10 fit, 1 more
    counts = deliver(op, hook, records)
    posts = requests_of(sandbox, "POST", BULK)
    assert [r["status"] for r in posts] == [202, 202]
    sizes = [r["bytes"] for r in posts]
    assert sizes[0] <= MAX_BODY_BYTES < sizes[0] + sizes[1]  # cut only when the next record would not fit
    # The bytes measured are the bytes sent: the records' canonical JSON, not requests' spaced ASCII.
    assert sizes == [
        len(b"[" + b",".join(r.payload.encode() for r in part) + b"]")
        for part in (records[:10], records[10:])
    ]
    assert counts["sent"] == 11 and sandbox.stats()["store_counts"]["customers"] == 11


def test_a_cap_above_the_vendors_costs_a_split_not_a_failure(connect, sandbox):
    hook = connect()
    op = VoucherifyCustomersOperator(task_id="load", manifest=None)
    op.max_batch_bytes = 3 * BULK_MAX_BYTES  # misjudged: Voucherify answers 413
    counts = deliver(op, hook, planned([customer(i, pad=1_400_000) for i in range(12)]))
    assert [r["status"] for r in requests_of(sandbox, "POST", BULK)] == [413, 202, 202]
    assert counts["sent"] == 12 and counts["failed"] == 0


def expected_batches(records: list[Planned], cap: int) -> int:
    batcher = Batcher(None, cap, JsonArraySize)
    return sum(1 for r in records if batcher.add(r)) + len(list(batcher.rest()))


def test_posts_and_polls_for_n_records_several_jobs_in_flight_one_listing(connect, sandbox, state_store):
    hook = connect(async_poll_seconds=1.0, max_jobs_in_flight=50)  # every job done by the first poll
    op = VoucherifyCustomersOperator(task_id="load", manifest=None)
    op.max_batch_bytes = 1_200  # small batches so 200 customers make many jobs
    records = planned([customer(i) for i in range(200)])
    jobs = expected_batches(records, op.max_batch_bytes)
    assert jobs > 10
    counts = deliver(op, hook, records)
    assert len(requests_of(sandbox, "POST", BULK)) == jobs
    assert len(requests_of(sandbox, "GET", "/v1/async-actions")) == 1  # one listing for every job
    reads = [r for r in sandbox.requests if r["path"].startswith("/v1/async-actions/")]
    assert len(reads) == jobs  # then each job's result, once
    assert counts["sent"] == 200
    # Every request, polls included, went through the hook's bucket.
    assert hook.stats.requests == len(sandbox.requests) == 2 * jobs + 1


def test_no_more_jobs_wait_at_the_vendor_than_allowed_each_recorded_before_the_next(
    connect, sandbox, state_store, monkeypatch
):
    hook = connect(max_jobs_in_flight=3)
    op = VoucherifyCustomersOperator(task_id="load", manifest=None)
    op.max_batch_bytes = 500
    records = planned([customer(i) for i in range(60)])
    ledger = Ledger("voucherify", "customers", "r1")
    seen: list[int] = []
    post = hook.bulk_upsert

    def watched(resource, body):
        jobs = ledger.in_flight()  # each job waiting is in the ledger under its own id, with its records
        seen.append(len(jobs))
        assert all(ref.startswith("aa_") and records for ref, records in jobs.items())
        return post(resource, body)

    monkeypatch.setattr(hook, "bulk_upsert", watched)
    counts = deliver(op, hook, records)
    assert len(seen) == expected_batches(records, 500) > 6
    assert max(seen) == 2  # a third job starts only with two waiting: three in flight at most
    assert counts["sent"] == 60 and ledger.in_flight() == {}


def test_polls_back_off_while_a_job_runs(connect, sandbox, state_store):
    sandbox.configure(async_delay=1.6)
    hook = connect(async_poll_seconds=0.05, async_poll_max_seconds=0.4)
    op = VoucherifyCustomersOperator(task_id="load", manifest=None)
    deliver(op, hook, planned([customer(i) for i in range(3)]))
    polls = [r["t"] for r in sandbox.requests if r["path"].startswith("/v1/async-actions")]
    gaps = [b - a for a, b in itertools.pairwise(polls)]
    assert 4 <= len(polls) <= 9  # at a steady 0.05 s it would be about 32
    assert all(later >= earlier - 0.05 for earlier, later in itertools.pairwise(gaps)), gaps
    assert max(gaps) < 0.6


class Killed(BaseException):
    """The task's process dies: nothing catches it, nothing after it runs."""


def test_a_load_killed_with_jobs_in_flight_resumes_every_one_and_sends_nothing_twice(
    connect, sandbox, state_store, monkeypatch
):
    connect(max_jobs_in_flight=10)
    monkeypatch.setattr(VoucherifyCustomersOperator, "max_batch_bytes", 300)  # 3 to 4 customers a job
    sandbox.configure(async_delay=3600.0)  # the first job holds the vendor's queue: nothing finishes
    records = planned([customer(i) for i in range(50)])
    Ledger("voucherify", "customers", "r0").plan(records)

    def context(run_id: str) -> dict:
        params = {"detect_erasures": False}  # no warehouse here: the delta is what the ledger holds
        return {"params": params, "run_id": run_id, "dag": SimpleNamespace(dag_id="d"), "ti": None}

    def dies(self, action_ids):
        raise Killed

    with monkeypatch.context() as killed:
        killed.setattr(VoucherifyHook, "poll_async_actions", dies)
        with pytest.raises(Killed):
            VoucherifyCustomersOperator(task_id="load", manifest={}, vendor_conn_id=CONN).execute(
                context("r1")
            )
    posted = [item["source_id"] for r in requests_of(sandbox, "POST", BULK) for item in r["body"]]
    left = Ledger("voucherify", "customers", "r1").in_flight()
    assert (
        len(left) == 10
        and len(posted) < 50
        and sorted(k.key for keys in left.values() for k in keys) == sorted(posted)
    )

    sandbox.configure(async_delay=0.0)
    ledger = Ledger("voucherify", "customers", "r2")
    report = VoucherifyCustomersOperator(task_id="load", manifest={}, vendor_conn_id=CONN).execute(
        context("r2")
    )
    assert report["resumed_jobs"] == 10 and report["sent"] == 50 and report["failed"] == 0
    all_posted = [item["source_id"] for r in requests_of(sandbox, "POST", BULK) for item in r["body"]]
    assert sorted(all_posted) == sorted(r.key for r in records)  # each record sent once, resumed or new
    statuses = {key: row["status"] for key, row in ledger.lookup([r.key for r in records]).items()}
    assert set(statuses.values()) == {DELIVERED}
    assert json.loads(json.dumps(report))  # the report stays JSON
