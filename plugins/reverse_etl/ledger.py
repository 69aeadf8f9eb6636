"""The ledger: what happened to every record, in a state store reached through an Airflow connection.

``sync_ledger`` holds one row per (destination, entity, record key) with its current status;
``sync_events`` keeps every status change, so "what happened to customer 42?" has an answer;
``sync_runs`` keeps one report per load. The store is SQLite by default, PostgreSQL in production.

Statuses: ``pending`` (planned, to send; the payload is kept until sent so any later run can resend it),
``in_flight`` (handed to an async vendor job, ``vendor_ref`` names it), ``delivered``, ``failed`` (the vendor
refused it, with its message), ``rejected`` (failed the data-quality checks), ``deleted``.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from reverse_etl.leases import SyncLease
from reverse_etl.store import open_store, state_store_url, utc_now

PENDING, IN_FLIGHT, DELIVERED, FAILED, REJECTED, DELETED = (
    "pending",
    "in_flight",
    "delivered",
    "failed",
    "rejected",
    "deleted",
)
UPSERT, DELETE = "upsert", "delete"
log = logging.getLogger(__name__)
ANALYZE_ROWS, ANALYZE_MAX_ROWS = (
    10_000,
    1_000_000,
)  # rows written before PostgreSQL's statistics are refreshed


@dataclass
class Outcome:
    """What the vendor did with one record."""

    key: str
    status: str  # DELIVERED, FAILED, DELETED or PENDING (transient: try again later)
    error: str | None = None


@dataclass
class Planned:
    key: str
    operation: str
    payload_hash: str | None
    payload: str | None
    # Why the record is planned, when it is not the delta (e.g. an erasure: "gone from the source"); kept
    # in the row's ``error`` while pending and written with the vendor's answer, so a resumed run keeps it.
    reason: str | None = None


def _engine(url: str, *, check_deployment: bool = True):
    """The store's engine and tables; refuses a missing, empty, corrupt or foreign store (see ``store``)."""
    return open_store(url, check_deployment=check_deployment)


