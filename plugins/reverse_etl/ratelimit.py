"""One request bucket per vendor account, shared by every task process, DAG run, backfill and worker.

Built on pyrate-limiter: a sliding-window log kept in SQLite (embedded default, a file beside the state
store, guarded by a file lock), PostgreSQL (when the state store is PostgreSQL) or Redis (when
``RETL_RATE_LIMIT_URL`` says ``redis://...``). The window is widened by a small margin so that the
vendor, whose clock starts when a request *arrives*, never sees one request too many.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from dataclasses import dataclass

log = logging.getLogger(__name__)

_LIMITERS: dict[tuple, object] = {}
_LOCK = threading.Lock()


@dataclass(frozen=True)
class RateSpec:
    limit: int
    window_seconds: float
    margin_seconds: float | None = None

    @property
    def window_ms(self) -> int:
        """The window plus a margin (default 1%, at least 250 ms): the bucket stamps a request when its slot
        is taken, the vendor when it arrives, and a busy worker can be a few hundred ms between the two."""
        base = int(self.window_seconds * 1000)
        if self.margin_seconds is not None:
            return base + int(self.margin_seconds * 1000)
        return base + max(250, base // 100)


def backend_url() -> str:
    """Where buckets live: ``RETL_RATE_LIMIT_URL``, else beside the state store."""
    explicit = os.environ.get("RETL_RATE_LIMIT_URL")
    if explicit:
        return explicit
    from reverse_etl.ledger import state_store_url

    state = state_store_url()
    if state.startswith("sqlite:///"):
        path = state.removeprefix("sqlite:///")
        return f"sqlite:///{os.path.join(os.path.dirname(path) or '.', 'ratelimit.sqlite')}"
    return state


def _table_name(account: str) -> str:
    return "retl_" + re.sub(r"[^a-z0-9_]", "_", account.lower())


def _build(url: str, account: str, spec: RateSpec):
    from pyrate_limiter import Limiter, Rate

    rates = [Rate(spec.limit, spec.window_ms)]
    table = _table_name(account)
    if url.startswith("sqlite:///"):
        from pyrate_limiter import SQLiteBucket

        path = url.removeprefix("sqlite:///")
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        bucket = SQLiteBucket.init_from_file(rates, table=table, db_path=path, use_file_lock=True)
    elif url.startswith(("postgresql", "postgres://")):
        from psycopg_pool import ConnectionPool
        from pyrate_limiter import PostgresBucket

        conninfo = re.sub(r"^postgresql\+\w+://", "postgresql://", url)
        pool = ConnectionPool(conninfo, min_size=1, max_size=2, open=True)
        bucket = PostgresBucket(pool, table, rates)
    elif url.startswith(("redis://", "rediss://")):
        from pyrate_limiter import RedisBucket
        from redis import Redis

        bucket = RedisBucket.init(rates, Redis.from_url(url), table)
    else:
        from reverse_etl.errors import ConfigError

        raise ConfigError(f"RETL_RATE_LIMIT_URL={url!r}: use sqlite:///path, postgresql://... or redis://...")
    return Limiter(bucket, buffer_ms=10)


class AccountLimiter:
    """Blocks until the account's bucket has room for one more request; returns the seconds waited."""

    def __init__(self, account: str, spec: RateSpec, url: str | None = None):
        self.account = account
        self.spec = spec
        self.url = url or backend_url()
        key = (self.url, account, spec)
        with _LOCK:
            if key not in _LIMITERS:
                _LIMITERS[key] = _build(self.url, account, spec)
            self._limiter = _LIMITERS[key]

    def acquire(self) -> float:
        """Take a slot, waiting in steps of at most one progress interval so a long wait shows in the log,
        and of at most a second so the load's lease keeps beating."""
        from reverse_etl.progress import BEAT_SECONDS, Wait, beat

        started = time.monotonic()
        wait = Wait(
            f"a request slot of the rate budget '{self.account}'",
            logger=log,
            detail=f"{self.spec.limit} requests per {self.spec.window_seconds:g} s, shared by every task, "
            "run and worker using this account",
        )
        while not self._limiter.try_acquire(
            self.account, blocking=True, timeout=max(0.01, min(wait.until_due(), BEAT_SECONDS))
        ):
            wait.tick()
        beat()  # the lease is checked before every request, not only during waits
        waited = time.monotonic() - started
        if waited > 5:
            log.info(
                "rate limit %s: waited %.1f s for a slot (%d per %.0f s)",
                self.account,
                waited,
                self.spec.limit,
                self.spec.window_seconds,
            )
        return waited
