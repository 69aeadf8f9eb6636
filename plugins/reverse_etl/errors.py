"""Errors with messages that name the thing at fault and what to do about it."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

log = logging.getLogger(__name__)


class SyncError(Exception):
    """Base of every error the engine raises on purpose."""


class LeaseLost(SyncError):
    """Another load took this sync's lease (this one stalled past its TTL): stop before sending more."""


class ConfigError(SyncError):
    """Malformed or missing configuration: a connection, a SQL file, a suite, a param."""


class StateStoreError(ConfigError):
    """The state store is missing, empty, corrupt or another deployment's: running would resend records."""


class StateStoreUnavailable(SyncError):
    """The state store's database cannot be reached right now: an outage, retried like one."""


class RejectedShareExceeded(SyncError):
    """Too many rows failed the data-quality checks: the upstream is probably broken. Carries the
    validation's manifest (counts, quarantine) so the failed run is still recorded."""

    def __init__(self, manifest: dict, message: str):
        super().__init__(message)
        self.manifest = manifest


class VendorError(SyncError):
    """Anything a vendor answered or failed to answer."""

    def __init__(self, message: str, *, status: int | None = None, body: object = None):
        super().__init__(message)
        self.status = status
        self.body = body


class VendorRejected(VendorError):
    """The vendor refused the request for good (4xx): resending the same payload will not help."""


class VendorAuthError(VendorError):
    """The vendor refused our credentials: the connection must be fixed, retries will not help."""


class VendorUnavailable(VendorError):
    """Transient failures persisted past the in-task backoff; Airflow's task retry resumes later."""


class VendorNotFound(VendorRejected):
    """404: the object or async job does not exist (or no longer)."""


# No retry can fix these: the configuration (connections, host keys, the state store, params), the
# credentials, a SQL mapping or a suite must change first, or the staged rows are what they are. Outages
# and throttling (VendorUnavailable, connection errors) are not listed: Airflow retries them; neither is
# VendorRejected, whose 404 on an async job a retry resolves by resending.
NOT_RETRYABLE: tuple[type[Exception], ...] = (ConfigError, VendorAuthError, RejectedShareExceeded)


@contextmanager
def fail_fast() -> Iterator[None]:
    """Turn an error no retry can fix into ``AirflowFailException`` (Airflow does not retry it) with our
    message alone: one ERROR line, no library traceback chained. Wraps every task's callable or
    ``execute`` (as ``@fail_fast()``), so the split lives here and not in each task."""
    try:
        yield
    except NOT_RETRYABLE as exc:
        from airflow.sdk.exceptions import AirflowFailException

        message = f"{exc} [not retried: fix this, then clear the failed task]"
        log.error(message)
        raise AirflowFailException(message) from None
