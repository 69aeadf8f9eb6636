"""Errors with messages that name the thing at fault and what to do about it."""

from __future__ import annotations


class SyncError(Exception):
    """Base of every error the engine raises on purpose."""


class ConfigError(SyncError):
    """Malformed or missing configuration: a connection, a SQL file, a suite, a param."""


class StateStoreError(ConfigError):
    """The state store is missing, empty, corrupt or another deployment's: running would resend records."""


class StateStoreUnavailable(SyncError):
    """The state store's database cannot be reached right now: an outage, retried like one."""


class RejectedShareExceeded(SyncError):
    """Too many rows failed the data-quality checks: the upstream is probably broken."""


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
