"""One load per sync at a time: a lease on (destination, entity) in the state store's ``sync_leases``.

A daily run and a backfill must not drain the same pending records at once. The holder renews its lease while
it makes progress (every wait beats, see ``progress``); a crashed holder's lease expires after its TTL; a
holder that finds its lease taken (it froze past the TTL) stops with ``LeaseLost`` before its next request.
"""

from __future__ import annotations

import datetime as dt
import logging

from reverse_etl.progress import add_heartbeat, remove_heartbeat
from reverse_etl.store import utc_now

log = logging.getLogger(__name__)


def holder_of(context, task_id: str) -> str:
    """Who holds a lease: the task and its try. Each try is a holder of its own, so a retry that starts while
    an earlier try still runs (a worker cut off from Airflow, a suspended VM: Airflow gave up on it, it did
    not stop) waits for that try's lease instead of sharing it, and the earlier try, once its lease is
    taken, stops before its next request (``LeaseLost``). A try that crashed stops renewing: Airflow retries
    it only after its heartbeat timeout (300 s by default), by when its lease (``RETL_LEASE_SECONDS``, 300
    after its last renewal) has lapsed."""
    task = f"{context['dag'].dag_id}/{context['run_id']}/{task_id}"
    try_number = getattr(context.get("ti"), "try_number", None)
    return f"{task} (try {try_number})" if try_number is not None else task


class SyncLease:
    """The lease of one (destination, entity) for one ``Ledger`` (``ledger.lease``)."""

    def __init__(self, engine, table, destination: str, entity: str):
        self.engine, self.table = engine, table
        self.destination, self.entity = destination, entity
        self._held: tuple[str | None, float] = (None, 0)
        self._renewed = 0.0

    def acquire(self, holder: str, ttl: float, wait: float) -> None:
        """Make this load the only one sending for (destination, entity): a daily run and a backfill must
        not drain the same pending records at once. The same holder (``holder_of``: one try of one task)
        takes its lease back at once; a crashed holder's lease expires after ``ttl`` seconds."""
        import time

        from sqlalchemy import insert, select, update
        from sqlalchemy.exc import IntegrityError

        from reverse_etl.errors import SyncError
        from reverse_etl.progress import Wait

        t = self.table
        scope = (t.c.destination == self.destination) & (t.c.entity == self.entity)
        waiting = Wait(f"the lease on {self.destination}.{self.entity}", wait, logger=log)
        while True:
            now = utc_now()
            expires = now + dt.timedelta(seconds=ttl)
            try:
                with self.engine.begin() as conn:
                    current = conn.execute(select(t.c.holder, t.c.expires_at).where(scope)).first()
                    if current is None:
                        conn.execute(
                            insert(t).values(
                                destination=self.destination,
                                entity=self.entity,
                                holder=holder,
                                expires_at=expires,
                            )
                        )
                        break
                    if current.holder == holder or current.expires_at < now:
                        taken = conn.execute(
                            update(t)
                            .where(
                                scope
                                & (t.c.holder == current.holder)
                                & (t.c.expires_at == current.expires_at)
                            )
                            .values(holder=holder, expires_at=expires)
                        ).rowcount
                        if taken:
                            break
            except IntegrityError:
                continue  # another load inserted first: look again
            if waiting.expired:
                raise SyncError(
                    f"{self.destination}.{self.entity} is being loaded by {current.holder} (lease until "
                    f"{current.expires_at} UTC); this load waited {wait:.0f} s and gives up. Airflow's retry "
                    "will try again; clear the other run if it is stuck."
                )
            if current is not None:
                waiting.detail = f"held by {current.holder} until {current.expires_at:%Y-%m-%d %H:%M:%S} UTC"
            waiting.sleep(min(5.0, max(0.2, ttl / 10)))
        waiting.done(f"{holder} holds it")
        self._renewed = time.monotonic()
        self._held = (holder, ttl)
        add_heartbeat(self.renew)  # waits inside the load (429s, vendor jobs) keep the lease alive

    def renew(self) -> None:
        """Push the lease's expiry on while the load makes progress (at most every third of the ttl). A
        lease another load has taken meanwhile (this one stalled past the ttl) raises ``LeaseLost``."""
        import time

        from sqlalchemy import select, update

        from reverse_etl.errors import LeaseLost

        holder, ttl = self._held
        if holder is None or time.monotonic() - self._renewed < ttl / 3:
            return
        t = self.table
        scope = (t.c.destination == self.destination) & (t.c.entity == self.entity)
        with self.engine.begin() as conn:
            renewed = conn.execute(
                update(t)
                .where(scope & (t.c.holder == holder))
                .values(expires_at=utc_now() + dt.timedelta(seconds=ttl))
            ).rowcount
            now_held_by = None if renewed else conn.execute(select(t.c.holder).where(scope)).scalar()
        if not renewed:
            self._held = (None, 0)
            remove_heartbeat(self.renew)
            raise LeaseLost(
                f"{holder} lost its lease on {self.destination}.{self.entity}: it went "
                f"{time.monotonic() - self._renewed:.0f} s without renewing it (RETL_LEASE_SECONDS={ttl:g}), "
                f"and {now_held_by or 'another load'} took it. This load stops before sending more; Airflow's "
                "retry waits for the lease and resumes from the ledger."
            )
        self._renewed = time.monotonic()

    def release(self) -> None:
        from sqlalchemy import delete

        holder, _ = self._held
        if holder is None:
            return
        remove_heartbeat(self.renew)
        t = self.table
        with self.engine.begin() as conn:
            conn.execute(
                delete(t).where(
                    (t.c.destination == self.destination)
                    & (t.c.entity == self.entity)
                    & (t.c.holder == holder)
                )
            )
        self._held = (None, 0)
