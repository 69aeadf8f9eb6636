"""What the Reverse ETL page shows, read from the state store: one function per endpoint.

Every query is bounded by an index of ``store._tables``: the runs of a sync by ``ix_sync_runs_sync``
(destination, entity, id), a record's events by ``ix_sync_events_key``, the failing records by
``ix_sync_ledger_status``. Nothing scans the ledger.
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import func, select

from reverse_etl.ledger import FAILED, REJECTED, record_history
from reverse_etl.store import open_store
from reverse_etl.tasks import PAGE_COLUMNS

SAMPLE_KEYS = 5


def _run(row: Any) -> dict:
    report = json.loads(row.report or "{}")
    return {
        "dag_id": row.dag_id,
        "run_id": row.run_id,
        "try_number": row.try_number,
        "window_start": row.window_start,
        "window_end": row.window_end,
        "dry_run": bool(row.dry_run),
        "status": row.status,
        "error": report.get("error"),
        "started_at": row.started_at.isoformat() if row.started_at else None,
        "finished_at": row.finished_at.isoformat() if row.finished_at else None,
        "counts": {name: report.get(name, 0) for name in PAGE_COLUMNS},
        "quarantine": report.get("quarantine"),
        "airflow_url": f"/dags/{row.dag_id}/runs/{row.run_id}",
    }


def syncs(url: str, limit: int) -> list[dict]:
    """Every (destination, entity) that has run, with its latest ``limit`` load reports, newest first."""
    engine, _, _, runs, _ = open_store(url)
    found = []
    with engine.connect() as conn:
        pairs = conn.execute(
            select(runs.c.destination, runs.c.entity)
            .group_by(runs.c.destination, runs.c.entity)
            .order_by(runs.c.destination, runs.c.entity)
        ).all()
        for destination, entity in pairs:
            rows = conn.execute(
                select(runs)
                .where((runs.c.destination == destination) & (runs.c.entity == entity))
                .order_by(runs.c.id.desc())
                .limit(limit)
            ).all()
            found.append({"destination": destination, "entity": entity, "runs": [_run(r) for r in rows]})
    return found


def record(url: str, destination: str, entity: str, key: str) -> dict:
    """The CLI's ``why``: the record's current row (without its payload) and every event."""
    history = record_history(destination, entity, key, url=url)
    current = history["current"]
    if current is not None:
        current.pop("payload", None)  # what would be sent: not the page's business
    return {"destination": destination, "entity": entity, "key": key, **history}


def failures(url: str, destination: str, entity: str, groups: int, reveal: bool = False) -> list[dict]:
    """Records failing now (refused by the vendor or rejected by the checks), grouped by message; keys that
    are personal (an email) and emails quoted in vendor messages masked unless ``reveal``."""
    from reverse_etl.ui.quarantine import mask_emails, masker

    masked = masker(destination, entity, reveal)
    engine, ledger, _, _, _ = open_store(url)
    scope = (
        (ledger.c.destination == destination)
        & (ledger.c.entity == entity)
        & ledger.c.status.in_([FAILED, REJECTED])
    )
    count = func.count().label("records")
    with engine.connect() as conn:
        rows = conn.execute(
            select(ledger.c.status, ledger.c.error, count)
            .where(scope)
            .group_by(ledger.c.status, ledger.c.error)
            .order_by(count.desc(), ledger.c.status, ledger.c.error)
            .limit(groups)
        ).all()
        found = []
        for status, error, records in rows:
            same = (ledger.c.error == error) if error is not None else ledger.c.error.is_(None)
            keys = conn.execute(
                select(ledger.c.record_key)
                .where(scope & (ledger.c.status == status) & same)
                .order_by(ledger.c.record_key)
                .limit(SAMPLE_KEYS)
            ).scalars()
            found.append(
                {
                    "status": status,
                    "message": error if reveal else mask_emails(error),
                    "records": records,
                    "keys": [masked.key(k) for k in keys],
                }
            )
    return found


def budget(url: str, limit: int) -> list[dict]:
    """Requests and 429s per Airflow run for each destination (one vendor account each), newest first."""
    engine, _, _, runs, _ = open_store(url)
    found = []
    with engine.connect() as conn:
        destinations = conn.execute(
            select(runs.c.destination).group_by(runs.c.destination).order_by(runs.c.destination)
        ).scalars()
        for destination in list(destinations):
            rows = conn.execute(
                select(runs.c.dag_id, runs.c.run_id, runs.c.report)
                .where(runs.c.destination == destination)
                .order_by(runs.c.id.desc())
                .limit(limit * 8)  # a run loads a few entities: enough reports for ``limit`` runs
            ).all()
            per_run: dict[tuple[str, str], dict] = {}
            for dag_id, run_id, report in rows:
                if (dag_id, run_id) not in per_run and len(per_run) == limit:
                    continue
                counts = json.loads(report or "{}")
                entry = per_run.setdefault(
                    (dag_id, run_id), {"dag_id": dag_id, "run_id": run_id, "requests": 0, "throttled": 0}
                )
                entry["requests"] += counts.get("requests", 0)
                entry["throttled"] += counts.get("throttled", 0)
            found.append({"destination": destination, "runs": list(per_run.values())})
    return found
