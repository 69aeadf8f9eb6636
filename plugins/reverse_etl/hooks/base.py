"""The transport every HTTP vendor hook shares: connection, pacing, 429s, transient retries, errors.

A vendor hook only says how to authenticate, how to read its error bodies and how to read its rate-limit
headers. Waiting on a 429 does not use up the transient-failure budget: a throttled request is retried
until ``max_throttle_wait_seconds`` of waiting have passed.
"""

from __future__ import annotations

import datetime as dt
import logging
import random
from dataclasses import asdict, dataclass
from typing import Any

from airflow.sdk import BaseHook

from reverse_etl.budget import RequestMinutes
from reverse_etl.errors import (
    ConfigError,
    VendorAuthError,
    VendorNotFound,
    VendorRejected,
    VendorUnavailable,
)
from reverse_etl.progress import Wait
from reverse_etl.ratelimit import AccountLimiter, RateSpec

log = logging.getLogger(__name__)
TRANSIENT_STATUSES = frozenset({500, 502, 503, 504})


@dataclass
class RequestStats:
    """Counters a load reports: what pacing and the vendor cost us."""

    requests: int = 0
    throttled: int = 0
    transient_errors: int = 0
    rate_wait_seconds: float = 0.0
    throttle_wait_seconds: float = 0.0

    def as_dict(self) -> dict:
        return {k: round(v, 3) if isinstance(v, float) else v for k, v in asdict(self).items()}


