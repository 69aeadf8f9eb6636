"""The erasure sweep: records we delivered that are gone from the source are deleted once, behind a limit."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any, ClassVar

import duckdb
import pytest
from airflow.sdk.exceptions import AirflowFailException

from reverse_etl.errors import VendorUnavailable
from reverse_etl.ledger import (
    DELETED,
    DELIVERED,
    FAILED,
    PENDING,
    UPSERT,
    Ledger,
    Outcome,
    Planned,
    record_history,
    run_reports,
)
from reverse_etl.operators.load import SyncLoadOperator
from sandbox.env import conn_json

DELIVERED_KEYS = [str(i) for i in range(100)]


class _Stats:
    def as_dict(self) -> dict:
        return {}


class FakeHook:
    def __init__(self, conn_id: str | None) -> None:
        self.stats = _Stats()


class FakeLoad(SyncLoadOperator):
    """A vendor that records every delete it is asked for."""

    destination = "v"
    entity = "customers"
    hook_class = FakeHook
    supports_delete = True
    batch_size = 4
    deleted: ClassVar[list[str]] = []
    broken: ClassVar[bool] = False

    def send_deletes(self, hook: Any, batch: list[Planned], context: Any) -> list[Outcome]:
        if FakeLoad.broken:
            raise VendorUnavailable("vendor down")
        FakeLoad.deleted += [p.key for p in batch]
        return [Outcome(p.key, DELETED) for p in batch]


@pytest.fixture
def source(tmp_path, monkeypatch, state_store):
    """A warehouse table ``people`` whose ids are the source's keys, a keys file, and a ledger that holds
    ``DELIVERED_KEYS`` as delivered (plus records that must never be swept)."""
    include = tmp_path / "include"
    (include / "sql" / "v").mkdir(parents=True)
    (include / "sql" / "v" / "customers.keys.sql").write_text(
        "SELECT CAST(id AS VARCHAR) AS _key FROM people"
    )
    path = tmp_path / "wh.duckdb"
    monkeypatch.setenv("RETL_INCLUDE_DIR", str(include))
    monkeypatch.setenv("AIRFLOW_CONN_RETL_WAREHOUSE", conn_json("duckdb", host=str(path)))
    monkeypatch.setenv("RETL_STAGING_URL", (tmp_path / "staging").as_uri())
    monkeypatch.setenv("RETL_CHUNK_ROWS", "7")  # many chunks at test size
    FakeLoad.deleted = []
    FakeLoad.broken = False

    def fill(keys: list[int]) -> None:
        con = duckdb.connect(str(path))
        con.execute("CREATE OR REPLACE TABLE people (id INTEGER)")
        if keys:
            con.execute("INSERT INTO people SELECT unnest(?::INTEGER[])", [keys])
        con.close()

    fill(list(range(2000)))  # more keys in the source than we ever delivered
    ledger = Ledger("v", "customers", "r0")
    ledger.plan([Planned(k, UPSERT, f"h{k}", "{}") for k in [*DELIVERED_KEYS, "901"]])
    ledger.apply([Outcome(k, DELIVERED) for k in DELIVERED_KEYS])
    ledger.apply([Outcome("901", FAILED, "bad email")])  # never delivered: nothing to delete
    ledger.mark_rejected([("950", "email is required")])  # never delivered either
    return fill


def run(run_id: str, **params) -> dict:
    op = FakeLoad(task_id="load", manifest={})
    context = {"params": params, "run_id": run_id, "dag": SimpleNamespace(dag_id="d"), "ti": None}
    return op.execute(context)


def gone(*ids: int) -> list[int]:
    """The source's ids once ``ids`` are hard-deleted."""
    return [i for i in range(2000) if i not in ids]


def test_deletes_what_the_source_lost_once_with_the_reason(source):
    source(gone(3, 50, 77, 901, 950))
    report = run("r1")
    assert sorted(FakeLoad.deleted) == ["3", "50", "77"]
    assert report["erased"] == report["deleted"] == 3
    assert report["erasures"]["delivered"] == 100 and report["erasures"]["source_keys"] == 1995
    history = record_history("v", "customers", "50")
    assert history["current"]["status"] == DELETED
    assert "gone from the source" in history["current"]["error"]
    assert [e["status"] for e in history["events"]] == [DELIVERED, PENDING, DELETED]
    assert "gone from the source" in history["events"][1]["detail"]
    assert record_history("v", "customers", "901")["current"]["status"] == FAILED
    with open(report["erasures"]["keys_path"].removeprefix("file://"), encoding="utf-8") as handle:
        assert sorted(json.loads(line)["key"] for line in handle) == ["3", "50", "77"]

    again = run("r2")
    assert sorted(FakeLoad.deleted) == ["3", "50", "77"]
    assert again["erased"] == again["deleted"] == 0 and again["erasures"]["delivered"] == 97