class Ledger:
    """Per-record state of one (destination, entity) sync."""

    def __init__(self, destination: str, entity: str, run_id: str, url: str | None = None):
        self.destination = destination
        self.entity = entity
        self.run_id = run_id
        self.url = url or state_store_url()
        self.engine, self.ledger, self.events, self.runs, leases = _engine(self.url)
        self.lease = SyncLease(self.engine, leases, destination, entity)
        self._since_analyze, self._analyze_at = 0, ANALYZE_ROWS

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def _scope(self):
        t = self.ledger
        return (t.c.destination == self.destination) & (t.c.entity == self.entity)

    def _upsert(
        self, conn, const: dict, columns: dict[str, list], update: list[str], *, one_step: bool = False
    ) -> int:
        from reverse_etl import bulk

        const = {"destination": self.destination, "entity": self.entity, **const}
        keys = ("destination", "entity", "record_key")
        return bulk.upsert(
            conn, self.dialect, self.ledger.name, keys, const, columns, update, one_step=one_step
        )

    def _update(self, conn, keys: list[str], const: dict, columns=None, expressions=()) -> int:
        from reverse_etl import bulk

        scope = (self.destination, self.entity)
        return bulk.update(conn, self.dialect, self.ledger.name, scope, keys, const, columns, expressions)

    def _log(self, conn, entries: Iterable[tuple[str, str, str | None]]) -> int:
        """One event per status change, in the order given."""
        from reverse_etl import bulk

        entries = list(entries)
        if not entries:
            return 0
        keys, statuses, details = (list(c) for c in zip(*entries, strict=True))
        const = {
            "destination": self.destination,
            "entity": self.entity,
            "run_id": self.run_id,
            "at": utc_now(),
        }
        columns = {"record_key": keys, "status": statuses, "detail": details}
        return bulk.insert(conn, self.dialect, self.events.name, const, columns)

    def _wrote(self, rows: int) -> None:
        """After a bulk write, refresh PostgreSQL's statistics whenever the rows written since the last
        refresh reach a threshold that doubles each time (10k, 20k, 40k...: about 8 ANALYZEs over a
        million-record load, each a sample of 30k rows). Without them PostgreSQL (autovacuum off, or not
        yet run) plans each 1,000-key lookup of a large ledger as a scan of every row. SQLite needs none:
        its lookups go by the primary key whatever it knows of the table."""
        if self.dialect != "postgresql":
            return
        self._since_analyze += rows
        if self._since_analyze < self._analyze_at:
            return
        from reverse_etl import bulk

        with self.engine.begin() as conn:
            bulk.analyze(conn, self.dialect, self.ledger.name)
        self._since_analyze = 0
        self._analyze_at = min(self._analyze_at * 2, ANALYZE_MAX_ROWS)

    # --- one load per sync at a time (``leases``) ------------------------------------------------------
    def acquire_lease(self, holder: str, ttl: float, wait: float) -> None:
        self.lease.acquire(holder, ttl, wait)

    def renew_lease(self) -> None:
        self.lease.renew()

    def release_lease(self) -> None:
        self.lease.release()

    def lookup(self, keys: list[str]) -> dict[str, dict]:
        """Current ledger rows for these keys (status, hashes), a few statements per chunk of keys."""
        from reverse_etl import bulk

        with self.engine.connect() as conn:
            return bulk.lookup(conn, self.dialect, self.ledger.name, (self.destination, self.entity), keys)

    def plan(self, planned: list[Planned]) -> None:
        """Mark records ``pending`` with their payload: from here on some run will deliver them. Written in one
        step (``bulk.upsert``): the load's plan calls this on a thread while it builds the next chunk."""
        if not planned:
            return
        const = {
            "status": PENDING,
            "vendor_ref": None,
            "attempts": 0,
            "first_run_id": self.run_id,
            "last_run_id": self.run_id,
            "updated_at": utc_now(),
        }
        columns = {
            "record_key": [p.key for p in planned],
            "operation": [p.operation for p in planned],
            "payload_hash": [p.payload_hash for p in planned],
            "payload": [p.payload for p in planned],
            "error": [p.reason for p in planned],
        }
        update = [
            "operation",
            "status",
            "payload_hash",
            "payload",
            "error",
            "vendor_ref",
            "last_run_id",
            "updated_at",
        ]
        with self.engine.begin() as conn:
            written = self._upsert(conn, const, columns, update, one_step=True)
            self._log(conn, ((p.key, PENDING, p.reason) for p in planned if p.reason))
        self._wrote(written)

    def mark_rejected(self, rejected: list[tuple[str, str]]) -> None:
        """Record rows that failed the data-quality checks, with the readable reason."""
        if not rejected:
            return
        const = {
            "operation": UPSERT,
            "status": REJECTED,
            "payload": None,
            "attempts": 0,
            "first_run_id": self.run_id,
            "last_run_id": self.run_id,
            "updated_at": utc_now(),
        }
        columns = {"record_key": [k for k, _ in rejected], "error": [e for _, e in rejected]}
        with self.engine.begin() as conn:
            written = self._upsert(
                conn, const, columns, ["status", "payload", "error", "last_run_id", "updated_at"]
            )
            self._log(conn, ((key, REJECTED, error) for key, error in rejected))
        self._wrote(written)

    def mark_delivered(self, delivered: list[tuple[str, str | None]]) -> None:
        """Records delivered as a whole (a file, say): one write each, no pending step; ``(key, ref)``."""
        self._write_delivered([(key, None, ref, ref) for key, ref in delivered], attempts=1)

    def mark_reconciled(self, held: list[tuple[str, str]], detail: str) -> None:
        """Records the vendor already holds as we would send them (``(key, payload hash)``): delivered with
        that hash, so the next run skips them; the event says how we know."""
        self._write_delivered([(key, digest, None, detail) for key, digest in held], attempts=0)

    def _write_delivered(self, entries: list[tuple[str, str | None, str | None, str | None]], attempts: int):
        """``(key, payload hash or None, vendor ref, event detail)`` written ``delivered`` in one transaction;
        without a hash the row's hashes are left as they were."""
        if not entries:
            return
        hashed = any(digest is not None for _, digest, _, _ in entries)
        const = {
            "operation": UPSERT,
            "status": DELIVERED,
            "payload": None,
            "error": None,
            "attempts": attempts,
            "first_run_id": self.run_id,
            "last_run_id": self.run_id,
            "updated_at": utc_now(),
        }
        columns = {"record_key": [e[0] for e in entries], "vendor_ref": [e[2] for e in entries]}
        if hashed:
            columns["payload_hash"] = columns["delivered_hash"] = [e[1] for e in entries]
        update = ["operation", "status", "payload", "error", "vendor_ref", "last_run_id", "updated_at"]
        with self.engine.begin() as conn:
            written = self._upsert(
                conn, const, columns, [*update, *(["payload_hash", "delivered_hash"] if hashed else [])]
            )
            self._log(conn, ((key, DELIVERED, detail) for key, _, _, detail in entries))
        self._wrote(written)

    def _keyset_pages(self, columns: list, condition, batch_size: int) -> Iterator[list]:
        """Rows of this sync matching ``condition``, in key order, ``batch_size`` at a time: keyset paging
        (``record_key > last``) keeps memory flat and each query cheap however large the ledger."""
        from sqlalchemy import select

        t = self.ledger
        last = ""
        while True:
            query = (
                select(*columns)
                .where(self._scope() & condition & (t.c.record_key > last))
                .order_by(t.c.record_key)
                .limit(batch_size)
            )
            with self.engine.connect() as conn:
                rows = conn.execute(query).all()
            if not rows:
                return
            yield rows
            last = rows[-1].record_key

    def iter_status(self, status: str, batch_size: int) -> Iterator[list[Planned]]:
        """Keyset-paged batches of records in ``status`` (any run's), so memory stays flat."""
        from reverse_etl import bulk

        scope, last = (self.destination, self.entity), ""
        while True:
            with self.engine.connect() as conn:
                rows = bulk.status_page(conn, self.dialect, self.ledger.name, scope, status, last, batch_size)
            if not rows:
                return
            if status == PENDING:  # a pending record's error is why it was planned (an erasure's reason)
                yield [Planned(*row) for row in rows]
            else:
                yield [Planned(key, op, digest, payload) for key, op, digest, payload, _ in rows]
            last = rows[-1][0]

    def iter_delivered_keys(self, batch_size: int) -> Iterator[list[str]]:
        """Keyset-paged keys of records that are at the vendor because we put them there: a
        ``delivered_hash`` and not deleted since. Records in motion (``pending``, ``in_flight``) are left
        out: a run is about to send them, or a vendor job holds them."""
        t = self.ledger
        condition = t.c.delivered_hash.is_not(None) & t.c.status.not_in([PENDING, IN_FLIGHT])
        for rows in self._keyset_pages([t.c.record_key], condition, batch_size):
            yield [r.record_key for r in rows]

    def count_status(self, status: str) -> int:
        from sqlalchemy import func, select

        t = self.ledger
        with self.engine.connect() as conn:
            return conn.execute(
                select(func.count()).where(self._scope() & (t.c.status == status))
            ).scalar_one()

    def in_flight(self) -> dict[str, list[Planned]]:
        """Records handed to vendor jobs that we have not heard back from, by job reference (without their
        payloads, which stay in the store: ``return_to_pending`` puts a job's records back as they were)."""
        from sqlalchemy import select

        t = self.ledger
        jobs: dict[str, list[Planned]] = {}
        query = (
            select(t.c.record_key, t.c.operation, t.c.payload_hash, t.c.vendor_ref)
            .where(self._scope() & (t.c.status == IN_FLIGHT))
            .order_by(t.c.record_key)
        )
        with self.engine.connect() as conn:
            for r in conn.execute(query):
                jobs.setdefault(r.vendor_ref, []).append(
                    Planned(r.record_key, r.operation, r.payload_hash, None)
                )
        return jobs

    def return_to_pending(self, vendor_ref: str, detail: str) -> int:
        """The records of a job the vendor does not know go back to ``pending`` with their payload, for
        this or a later run to send again; returns how many."""
        from sqlalchemy import select, update

        t = self.ledger
        where = self._scope() & (t.c.status == IN_FLIGHT) & (t.c.vendor_ref == vendor_ref)
        with self.engine.begin() as conn:
            keys = [r.record_key for r in conn.execute(select(t.c.record_key).where(where))]
            conn.execute(
                update(t)
                .where(where)
                .values(status=PENDING, vendor_ref=None, last_run_id=self.run_id, updated_at=utc_now())
            )
            self._log(conn, ((key, PENDING, detail) for key in keys))
        return len(keys)

    def mark_in_flight(self, keys: list[str], vendor_ref: str) -> None:
        """Remember the vendor job before waiting on it: a retry polls the job instead of resending."""
        const = {
            "status": IN_FLIGHT,
            "vendor_ref": vendor_ref,
            "last_run_id": self.run_id,
            "updated_at": utc_now(),
        }
        with self.engine.begin() as conn:
            written = self._update(conn, keys, const)
        self._wrote(written)

    def apply(self, outcomes: list[Outcome]) -> None:
        """Record the vendor's answer for each record of a batch, in one transaction."""
        now = utc_now()
        by_status: dict[str, list[Outcome]] = {}
        for outcome in outcomes:
            by_status.setdefault(outcome.status, []).append(outcome)
        written = 0
        with self.engine.begin() as conn:
            for status, items in by_status.items():
                const: dict[str, Any] = {
                    "status": status,
                    "last_run_id": self.run_id,
                    "updated_at": now,
                    "vendor_ref": None,
                }
                expressions = ["attempts = attempts + 1"]
                if status == DELIVERED:
                    const["payload"] = None
                    expressions.append("delivered_hash = payload_hash")
                elif status == DELETED:
                    const.update(delivered_hash=None, payload=None)
                elif status == FAILED:
                    const["payload"] = None
                written += self._update(
                    conn, [o.key for o in items], const, {"error": [o.error for o in items]}, expressions
                )
            self._log(conn, ((o.key, o.status, o.error) for o in outcomes if o.status != PENDING))
        self._wrote(written)

    def record_run(
        self,
        *,
        dag_id: str,
        try_number: int | None,
        window: dict,
        dry_run: bool,
        status: str,
        started_at: dt.datetime,
        report: dict,
    ) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                self.runs.insert().values(
                    dag_id=dag_id,
                    run_id=self.run_id,
                    destination=self.destination,
                    entity=self.entity,
                    try_number=try_number,
                    window_start=window.get("start"),
                    window_end=window.get("end"),
                    dry_run=int(dry_run),
                    status=status,
                    started_at=started_at,
                    finished_at=utc_now(),
                    report=json.dumps(report, default=str),
                )
            )