def typed_extra(extras: dict, name: str, default: Any, cast: type, connection: str) -> Any:
    """A connection extra as ``cast``; a malformed one is a ConfigError naming the connection and extra.
    An extra that is unset with no default (``default=None``) stays None: its caller picks the default."""
    value = extras.get(name, default)
    if value is None and default is None:
        return None
    try:
        return cast(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{connection}: extra '{name}'={value!r} is not a {cast.__name__}.") from exc


class VendorHttpHook(BaseHook):
    """Base of the HTTP vendor hooks. Connection extras (all optional):

    ``requests_per_minute`` (vendor default), ``rate_window_seconds`` (60: the sliding window the budget is
    counted over, ``requests_per_minute * window / 60`` requests per window), ``timeout_seconds`` (30),
    ``max_transient_retries`` (5), ``backoff_base_seconds`` (2), ``backoff_max_seconds`` (60),
    ``max_throttle_wait_seconds`` (900), ``rate_margin_seconds`` (1% of the window, at least 0.25: how much
    later than its slot a request may reach the vendor), ``rate_limit_account`` (defaults to the connection id: connections
    that share one vendor account must name the same account to share one bucket).

    Every request and every 429 is also counted per UTC minute and account (``request_minutes``) for the
    Reverse ETL page's rate budget; whoever owns the hook calls ``flush_request_minutes`` when done.
    """

    conn_name_attr = "vendor_conn_id"
    default_conn_name = ""
    vendor = "vendor"
    default_host = ""
    default_requests_per_minute = 100

    def __init__(self, vendor_conn_id: str | None = None) -> None:
        super().__init__()
        self.vendor_conn_id = vendor_conn_id or self.default_conn_name
        self._connection: Any = None
        self._session: Any = None
        self._limiter: AccountLimiter | None = None
        self._minutes: RequestMinutes | None = None
        self.stats = RequestStats()

    # --- connection -------------------------------------------------------------------------------------
    @property
    def connection(self):
        if self._connection is None:
            try:
                self._connection = self.get_connection(self.vendor_conn_id)
            except Exception as exc:
                raise ConfigError(
                    f"{self.vendor} connection '{self.vendor_conn_id}' is not defined. Create it in the Airflow "
                    f"UI or set AIRFLOW_CONN_{self.vendor_conn_id.upper()} (see docs/configuration.md)."
                ) from exc
        return self._connection

    @property
    def extras(self) -> dict:
        return self.connection.extra_dejson

    def extra(self, name: str, default: Any, cast: type = float) -> Any:
        return typed_extra(
            self.extras, name, default, cast, f"{self.vendor} connection '{self.vendor_conn_id}'"
        )

    @property
    def base_url(self) -> str:
        host = self.connection.host or self.default_host
        if not host:
            raise ConfigError(f"{self.vendor} connection '{self.vendor_conn_id}' needs a host (the API URL).")
        if "://" not in host:
            host = f"https://{host}"
        if self.connection.port:
            host = f"{host}:{self.connection.port}"
        return host.rstrip("/")

    def rate_spec(self) -> RateSpec:
        per_minute = self.extra("requests_per_minute", self.default_requests_per_minute)
        window = self.extra("rate_window_seconds", 60.0)
        if per_minute <= 0 or window <= 0:
            raise ConfigError(
                f"{self.vendor} connection '{self.vendor_conn_id}': requests_per_minute and rate_window_seconds "
                "must be positive."
            )
        margin = self.extra("rate_margin_seconds", None)
        if margin is not None and margin < 0:
            raise ConfigError(
                f"{self.vendor} connection '{self.vendor_conn_id}': rate_margin_seconds must be 0 or more."
            )
        return RateSpec(
            limit=max(1, round(per_minute * window / 60)), window_seconds=window, margin_seconds=margin
        )

    @property
    def limiter(self) -> AccountLimiter:
        if self._limiter is None:
            account = str(self.extras.get("rate_limit_account") or self.vendor_conn_id)
            self._limiter = AccountLimiter(f"{self.vendor.lower()}_{account}", self.rate_spec())
        return self._limiter

    @property
    def request_minutes(self) -> RequestMinutes:
        """This hook's requests and 429s per minute, in memory until a minute ends or the owner flushes."""
        if self._minutes is None:
            spec = self.limiter.spec
            self._minutes = RequestMinutes(self.limiter.account, round(spec.limit * 60 / spec.window_seconds))
        return self._minutes

    def flush_request_minutes(self) -> None:
        """Write the minutes counted so far to the state store (the load's ``finally``); never raises."""
        if self._minutes is not None:
            self._minutes.flush(last=True)

    def _sent(self, *, throttled: bool = False) -> None:
        """Count one request sent (a 429 when ``throttled``): the load's report and the minute's row."""
        self.stats.requests += 1
        self.stats.throttled += int(throttled)
        self.request_minutes.count(throttled=throttled)

    def get_conn(self):
        """A ``requests.Session`` carrying the vendor's auth headers."""
        if self._session is None:
            import requests

            session = requests.Session()
            session.headers.update({"User-Agent": "reverse-etl-airflow/0.1", "Accept": "application/json"})
            session.headers.update(self.auth_headers())
            self._session = session
        return self._session

    # --- vendor specifics -------------------------------------------------------------------------------
    def auth_headers(self) -> dict[str, str]:
        return {}

    def error_message(self, response) -> str:
        return f"HTTP {response.status_code}: {response.text[:500]}"

    def throttle_delay(self, response) -> float | None:
        """Seconds the vendor asks us to wait after a 429 (``Retry-After`` by default)."""
        value = response.headers.get("Retry-After")
        try:
            return max(0.0, float(value)) if value is not None else None
        except ValueError:
            return None

    def pause_hint(self, response) -> float:
        """Seconds to pause after a successful answer that says the budget is spent (0 = none)."""
        return 0.0

    # --- transport --------------------------------------------------------------------------------------
    def _backoff(self, attempt: int) -> float:
        """Bounded exponential backoff with jitter: half fixed, half random."""
        cap = self.extra("backoff_max_seconds", 60.0)
        delay = min(cap, self.extra("backoff_base_seconds", 2.0) * 2 ** (attempt - 1))
        return delay / 2 + random.uniform(0, delay / 2)

    def request(self, method: str, path: str, *, ok: tuple[int, ...] = (200, 201, 202, 204), **kwargs: Any):
        """Send one request, paced by the account bucket; return the response or raise a Vendor* error."""
        import requests

        url = path if path.startswith("http") else f"{self.base_url}{path}"
        session = self.get_conn()
        timeout = self.extra("timeout_seconds", 30.0)
        max_retries = self.extra("max_transient_retries", 5, int)
        max_throttle_wait = self.extra("max_throttle_wait_seconds", 900.0)
        failures = throttles = 0
        throttle_waited = 0.0
        throttled: Wait | None = None  # one progress report per wait, however many 429s or retries it spans
        retrying: Wait | None = None
        while True:
            self.stats.rate_wait_seconds += self.limiter.acquire()
            prepared = session.prepare_request(requests.Request(method, url, **kwargs))  # signed per attempt
            problem: str
            try:
                response = session.send(prepared, timeout=timeout)
            except (requests.ConnectionError, requests.Timeout) as exc:
                self._sent()
                problem = f"{type(exc).__name__}: {exc}"
            else:
                status = response.status_code
                self._sent(throttled=status == 429)
                if status == 429:
                    throttles += 1
                    delay = self.throttle_delay(response)
                    delay = self._backoff(1) if delay is None else delay + random.uniform(0, 0.25)
                    if throttle_waited + delay > max_throttle_wait:
                        raise VendorUnavailable(
                            f"{self.vendor} kept answering 429 for {throttle_waited:.0f} s on {method} {path}; "
                            f"another client may share the account '{self.vendor_conn_id}'. The task will retry.",
                            status=429,
                        )
                    log.warning("%s %s %s: 429, waiting %.1f s as told", self.vendor, method, path, delay)
                    throttle_waited += delay
                    self.stats.throttle_wait_seconds += delay
                    if throttled is None:
                        throttled = Wait(
                            f"{self.vendor} to stop throttling {method} {path} (account "
                            f"'{self.limiter.account}')",
                            max_throttle_wait,
                            logger=log,
                        )
                    throttled.sleep(
                        delay, f"{throttles} 429s on this request, the last asked for {delay:.0f} s"
                    )
                    continue
                if status not in TRANSIENT_STATUSES:
                    for waited in (throttled, retrying):
                        if waited is not None:
                            waited.done(f"{self.vendor} answered {status}")
                if status in ok:
                    pause = self.pause_hint(response)
                    if pause > 0:
                        log.info(
                            "%s: budget spent, pausing %.1f s until the window resets", self.vendor, pause
                        )
                        self.stats.throttle_wait_seconds += pause
                        Wait(
                            f"{self.vendor} account '{self.limiter.account}' budget to reset",
                            pause,
                            logger=log,
                            detail=f"the vendor said 0 requests remain; resuming at {_utc_in(pause)} UTC",
                        ).sleep(pause)
                    return response
                if status in TRANSIENT_STATUSES:
                    problem = self.error_message(response)
                else:
                    self._raise_for(method, path, response)
            failures += 1
            self.stats.transient_errors += 1
            if failures > max_retries:
                raise VendorUnavailable(
                    f"{self.vendor} at {self.base_url} failed {failures} times on {method} {path}: {problem}. "
                    f"Airflow's task retry will resume from the ledger; if it persists check the vendor's status "
                    f"and the connection '{self.vendor_conn_id}'."
                )
            delay = self._backoff(failures)
            log.warning(
                "%s %s %s: %s; retry %d/%d in %.1f s",
                self.vendor,
                method,
                path,
                problem,
                failures,
                max_retries,
                delay,
            )
            if retrying is None:
                retrying = Wait(f"{self.vendor} at {self.base_url} to answer {method} {path}", logger=log)
            retrying.sleep(delay, f"retry {failures}/{max_retries} after {problem[:200]}")

    def _raise_for(self, method: str, path: str, response) -> None:
        status = response.status_code
        message = self.error_message(response)
        try:
            body = response.json()
        except ValueError:
            body = response.text[:2000]
        if status in (401, 403):
            raise VendorAuthError(
                f"{self.vendor} refused the credentials of connection '{self.vendor_conn_id}' on {method} {path}: "
                f"{message}. Check the connection's login/password (and the account's permissions).",
                status=status,
                body=body,
            )
        if status == 404:
            raise VendorNotFound(f"{self.vendor} {method} {path}: {message}", status=status, body=body)
        raise VendorRejected(f"{self.vendor} {method} {path}: {message}", status=status, body=body)


def _utc_in(seconds: float) -> str:
    """The wall-clock time (UTC) ``seconds`` from now, for a log line."""
    return (dt.datetime.now(dt.UTC) + dt.timedelta(seconds=seconds)).strftime("%H:%M:%S")
