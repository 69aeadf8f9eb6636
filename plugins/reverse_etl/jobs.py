"""Async vendor jobs in flight: several at once, polled together on a growing interval.

A load that hands batches to vendor jobs (Voucherify's bulk upserts and order imports, Connectif's CSV
imports) records each job's records ``in_flight`` under the job's reference *before* the job gets here, so a
killed task finds and resumes every job it left, however many. Meanwhile the load keeps sending: up to
``max_jobs`` wait at the vendor at once, which keeps the vendor's queue busy while we poll.

Polling costs the same budget as writes. One poll asks about every job at once where the vendor can list
jobs (the adapter's ``poll_jobs``). The first comes ``first`` seconds after a job starts; after that the
next poll waits as long as the oldest job has been running, between ``first`` and ``longest``: 1, 2, 4, 8,
16, 30, 30 ... seconds for one job, and no burst of short polls after a long stretch of sending. The
vendor runs these jobs one after another, so a young job is often done soon and an old queue is not.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from reverse_etl.errors import VendorError
from reverse_etl.ledger import Outcome, Planned
from reverse_etl.progress import Wait

log = logging.getLogger(__name__)

# A finished job's outcomes, or None: the vendor does not know the job (its records go back to pending).
Finished = dict[str, list[Outcome] | None]


class InFlightJobs:
    """Jobs sent and not yet answered, by reference, each with its records (keys only: payloads stay in
    the ledger).

    :param poll: one round of asking the vendor about ``{ref: records}``; returns the finished ones. With
        ``blocking`` the poll waits for a job itself (an adapter whose ``collect`` polls): no sleep here.
    :param on_done: called with ``(ref, records, outcomes or None)`` as each job is answered.
    :param timeout: seconds without any job finishing before the wait fails (the jobs stay in flight in
        the ledger, and the task's retry resumes them).
    """

    def __init__(
        self,
        poll: Callable[[dict[str, list[Planned]]], Finished],
        on_done: Callable[[str, list[Planned], list[Outcome] | None], None],
        *,
        what: str,
        first: float = 1.0,
        longest: float = 30.0,
        timeout: float = 1800.0,
        blocking: bool = False,
        logger: logging.Logger | None = None,
    ) -> None:
        self.poll = poll
        self.on_done = on_done
        self.what = what
        self.first = max(0.0, first)
        self.longest = max(self.first, longest)
        self.timeout = timeout
        self.blocking = blocking
        self.log = logger or log
        self.jobs: dict[str, list[Planned]] = {}
        self.started: dict[str, float] = {}
        self.interval = self.first
        self.next_poll = 0.0
        self.polls = 0  # rounds of polling (each one or more requests, as the adapter's poll decides)
        self.answered = 0

    def __len__(self) -> int:
        return len(self.jobs)

    def add(self, ref: str, records: list[Planned]) -> None:
        """A job the vendor accepted (its records already ``in_flight`` under ``ref``)."""
        now = time.monotonic()
        if not self.jobs:
            self.interval = self.first
            self.next_poll = now + self.first
        self.jobs[ref] = [Planned(p.key, p.operation, p.payload_hash, None) for p in records]
        self.started[ref] = now

    def wait(self, until: int = 0) -> None:
        """Poll until at most ``until`` jobs are left in flight."""
        if len(self.jobs) <= until:
            return
        wait = Wait(f"{self.what} in flight", logger=self.log)
        quiet_since = time.monotonic()
        while len(self.jobs) > until:
            if not self.blocking:
                wait.sleep(max(0.0, self.next_poll - time.monotonic()), self._news())
            finished = self.poll(dict(self.jobs))
            self.polls += 1
            answered = [ref for ref in finished if ref in self.jobs]
            for ref in answered:
                self.started.pop(ref, None)
                self.on_done(ref, self.jobs.pop(ref), finished[ref])
            self.answered += len(answered)
            now = time.monotonic()
            if self.started:
                oldest = now - min(self.started.values())
                self.interval = min(self.longest, max(self.first, oldest))
            if answered:
                quiet_since = now
            elif now - quiet_since > self.timeout:
                raise VendorError(
                    f"{len(self.jobs)} {self.what} still unfinished after {self.timeout:.0f} s without any "
                    "finishing; they stay in flight in the ledger and the task's retry resumes polling "
                    f"them (references: {', '.join(list(self.jobs)[:5])}"
                    f"{', ...' if len(self.jobs) > 5 else ''})."
                )
            self.next_poll = now + self.interval
        wait.done(self._news())

    def _news(self) -> str:
        return (
            f"{len(self.jobs)} in flight, {self.answered} answered in {self.polls} polls, "
            f"next poll {self.interval:g} s after the last"
        )