def record_history(destination: str, entity: str, key: str, url: str | None = None) -> dict:
    """Everything the state store knows about one record: current row and every event."""
    from sqlalchemy import select

    engine, ledger, events, _, _ = _engine(url or state_store_url())
    with engine.connect() as conn:
        current = conn.execute(
            select(ledger).where(
                (ledger.c.destination == destination)
                & (ledger.c.entity == entity)
                & (ledger.c.record_key == key)
            )
        ).first()
        history = conn.execute(
            select(events)
            .where(
                (events.c.destination == destination)
                & (events.c.entity == entity)
                & (events.c.record_key == key)
            )
            .order_by(events.c.id)
        ).all()
    return {
        "current": current._asdict() if current else None,
        "events": [row._asdict() for row in history],
    }


def run_reports(dag_id: str, run_id: str, url: str | None = None) -> list[dict]:
    """The load reports of one DAG run, latest try of each entity last."""
    from sqlalchemy import select

    engine, _, _, runs, _ = _engine(url or state_store_url())
    with engine.connect() as conn:
        rows = conn.execute(
            select(runs).where((runs.c.dag_id == dag_id) & (runs.c.run_id == run_id)).order_by(runs.c.id)
        ).all()
    return [{**row._asdict(), "report": json.loads(row.report or "{}")} for row in rows]


def delivered_in_runs(run_ids: Iterable[str], url: str | None = None) -> dict[tuple[str, str], int]:
    """Per (destination, entity), the records whose last change in these runs was a delivery: what a
    vendor that started empty holds after them (a record delivered, then deleted, is not counted)."""
    from sqlalchemy import select

    run_ids = list(run_ids)
    engine, _, events, _, _ = _engine(url or state_store_url())
    last: dict[tuple[str, str, str], str] = {}
    with engine.connect() as conn:
        rows = conn.execute(
            select(events.c.destination, events.c.entity, events.c.record_key, events.c.status)
            .where(events.c.run_id.in_(run_ids))
            .order_by(events.c.id)
        )
        for destination, entity, key, status in rows:
            last[(destination, entity, key)] = status
    counts: dict[tuple[str, str], int] = {}
    for (destination, entity, _key), status in last.items():
        if status == DELIVERED:
            counts[(destination, entity)] = counts.get((destination, entity), 0) + 1
    return counts
