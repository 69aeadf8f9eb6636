"""Requests and 429s per vendor account and UTC minute: the rate budget the Reverse ETL page shows.

A hook counts in memory (``RequestMinutes.count``: nothing is written per request) and adds its counts to
``sync_request_minutes`` when a minute ends (on its first request of a later minute) and when its owner is
done with it (``flush``, in the load's ``finally``). The write is an additive upsert
(``requests = requests + excluded.requests``): every task, run and worker sending on one account adds to
the same rows, and concurrent writers lose no count. A failed write never fails a delivery: it is logged
and its counts are kept for the next write (the last write's failure logs what was lost).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable

log = logging.getLogger(__name__)


def utc_minute(now: dt.datetime | None = None) -> dt.datetime:
    """The UTC minute of ``now`` (default: the current time), naive as the store keeps it."""
    now = now or dt.datetime.now(dt.UTC)
    if now.tzinfo is not None:
        now = now.astimezone(dt.UTC).replace(tzinfo=None)
    return now.replace(second=0, microsecond=0)


def add_request_minutes(
    url: str, account: str, limit_per_minute: int | None, minutes: Iterable[tuple[dt.datetime, int, int]]
) -> None:
    """Add ``(minute, requests, throttled)`` to the account's rows, in one transaction, creating missing
    rows. Rows go in minute order, so two writers lock them in the same order (no deadlock on PostgreSQL)."""
    from reverse_etl.store import open_request_minutes

    engine, table = open_request_minutes(url)
    rows = [
        {
            "account": account,
            "minute": minute,
            "requests": requests,
            "throttled": throttled,
            "limit_per_minute": limit_per_minute,
        }
        for minute, requests, throttled in sorted(minutes)
    ]
    if not rows:
        return
    if engine.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    stmt = insert(table)
    stmt = stmt.on_conflict_do_update(
        index_elements=["account", "minute"],
        set_={
            "requests": table.c.requests + stmt.excluded.requests,
            "throttled": table.c.throttled + stmt.excluded.throttled,
            "limit_per_minute": stmt.excluded.limit_per_minute,
        },
    )
    with engine.begin() as conn:
        conn.execute(stmt, rows)


class RequestMinutes:
    """One hook's requests and 429s per UTC minute, kept in memory until ``flush``.

    :param account: the rate bucket (``AccountLimiter.account``), shared by every connection naming the
        same ``rate_limit_account``.
    :param limit_per_minute: the account's budget, written with every minute (the page shows the latest).
    :param url: the state store; default the ``retl_state`` connection, looked up at the first write.
    """

    def __init__(self, account: str, limit_per_minute: int | None, url: str | None = None) -> None:
        self.account = account
        self.limit_per_minute = limit_per_minute
        self.url = url
        self._pending: dict[dt.datetime, list[int]] = {}
        self._current: dt.datetime | None = None

    def count(self, *, throttled: bool = False, now: dt.datetime | None = None) -> None:
        """One request sent (and answered 429 when ``throttled``); the previous minutes are written first
        when this one is the first of a later minute."""
        minute = utc_minute(now)
        if self._current is not None and minute != self._current and self._pending:
            self.flush()
        self._current = minute
        entry = self._pending.setdefault(minute, [0, 0])
        entry[0] += 1
        entry[1] += int(throttled)

    @property
    def pending(self) -> dict[dt.datetime, tuple[int, int]]:
        """Counts not written yet, by minute."""
        return {minute: (r, t) for minute, (r, t) in self._pending.items()}

    def flush(self, *, last: bool = False) -> bool:
        """Write the counts kept so far; True when nothing is left to write. ``last``: the owner is done
        with the hook, so a failure loses the counts (and says so)."""
        if not self._pending:
            return True
        try:
            url = self.url
            if url is None:
                from reverse_etl.store import state_store_url

                url = state_store_url()
            rows = [(minute, r, t) for minute, (r, t) in self._pending.items()]
            add_request_minutes(url, self.account, self.limit_per_minute, rows)
        except Exception as exc:
            requests = sum(r for r, _ in self._pending.values())
            throttled = sum(t for _, t in self._pending.values())
            span = f"{min(self._pending):%Y-%m-%d %H:%M} to {max(self._pending):%H:%M} UTC"
            fate = "not recorded" if last else "kept for the next write"
            log.warning(
                "rate budget of account '%s': %d requests (%d 429s) of %s %s; writing them to the state "
                "store failed: %s",
                self.account,
                requests,
                throttled,
                span,
                fate,
                str(exc).splitlines()[0] if str(exc) else type(exc).__name__,
            )
            if last:
                self._pending.clear()
            return False
        self._pending.clear()
        return True
