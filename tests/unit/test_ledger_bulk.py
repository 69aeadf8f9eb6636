"""The ledger's bulk writes (``reverse_etl.bulk``) leave the same rows and events on SQLite and PostgreSQL:
the statuses, attempts, hashes and one event per status change the row-by-row writes left."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from reverse_etl.ledger import (
    DELETE,
    DELETED,
    DELIVERED,
    FAILED,
    PENDING,
    REJECTED,
    UPSERT,
    Ledger,
    Outcome,
    Planned,
    record_history,
)

GONE = "gone from the source"
COLUMNS = (
    "operation",
    "status",
    "attempts",
    "payload_hash",
    "delivered_hash",
    "payload",
    "vendor_ref",
    "error",
    "first_run_id",
    "last_run_id",
)
EXPECTED_ROWS = {
    "a": (UPSERT, PENDING, 1, "ha2", "ha", '{"a":2}', None, None, "run-1", "run-2"),
    "b": (UPSERT, FAILED, 1, "hb", None, None, None, "refused", "run-1", "run-1"),
    "c": (UPSERT, PENDING, 1, "hc", None, "{}", None, None, "run-1", "run-1"),
    "d": (DELETE, DELETED, 1, None, None, None, None, GONE, "run-1", "run-1"),
    "e": (UPSERT, DELIVERED, 2, "he", "he", None, None, None, "run-1", "run-1"),
    "f": (UPSERT, DELIVERED, 1, None, None, None, "file-1", None, "run-1", "run-1"),
    "g": (UPSERT, DELIVERED, 0, "hg", "hg", None, None, None, "run-1", "run-1"),
    "j": (UPSERT, "in_flight", 0, "hj", None, "{}", "job-2", None, "run-1", "run-1"),
    "r": (UPSERT, REJECTED, 0, None, None, None, None, "bad email", "run-1", "run-1"),
}
EXPECTED_EVENTS = [  # (key, status, detail, run), in id order
    ("d", PENDING, GONE, "run-1"),
    ("r", REJECTED, "bad email", "run-1"),
    ("a", DELIVERED, None, "run-1"),
    ("b", FAILED, "refused", "run-1"),
    ("d", DELETED, GONE, "run-1"),
    ("e", DELIVERED, None, "run-1"),
    ("e", DELIVERED, None, "run-1"),  # the vendor answered e twice: two answers, two attempts
    ("f", DELIVERED, "file-1", "run-1"),
    ("g", DELIVERED, "reconciled: X holds it", "run-1"),
]


def _scenario(url: str) -> None:
    ledger = Ledger("v", "customers", "run-1", url=url)
    ledger.plan(
        [
            Planned("a", UPSERT, "ha", '{"a":1}'),
            Planned("b", UPSERT, "hb", '{"b":1}'),
            Planned("c", UPSERT, "hc", "{}"),
            Planned("d", DELETE, None, None, GONE),
            Planned("e", UPSERT, "he", "{}"),
            Planned("j", UPSERT, "hj", "{}"),
        ]
    )
    ledger.mark_rejected([("r", "bad email")])
    ledger.mark_in_flight(["a", "b", "missing"], "job-1")
    ledger.mark_in_flight(["j"], "job-2")
    ledger.apply(
        [
            Outcome("a", DELIVERED),
            Outcome("b", FAILED, "refused"),
            Outcome("c", PENDING),
            Outcome("d", DELETED, GONE),
            Outcome("e", DELIVERED),
            Outcome("e", DELIVERED),
        ]
    )
    ledger.mark_delivered([("f", "file-1")])
    ledger.mark_reconciled([("g", "hg")], "reconciled: X holds it")
    Ledger("v", "customers", "run-2", url=url).plan([Planned("a", UPSERT, "ha2", '{"a":2}')])
    Ledger("other", "customers", "run-1", url=url).plan([Planned("a", UPSERT, "x", "{}")])  # another sync


def _check(url: str) -> None:
    ledger = Ledger("v", "customers", "run-3", url=url)
    rows, events = {}, []
    for key in EXPECTED_ROWS:
        history = record_history("v", "customers", key, url=url)
        rows[key] = tuple(history["current"][c] for c in COLUMNS)
        assert isinstance(history["current"]["updated_at"], dt.datetime)
        events += [
            (e["id"], e["record_key"], e["status"], e["detail"], e["run_id"]) for e in history["events"]
        ]
        assert all(isinstance(e["at"], dt.datetime) for e in history["events"])
    assert rows == EXPECTED_ROWS
    assert [e[1:] for e in sorted(events)] == EXPECTED_EVENTS
    known = ledger.lookup(["a", "b", "g", "nope"])
    assert known == {
        "a": {"record_key": "a", "status": PENDING, "payload_hash": "ha2", "delivered_hash": "ha"},
        "b": {"record_key": "b", "status": FAILED, "payload_hash": "hb", "delivered_hash": None},
        "g": {"record_key": "g", "status": DELIVERED, "payload_hash": "hg", "delivered_hash": "hg"},
    }
    assert [p.key for page in ledger.iter_status(PENDING, 10) for p in page] == ["a", "c"]
    assert {ref: [p.key for p in batch] for ref, batch in ledger.in_flight().items()} == {"job-2": ["j"]}


def test_bulk_writes_on_sqlite(state_store):
    url = f"sqlite:///{state_store}"
    _scenario(url)
    _check(url)


def test_a_large_lookup_and_plan_on_sqlite(state_store):
    """More keys than one statement binds: every chunk is looked up; a key planned twice keeps the last."""
    ledger = Ledger("v", "customers", "run-1", url=f"sqlite:///{state_store}")
    keys = [f"k{i:05d}" for i in range(1234)]
    ledger.plan(
        [Planned(k, UPSERT, f"h-{k}", "{}") for k in keys] + [Planned("k00007", UPSERT, "last", "{}")]
    )
    known = ledger.lookup([*keys, "absent"])
    assert len(known) == 1234 and known["k01233"]["payload_hash"] == "h-k01233"
    assert known["k00007"]["payload_hash"] == "last"


def test_plan_keeps_any_payload_text_exactly_on_sqlite(state_store):
    """The plan reaches SQLite as one JSON array (``bulk.upsert(one_step=True)``): quotes, backslashes,
    escapes, non-ASCII, emoji and long text come back exactly as given."""
    url = f"sqlite:///{state_store}"
    texts = {
        "q": '{"name":"O\'Brien \\"the\\" one","path":"C:\\\\x"}',
        "u": '{"city":"Kraków","emoji":"🎉","jp":"日本","sep":"\u2028"}',
        "ctl": '{"note":"a\\nb\\tc\\u0000d"}',
        "long": '{"x":"' + "y" * 100_000 + '"}',
    }
    Ledger("v", "customers", "run-1", url=url).plan(
        [Planned(k, UPSERT, f"h-{k}", text) for k, text in texts.items()]
    )
    for key, text in texts.items():
        current = record_history("v", "customers", key, url=url)["current"]
        assert (current["payload"], current["payload_hash"], current["status"]) == (text, f"h-{key}", PENDING)


def test_a_plan_longer_than_one_statement_is_written_in_parts_in_order(state_store, monkeypatch):
    """Past ``_ONE_STEP_CHARS`` of JSON the plan goes in several statements, in order: every row written,
    a key planned twice keeps its last plan."""
    from reverse_etl import bulk

    monkeypatch.setattr(bulk, "_ONE_STEP_CHARS", 300)
    seen = []
    real = bulk._json_parts
    monkeypatch.setattr(bulk, "_json_parts", lambda rows: [seen.append(p) or p for p in real(rows)])
    url = f"sqlite:///{state_store}"
    keys = [f"k{i:03d}" for i in range(40)]
    Ledger("v", "customers", "run-1", url=url).plan(
        [Planned(k, UPSERT, f"h-{k}", f'{{"k":"{k}"}}') for k in keys]
        + [Planned("k003", UPSERT, "last", "{}")]
    )
    assert len(seen) > 4 and all(len(p) <= 300 for p in seen)
    assert [row[0] for part in seen for row in json.loads(part)] == [*keys, "k003"]  # each row once, in order
    known = Ledger("v", "customers", "run-2", url=url).lookup(keys)
    assert sorted(known) == keys and known["k039"]["payload_hash"] == "h-k039"
    assert known["k003"]["payload_hash"] == "last"


@pytest.mark.postgres
def test_bulk_writes_on_postgresql(postgres_database, monkeypatch):
    from reverse_etl import ledger as ledger_module
    from reverse_etl.store import _ENGINES, init_store

    url = postgres_database.replace("postgresql://", "postgresql+psycopg2://", 1)
    init_store(url)
    try:
        _scenario(url)
        _check(url)
        # a key planned twice in one call keeps the last (PostgreSQL refuses one statement touching a row
        # twice); lookups of many keys go by the primary key once the statistics say the table is large
        monkeypatch.setattr(ledger_module, "ANALYZE_ROWS", 1000)
        ledger = Ledger("big", "customers", "run-1", url=url)
        keys = [f"k{i:05d}" for i in range(3000)]
        ledger.plan(
            [Planned(k, UPSERT, f"h-{k}", "{}") for k in keys] + [Planned("k00007", UPSERT, "last", "{}")]
        )
        known = ledger.lookup([*keys, "absent"])
        assert len(known) == 3000 and known["k00007"]["payload_hash"] == "last"
        ledger.apply([Outcome(k, DELIVERED) for k in keys])
        assert ledger.lookup(["k00002"])["k00002"]["delivered_hash"] == "h-k00002"
        engine = _ENGINES[url][0]
        with engine.connect() as conn:
            from sqlalchemy import text

            tuples = conn.execute(
                text("SELECT reltuples FROM pg_class WHERE relname = 'sync_ledger'")
            ).scalar()
            plan = "\n".join(
                r[0]
                for r in conn.execute(
                    text(
                        "EXPLAIN SELECT status FROM sync_ledger WHERE destination = 'big' "
                        "AND entity = 'customers' AND record_key = ANY(:keys)"
                    ),
                    {"keys": keys[:5]},
                )
            )
        assert tuples > 1000  # ANALYZE ran after the bulk writes
        assert "sync_ledger_pkey" in plan, plan[:300]
    finally:
        engine = _ENGINES.pop(url, (None,))[0]
        if engine is not None:
            engine.dispose()


def test_answers_with_many_distinct_errors_on_sqlite(state_store, monkeypatch):
    """An update's per-key values go as one statement per group of equal values while there are few
    groups, and row by row past ``_SQLITE_GROUPS``: both leave each record its own error and attempts."""
    from reverse_etl import bulk

    url = f"sqlite:///{state_store}"
    ledger = Ledger("v", "customers", "run-1", url=url)
    keys = [f"k{i:02d}" for i in range(30)]
    ledger.plan([Planned(k, UPSERT, f"h-{k}", "{}") for k in keys])
    statements = []
    real = bulk._sqlite_groups
    monkeypatch.setattr(bulk, "_sqlite_groups", lambda *a: statements.append(real(*a)) or statements[-1])
    few = [Outcome(k, FAILED, f"refused: rule {i % 3}") for i, k in enumerate(keys[:15])]
    many = [Outcome(k, FAILED, f"refused: {k}") for k in keys[15:]]
    ledger.apply([*few, Outcome("k00", FAILED, "refused again")])  # k00 answered twice: in order
    ledger.apply(many)
    assert [len(s) if s is not None else None for s in statements] == [4, None]  # 3 errors + k00's 2nd
    for i, key in enumerate(keys):
        current = record_history("v", "customers", key, url=url)["current"]
        expected = (
            "refused again" if key == "k00" else (f"refused: rule {i % 3}" if i < 15 else f"refused: {key}")
        )
        assert (current["status"], current["error"], current["attempts"]) == (
            FAILED,
            expected,
            2 if key == "k00" else 1,
        )