@pytest.mark.postgres
def test_same_detection_with_the_ledger_on_postgresql(source, postgres_database, monkeypatch):
    from reverse_etl.store import init_store

    monkeypatch.setenv(
        "AIRFLOW_CONN_RETL_STATE", postgres_database.replace("postgresql://", "postgres://", 1)
    )
    init_store(postgres_database.replace("postgresql://", "postgresql+psycopg2://", 1))
    ledger = Ledger("v", "customers", "r0")
    ledger.plan([Planned(k, UPSERT, f"h{k}", "{}") for k in DELIVERED_KEYS])
    ledger.apply([Outcome(k, DELIVERED) for k in DELIVERED_KEYS])
    source(gone(3, 50, 77))
    report = run("r1")
    assert sorted(FakeLoad.deleted) == ["3", "50", "77"] and report["erased"] == 3
    assert "gone from the source" in record_history("v", "customers", "77")["current"]["error"]
    assert run("r2")["deleted"] == 0 and sorted(FakeLoad.deleted) == ["3", "50", "77"]


def test_refuses_above_the_share_and_deletes_nothing(source):
    source(gone(*range(10, 20)))
    with pytest.raises(AirflowFailException) as refused:
        run("r1")
    message = str(refused.value)
    assert "10 of 100 delivered records (10.0%)" in message and "5.0%" in message
    assert "max_erasure_share" in message and "10, 11, 12" in message
    assert FakeLoad.deleted == []
    ledger = Ledger("v", "customers", "check")
    assert ledger.count_status(PENDING) == 0 and ledger.lookup(["10"])["10"]["status"] == DELIVERED
    stored = run_reports("d", "r1")[-1]
    assert stored["status"] == "failed" and "max_erasure_share" in stored["report"]["error"]

    # A person raises the limit for one run: the deliberate erasure goes through.
    assert run("r2", max_erasure_share=0.1)["erased"] == 10
    assert sorted(FakeLoad.deleted, key=int) == [str(i) for i in range(10, 20)]


def test_an_empty_source_never_empties_the_vendor(source):
    source([])
    with pytest.raises(AirflowFailException, match=r"returned no keys at all.*100 records as delivered"):
        run("r1", max_erasure_share=0.99)
    assert FakeLoad.deleted == []
    assert Ledger("v", "customers", "check").count_status(PENDING) == 0


def test_dry_run_counts_and_writes_nothing(source):
    source(gone(*range(10, 20)))
    events = len(record_history("v", "customers", "10")["events"])
    report = run("r1", dry_run=True)
    assert report["erased"] == 10 and FakeLoad.deleted == []
    assert "10 of 100" in report["erasures"]["refused"]  # what a live run would refuse, said up front
    assert Ledger("v", "customers", "check").count_status(PENDING) == 0
    assert len(record_history("v", "customers", "10")["events"]) == events


def test_switched_off_or_without_deletes_nothing_happens(source, monkeypatch):
    source(gone(3))
    assert "erasures" not in run("r1", detect_erasures=False) and FakeLoad.deleted == []
    monkeypatch.setattr(FakeLoad, "supports_delete", False)
    assert run("r2")["erased"] == 0 and FakeLoad.deleted == []


def test_a_run_that_died_mid_delete_is_finished_by_the_next_once(source):
    source(gone(3, 50))
    FakeLoad.broken = True
    with pytest.raises(VendorUnavailable):
        run("r1")
    assert Ledger("v", "customers", "check").count_status(PENDING) == 2
    FakeLoad.broken = False
    report = run("r2")
    assert sorted(FakeLoad.deleted) == ["3", "50"]
    assert report["carried_over"] == 2 and report["erased"] == 0
    assert "gone from the source" in record_history("v", "customers", "3")["current"]["error"]


def test_only_records_at_rest_at_the_vendor_are_candidates(state_store):
    """Delivered (even if later refused or rejected) counts; in motion (pending, in flight) or never
    delivered does not."""
    ledger = Ledger("v", "customers", "r0")
    ledger.plan([Planned(k, UPSERT, f"h{k}", "{}") for k in "abcdefg"])
    ledger.apply([Outcome(k, DELIVERED) for k in "abcdef"])
    ledger.apply([Outcome("g", FAILED, "never delivered")])
    later = Ledger("v", "customers", "r1")
    later.plan([Planned("b", UPSERT, "h2", "{}")])  # pending resend
    later.mark_in_flight(["c"], "job-1")
    later.apply([Outcome("d", FAILED, "refused the update")])  # the first version is still there
    later.mark_rejected([("e", "email is required")])  # likewise
    assert [k for page in later.iter_delivered_keys(2) for k in page] == ["a", "d", "e", "f"]
