"""Long waits an operator can follow: a task that waits (for a lease, a rate budget, a vendor's job, a
lock) says so in its log at least every ``RETL_PROGRESS_LOG_SECONDS`` (30), one line per interval per wait
whatever the loop's own sleeps, so a quiet log means a stuck task, not a patient one.

    wait = Wait("the lease on connectif.contacts", max_seconds=3600, logger=log)
    while not got_it():
        wait.sleep(5, detail="held by run X until 12:00:00 UTC")
    wait.done()
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable

log = logging.getLogger(__name__)
DEFAULT_LOG_SECONDS = 30.0
# Called on every tick of every wait: a load registers its lease renewal here, so a long wait inside one
# request (a 429 storm, a vendor job, the rate budget) keeps the sync's lease alive for the task that waits.
_heartbeats: list[Callable[[], None]] = []
# A sleeping wait ticks at least this often, whatever its logging interval: a lease (RETL_LEASE_SECONDS) may
# be shorter than RETL_PROGRESS_LOG_SECONDS, and a lease that lapses mid-wait lets another load send the
# same pending records.
BEAT_SECONDS = 1.0


def add_heartbeat(beat: Callable[[], None]) -> None:
    _heartbeats.append(beat)


def remove_heartbeat(beat: Callable[[], None]) -> None:
    if beat in _heartbeats:
        _heartbeats.remove(beat)


def beat() -> None:
    """Call every registered heartbeat. A failing one is logged and the wait goes on, except a
    ``LeaseLost``: the load that waits must stop before it sends what another load now owns."""
    from reverse_etl.errors import LeaseLost

    for heartbeat in list(_heartbeats):
        try:
            heartbeat()
        except LeaseLost:
            raise
        except Exception as exc:  # a heartbeat must not break the wait it rides on
            log.warning(
                "heartbeat %s failed during a wait: %s", getattr(heartbeat, "__qualname__", heartbeat), exc
            )


def log_seconds() -> float:
    """``RETL_PROGRESS_LOG_SECONDS``: the longest a wait stays silent in the task log."""
    raw = os.environ.get("RETL_PROGRESS_LOG_SECONDS", str(DEFAULT_LOG_SECONDS))
    try:
        value = float(raw)
    except ValueError:
        value = 0.0
    if not value > 0:
        from reverse_etl.errors import ConfigError

        raise ConfigError(
            f"RETL_PROGRESS_LOG_SECONDS={raw!r}: set a number of seconds above 0 (default 30), the longest "
            "a waiting task stays silent in its log."
        )
    return value


def _seconds(value: float) -> str:
    return f"{value:.1f}" if value < 10 else f"{value:.0f}"


class Wait:
    """One wait: ``tick`` or ``sleep`` log ``waiting for <what>: <elapsed> s of <max> s, <detail>`` once per
    interval; a wait shorter than one interval logs nothing."""

    def __init__(
        self,
        what: str,
        max_seconds: float | None = None,
        *,
        logger: logging.Logger | logging.LoggerAdapter | None = None,
        detail: str = "",
    ) -> None:
        self.what = what
        self.max_seconds = max_seconds
        self.detail = detail
        self.log = logger or log
        self.interval = log_seconds()
        self.started = time.monotonic()
        self._last = self.started
        self.lines = 0

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    @property
    def expired(self) -> bool:
        """More than ``max_seconds`` have passed (never, without a maximum)."""
        return self.max_seconds is not None and self.elapsed > self.max_seconds

    def until_due(self) -> float:
        """Seconds until the next progress line is due (0 when it is)."""
        return max(0.0, self._last + self.interval - time.monotonic())

    def tick(self, detail: str | None = None) -> bool:
        """Log a progress line if one is due; ``detail`` (the latest news) is kept for the next line."""
        if detail is not None:
            self.detail = detail
        beat()
        now = time.monotonic()
        if now - self._last < self.interval:
            return False
        self._last = now
        self.lines += 1
        of = f" of {_seconds(self.max_seconds)} s" if self.max_seconds is not None else ""
        tail = f", {self.detail}" if self.detail else ""
        self.log.info("waiting for %s: %s s%s%s", self.what, _seconds(now - self.started), of, tail)
        return True

    def sleep(self, seconds: float, detail: str | None = None) -> None:
        """Sleep ``seconds``, in slices so that a long sleep still logs on schedule and beats every second."""
        if detail is not None:
            self.detail = detail
        end = time.monotonic() + max(0.0, seconds)
        while (left := end - time.monotonic()) > 0:
            time.sleep(min(left, self.until_due(), BEAT_SECONDS))
            self.tick()

    def done(self, outcome: str = "") -> None:
        """Close a wait that was reported: say how long it took (silent when no progress line was logged)."""
        if self.lines:
            tail = f", {outcome}" if outcome else ""
            self.log.info("done waiting for %s after %s s%s", self.what, _seconds(self.elapsed), tail)
