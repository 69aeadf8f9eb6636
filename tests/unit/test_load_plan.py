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
