"""The plan of a load: chunk N+1 is looked up while chunk N's plan is still being written, and a key that
both chunks hold is decided as one chunk at a time decided it (the later row is planned, with its payload)."""

from __future__ import annotations

import time

import pyarrow as pa
import pyarrow.parquet as pq

from reverse_etl.ledger import DELIVERED, PENDING, Ledger, Outcome, Planned
from reverse_etl.operators.load import SyncLoadOperator
from reverse_etl.payload import row_to_payload, serialise


class PlanOnly(SyncLoadOperator):
    destination, entity = "v", "customers"


def _plan(url: str, path, monkeypatch) -> dict:
    real_plan = Ledger.plan

    def slow_plan(self, planned):  # the write of chunk N still running when chunk N+1 is looked up
        time.sleep(0.3)
        real_plan(self, planned)

    monkeypatch.setattr(Ledger, "plan", slow_plan)
    op = PlanOnly(task_id="load", manifest={})
    op._dry_run_held = set()
    counts = dict.fromkeys(
        ("unchanged_skipped", "to_send", "to_delete", "deletes_skipped", "previously_failed"), 0
    )
    ledger = Ledger("v", "customers", "run-2", url=url)
    op._plan(ledger, {"valid_path": str(path)}, counts, {"params": {}}, dry_run=False, full_resync=False)
    return counts


def test_a_key_in_two_chunks_is_planned_with_its_last_row(state_store, tmp_path, monkeypatch):
    url = f"sqlite:///{state_store}"
    rows = [
        {"_key": "a", "name": "first"},
        {"_key": "b", "name": "b"},
        {"_key": "a", "name": "second"},  # the next chunk (2 rows a chunk): what the source says last
        {"_key": "c", "name": "c"},
    ]
    second = serialise(row_to_payload(rows[2]))
    # "a" was delivered as its second row: alone, that row would be skipped as unchanged
    ledger = Ledger("v", "customers", "run-1", url=url)
    ledger.plan([Planned("a", "upsert", second[1], second[0])])
    ledger.apply([Outcome("a", DELIVERED)])
    path = tmp_path / "valid.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
    monkeypatch.setenv("RETL_CHUNK_ROWS", "2")

    counts = _plan(url, path, monkeypatch)

    assert counts["to_send"] == 4 and counts["unchanged_skipped"] == 0
    pending = {p.key: p for page in ledger.iter_status(PENDING, 10) for p in page}
    assert pending["a"].payload == second[0] and pending["a"].payload_hash == second[1]
    assert sorted(pending) == ["a", "b", "c"]


def test_a_load_logs_its_first_failures_then_says_where_the_rest_are(state_store):
    """Twenty refused records are logged one by one; past that, one line says where every message is."""
    import logging

    from reverse_etl.ledger import FAILED
    from reverse_etl.operators import load

    class Refuses(SyncLoadOperator):
        destination, entity = "v", "customers"
        batch_size = 7

        def send_upserts(self, hook, batch, context):
            return [Outcome(p.key, FAILED, f"refused {p.key}") for p in batch]

    ledger = Ledger("v", "customers", "run-1", url=f"sqlite:///{state_store}")
    ledger.plan([Planned(f"k{i:02d}", "upsert", f"h{i}", "{}") for i in range(50)])
    op = Refuses(task_id="load", manifest={})
    seen: list[logging.LogRecord] = []
    catch = logging.Handler()
    catch.emit = seen.append
    load.log.addHandler(catch)
    try:
        counts = {"to_send": 50, "to_delete": 0, "sent": 0, "deleted": 0, "failed": 0}
        hook = type("Hook", (), {"stats": type("Stats", (), {"requests": 0, "throttled": 0})()})()
        op._deliver(hook, ledger, counts, {"params": {}})
    finally:
        load.log.removeHandler(catch)
    lines = [r.getMessage() for r in seen if r.levelno == logging.WARNING]
    assert counts["failed"] == 50 and ledger.count_status(FAILED) == 50
    assert lines[: load.FAILURES_LOGGED] == [
        f"v.customers record k{i:02d} failed: refused k{i:02d}" for i in range(load.FAILURES_LOGGED)
    ]
    assert len(lines) == load.FAILURES_LOGGED + 1
    assert "more than 20 records failed" in lines[-1] and "reverse_etl.cli failed v customers" in lines[-1]
