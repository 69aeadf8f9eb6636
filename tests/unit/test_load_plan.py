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


def _refuse_all(url: str, destination: str, entity: str, keys: list[str]) -> tuple[list[str], Ledger]:
    """Deliver ``keys`` to a vendor that refuses each, quoting an email: the load's warnings, the ledger."""
    import logging

    from reverse_etl.ledger import FAILED
    from reverse_etl.operators import load

    class Refuses(SyncLoadOperator):
        batch_size = 7

        def send_upserts(self, hook, batch, context):
            return [Outcome(p.key, FAILED, f"refused {p.key}: contact jane.doe@example.com") for p in batch]

    Refuses.destination, Refuses.entity = destination, entity
    ledger = Ledger(destination, entity, "run-1", url=url)
    ledger.plan([Planned(key, "upsert", f"h{key}", "{}") for key in keys])
    op = Refuses(task_id="load", manifest={})
    seen: list[logging.LogRecord] = []
    catch = logging.Handler()
    catch.emit = seen.append
    load.log.addHandler(catch)
    try:
        counts = {"to_send": len(keys), "to_delete": 0, "sent": 0, "deleted": 0, "failed": 0}
        hook = type("Hook", (), {"stats": type("Stats", (), {"requests": 0, "throttled": 0})()})()
        op._deliver(hook, ledger, counts, {"params": {}})
    finally:
        load.log.removeHandler(catch)
    assert counts["failed"] == len(keys) and ledger.count_status(FAILED) == len(keys)
    return [r.getMessage() for r in seen if r.levelno == logging.WARNING], ledger


def _error(ledger: Ledger, key: str) -> str:
    from reverse_etl.ledger import record_history

    return record_history(ledger.destination, ledger.entity, key, url=ledger.url)["current"]["error"]


def test_a_load_logs_its_first_failures_then_says_where_the_rest_are(state_store):
    """Twenty refused records are logged one by one, emails in the vendor's messages masked; past that,
    one line says where every message is (whole, in the ledger)."""
    from reverse_etl.operators import load

    keys = [f"k{i:02d}" for i in range(50)]
    lines, ledger = _refuse_all(f"sqlite:///{state_store}", "voucherify", "customers", keys)
    assert lines[: load.FAILURES_LOGGED] == [
        f"voucherify.customers record k{i:02d} failed: refused k{i:02d}: contact j***@example.com"
        for i in range(load.FAILURES_LOGGED)
    ]
    assert len(lines) == load.FAILURES_LOGGED + 1
    assert "more than 20 records failed" in lines[-1]
    assert "reverse_etl.cli failed voucherify customers" in lines[-1]
    assert _error(ledger, "k07") == "refused k07: contact jane.doe@example.com"


def test_a_refused_records_personal_key_is_masked_in_the_log(state_store):
    """Connectif's contacts are keyed by email (the suite's ``personal_fields`` holds ``_key``)."""
    lines, ledger = _refuse_all(f"sqlite:///{state_store}", "connectif", "contacts", ["ann@shop.example"])
    assert lines == [
        "connectif.contacts record a***@shop.example failed: refused a***@shop.example: contact j***@example.com"
    ]
    assert _error(ledger, "ann@shop.example").startswith("refused ann@shop.example: contact jane.doe@")
