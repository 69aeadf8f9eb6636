"""What the Reverse ETL page shows, read from the state store: one function per endpoint.

Every query is bounded by an index of ``store._tables``: the runs of a sync by ``ix_sync_runs_sync``
(destination, entity, id), a record's events by ``ix_sync_events_key``, the failing records by
``ix_sync_ledger_status``, an account's minutes by the primary key of ``sync_request_minutes`` (account,
minute). Nothing scans the ledger or the minutes.
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import func, select

from reverse_etl.ledger import FAILED, REJECTED, record_history
from reverse_etl.store import open_request_minutes, open_store
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


def budget(url: str, minutes: int) -> list[dict]:
    """Per vendor account (rate bucket): its limit per minute and its latest ``minutes`` minutes with
    traffic, oldest first, each with requests and 429s; the peak minute, the share of the limit it used,
    the minutes over the limit and the minutes with 429s. Did we stay within budget, how close, where
    were we throttled.

    Each account's minutes are one range of the primary key (account, minute), read newest first and
    stopped at ``minutes``; the accounts are found by one index seek each (never a scan of the table).
    """
    engine, table = open_request_minutes(url)
    t = table.c
    found = []
    with engine.connect() as conn:
        accounts: list[str] = []
        while True:  # a loose index scan: the next account after the last one found (none is "")
            after = accounts[-1] if accounts else ""
            account = conn.execute(
                select(t.account).where(t.account > after).order_by(t.account).limit(1)
            ).scalar()
            if account is None:
                break
            accounts.append(account)
        for account in accounts:
            rows = conn.execute(
                select(t.minute, t.requests, t.throttled, t.limit_per_minute)
                .where(t.account == account)
                .order_by(t.minute.desc())
                .limit(minutes)
            ).all()
            found.append(_account_budget(account, [tuple(row) for row in reversed(rows)]))
    return found


def _account_budget(account: str, rows: list) -> dict:
    """The page's numbers of one account from its minutes ``(minute, requests, throttled, limit)``, oldest
    first."""
    limit = rows[-1][3]  # the latest: the connection's requests_per_minute may have changed
    shown, throttled_minutes = [], []
    total = total_throttled = over = 0
    peak: dict = {"requests": -1}
    for at, requests, throttled, in_force in rows:
        minute = at.isoformat(timespec="minutes")
        entry = {"minute": minute, "requests": requests, "throttled": throttled}
        shown.append(entry)
        total += requests
        total_throttled += throttled
        if throttled:
            throttled_minutes.append(minute)
        in_force = in_force or limit  # the limit in force in that minute
        if in_force and requests > in_force:
            over += 1
        if requests >= peak["requests"]:  # the busiest; of equals the newest
            peak = {**entry, "limit_per_minute": in_force}
    return {
        "account": account,
        "limit_per_minute": limit,
        "requests": total,
        "throttled": total_throttled,
        "first_minute": shown[0]["minute"],
        "last_minute": shown[-1]["minute"],
        "peak": peak,
        "share": round(peak["requests"] / peak["limit_per_minute"], 3) if peak["limit_per_minute"] else None,
        "over_limit_minutes": over,
        "throttled_minutes": throttled_minutes,
        "minutes": shown,
    }
