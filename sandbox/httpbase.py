"""Generic building blocks for local vendor API sandboxes.

Every HTTP vendor sandbox (Voucherify, Connectif, Salesfire, Data Talks) needs the same plumbing so
that our clients can be tested against real HTTP instead of mocks: a threaded stdlib server, routing,
recording of every API request, a sliding-window rate limiter, fault injection and ``/_sandbox/*``
control endpoints.  This module holds that plumbing; a vendor subclass of :class:`SandboxServer` only
registers its routes and overrides the documented hooks:

* :meth:`SandboxServer.register_routes` - add the vendor's API routes to a :class:`Router`.
* :meth:`SandboxServer.authenticate` - decide whether a request carries valid credentials.
* :meth:`SandboxServer.error_body` - the vendor's JSON error shape.
* :meth:`SandboxServer.rate_limit_headers` / :meth:`SandboxServer.throttle_headers` - the vendor's
  rate-limit headers on every response / on 429s.
* :meth:`SandboxServer.store_snapshot`, :meth:`SandboxServer.reset_store`,
  :meth:`SandboxServer.apply_config`, :meth:`SandboxServer.extra_stats`, :meth:`SandboxServer.on_start`,
  :meth:`SandboxServer.on_stop` - vendor state.

Order of processing for an API request (path under ``api_prefix``): read body -> fault rules (``drop``,
``status`` and ``throttle`` answer here, before auth and without using a rate-limit slot; ``slow`` sleeps
and goes on) -> auth (401, no slot used) -> rate limiter (429, no slot used) -> routing (404/405) ->
body size (413) -> content type (415) -> JSON parse (400) -> handler.  Control endpoints under
``/_sandbox/`` skip auth, limiter, faults and recording.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import signal
import socket
import sys
import threading
import time
import traceback
import uuid
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

HARD_BODY_CAP = 64 * 1024 * 1024  # above this the body is not even read: answer 413 and close
FAULT_KINDS = ("status", "drop", "slow", "throttle")

DEFAULT_ERROR_KEYS = {
    400: "invalid_payload",
    401: "unauthorized",
    402: "payment_required",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "duplicate_found",
    413: "payload_too_large",
    415: "unsupported_media_type",
    429: "too_many_requests",
    500: "internal_error",
    502: "bad_gateway",
    503: "service_unavailable",
    504: "gateway_timeout",
}


def status_phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


class HTTPError(Exception):
    """Raised by handlers to answer with the vendor's error body."""

    def __init__(
        self,
        status: int,
        key: str | None = None,
        message: str | None = None,
        details: str = "",
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(f"{status} {key}: {details or message}")
        self.status = status
        self.key = key or DEFAULT_ERROR_KEYS.get(status, "error")
        self.message = message or status_phrase(status)
        self.details = details
        self.headers = headers or {}
        self.extra = extra


@dataclass
class Request:
    """One parsed HTTP request as handlers see it."""

    method: str
    path: str
    query: dict[str, str]
    headers: Any  # email.message.Message: case-insensitive .get()
    raw: bytes
    request_id: str
    body: Any = None
    params: dict[str, str] = field(default_factory=dict)
    route: Route | None = None

    def header(self, name: str, default: str | None = None) -> str | None:
        return self.headers.get(name, default)


@dataclass
class Response:
    status: int = 200
    body: Any = None  # JSON-serialisable; None means an empty body
    headers: dict[str, str] = field(default_factory=dict)


Handler = Callable[[Request], Response]


@dataclass
class Route:
    method: str
    template: str  # e.g. "/v1/customers/{customerId}"; also the key for per-operation data (schemas)
    handler: Handler
    json_body: bool = False  # require application/json and parse it into Request.body
    max_bytes: int | None = None  # 413 above this
    regex: re.Pattern[str] = field(init=False)

    def __post_init__(self) -> None:
        parts = re.split(r"(\{[A-Za-z_][A-Za-z0-9_]*\})", self.template)
        pattern = "".join(f"(?P<{p[1:-1]}>[^/]+)" if p.startswith("{") else re.escape(p) for p in parts)
        self.regex = re.compile(f"^{pattern}/?$")


class Router:
    """Template routing; routes are tried in registration order, so add literal paths first."""

    def __init__(self) -> None:
        self.routes: list[Route] = []

    def add(
        self,
        method: str,
        template: str,
        handler: Handler,
        *,
        json_body: bool = False,
        max_bytes: int | None = None,
    ) -> Route:
        route = Route(method.upper(), template, handler, json_body, max_bytes)
        self.routes.append(route)
        return route

    def match(self, method: str, path: str) -> tuple[Route, dict[str, str]]:
        """Return the route and path params, or raise 404 / 405 (with the allowed methods)."""
        allowed: list[str] = []
        for route in self.routes:
            m = route.regex.match(path)
            if not m:
                continue
            if route.method == method:
                return route, {k: unquote(v) for k, v in m.groupdict().items()}
            if route.method not in allowed:
                allowed.append(route.method)
        if allowed:
            raise HTTPError(
                405,
                "method_not_allowed",
                "HTTP Method Not Allowed",
                f"{method} is not supported by this endpoint. Did you mean {' or '.join(allowed)}?",
                headers={"Allow": ", ".join(allowed)},
            )
        raise HTTPError(404, "not_found", "Resource not found", f"Cannot {method} {path}")


# --------------------------------------------------------------------------------------------- limiter
@dataclass
class RateState:
    """What the rate-limit headers need: limit, remaining slots, when the next slot is free."""

    allowed: bool
    limit: int
    remaining: int
    retry_epoch: int  # epoch seconds when the next request can be made (now if remaining > 0)
    retry_after: int  # whole seconds until a slot frees (0 if one is free now)


class SlidingWindowLimiter:
    """At most ``limit`` accepted requests in any ``window_seconds`` span (a true sliding log).

    A rejected request does not consume a slot.  Every accepted timestamp is also kept in a history so
    that :meth:`max_in_window` can prove afterwards that the limit was never exceeded.
    """

    def __init__(
        self, limit: int = 100, window_seconds: float = 60.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._lock = threading.Lock()
        self._clock = clock
        self.limit = int(limit)
        self.window = float(window_seconds)
        self._window: deque[float] = deque()
        self._history: list[float] = []

    def configure(self, limit: int | None = None, window_seconds: float | None = None) -> None:
        with self._lock:
            if limit is not None:
                self.limit = int(limit)
            if window_seconds is not None:
                self.window = float(window_seconds)

    def reset(self) -> None:
        with self._lock:
            self._window.clear()
            self._history.clear()

    def _prune(self, now: float) -> None:
        while self._window and self._window[0] <= now - self.window:
            self._window.popleft()

    def _state(self, now: float, allowed: bool) -> RateState:
        remaining = max(0, self.limit - len(self._window))
        wall = time.time()
        if remaining > 0 or not self._window:
            return RateState(allowed, self.limit, remaining, int(wall), 0)
        # the slot that frees first belongs to the (len - limit + 1)-th oldest entry
        frees_at = self._window[len(self._window) - self.limit] + self.window
        wait = max(0.0, frees_at - now)
        return RateState(allowed, self.limit, 0, math.ceil(wall + wait), max(1, math.ceil(wait)))

    def try_acquire(self) -> RateState:
        with self._lock:
            now = self._clock()
            self._prune(now)
            if len(self._window) < self.limit:
                self._window.append(now)
                self._history.append(now)
                return self._state(now, True)
            return self._state(now, False)

    def peek(self) -> RateState:
        with self._lock:
            now = self._clock()
            self._prune(now)
            return self._state(now, True)

    @property
    def accepted_total(self) -> int:
        with self._lock:
            return len(self._history)

    def max_in_window(self, window_seconds: float | None = None) -> int:
        """Largest number of accepted requests inside any half-open span [t, t + window)."""
        with self._lock:
            times = sorted(self._history)
            window = self.window if window_seconds is None else float(window_seconds)
        best, lo = 0, 0
        for hi, t in enumerate(times):
            while t - times[lo] >= window:
                lo += 1
            best = max(best, hi - lo + 1)
        return best


# ---------------------------------------------------------------------------------------------- faults
@dataclass
class FaultRule:
    """After ``skip`` matching requests, the next ``count`` matching requests get the fault."""

    kind: str
    count: int = 1
    skip: int = 0
    path_prefix: str | None = None
    method: str | None = None
    status: int = 503
    delay: float = 2.0
    retry_after: int = 1
    seen: int = 0
    fired: int = 0

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"fault kind must be one of {FAULT_KINDS}, got {self.kind!r}")
        self.count, self.skip = int(self.count), int(self.skip)
        if self.count < 1 or self.skip < 0:
            raise ValueError("fault count must be >= 1 and skip >= 0")
        self.status, self.delay, self.retry_after = int(self.status), float(self.delay), int(self.retry_after)
        if self.kind == "status" and not 400 <= self.status <= 599:
            raise ValueError("status faults need a 4xx/5xx status")
        self.method = self.method.upper() if self.method else None

    def matches(self, method: str, path: str) -> bool:
        return (self.method is None or self.method == method) and (
            self.path_prefix is None or path.startswith(self.path_prefix)
        )

    @property
    def exhausted(self) -> bool:
        return self.fired >= self.count


RULE_FIELDS = {"kind", "count", "skip", "path_prefix", "method", "status", "delay", "retry_after"}


class FaultInjector:
    """Ordered fault rules plus ``item_errors`` (source ids that bulk jobs report as per-item errors).

    A request is offered to the rules in order; each matching rule counts it, and the first one whose
    ``skip`` is used up fires (later rules do not see that request).  Exhausted rules are dropped.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rules: list[FaultRule] = []
        self._item_errors: set[str] = set()
        self.fired: Counter[str] = Counter()

    def add(self, **rule: Any) -> FaultRule:
        unknown = set(rule) - RULE_FIELDS
        if unknown:
            raise ValueError(f"unknown fault rule field(s): {sorted(unknown)}")
        parsed = FaultRule(**rule)
        with self._lock:
            self._rules.append(parsed)
        return parsed

    def add_item_errors(self, source_ids: Iterable[str]) -> None:
        with self._lock:
            self._item_errors.update(str(s) for s in source_ids)

    def is_item_error(self, source_id: Any) -> bool:
        with self._lock:
            return source_id is not None and str(source_id) in self._item_errors

    def take(self, method: str, path: str) -> FaultRule | None:
        with self._lock:
            chosen = None
            for rule in self._rules:
                if not rule.matches(method, path):
                    continue
                rule.seen += 1
                if rule.seen > rule.skip:
                    rule.fired += 1
                    chosen = rule
                    break
            if chosen is not None:
                self.fired[chosen.kind] += 1
                self._rules = [r for r in self._rules if not r.exhausted]
            return chosen

    def clear(self) -> None:
        with self._lock:
            self._rules.clear()
            self._item_errors.clear()
            self.fired.clear()

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {"rules": [asdict(r) for r in self._rules], "item_errors": sorted(self._item_errors)}


# ---------------------------------------------------------------------------------------------- server
class _DropConnection(Exception):
    """Internal: close the socket without writing any response."""


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256
    sandbox: SandboxServer

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.open_connections: set[socket.socket] = set()
        self.conn_lock = threading.Lock()
        super().__init__(*args, **kwargs)


class _RequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like the real APIs behind their load balancers
    server_version = "VendorSandbox/1.0"
    timeout = 120  # idle keep-alive connections give up their thread eventually
    disable_nagle_algorithm = True  # else Nagle + delayed ACK add ~40 ms to every keep-alive response
    wbufsize = 64 * 1024  # headers and body leave in one write; flushed after each request
    server: _HTTPServer

    def setup(self) -> None:
        super().setup()
        with self.server.conn_lock:
            self.server.open_connections.add(self.connection)

    def finish(self) -> None:
        with contextlib.suppress(OSError):
            super().finish()
        with self.server.conn_lock:
            self.server.open_connections.discard(self.connection)

    def do_GET(self) -> None:
        self.server.sandbox._serve(self)

    do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = do_GET

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.sandbox.verbose:
            sys.stderr.write(f"[{self.server.sandbox.name}] {self.address_string()} {format % args}\n")

    def read_body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            chunks, size = [], 0
            while True:
                line = self.rfile.readline(65537)
                n = int(line.split(b";")[0].strip() or b"0", 16)
                if n == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                size += n
                if size > HARD_BODY_CAP:
                    raise HTTPError(413, details=f"Payload content length greater than {HARD_BODY_CAP}")
                chunks.append(self.rfile.read(n))
                self.rfile.readline(3)
        length = int(self.headers.get("Content-Length") or 0)
        if length > HARD_BODY_CAP:
            self.close_connection = True
            raise HTTPError(413, details=f"Payload content length greater than {HARD_BODY_CAP}")
        return self.rfile.read(length) if length > 0 else b""

    def send(self, resp: Response) -> None:
        data = b"" if resp.body is None else json.dumps(resp.body).encode()
        self.send_response(resp.status)
        for name, value in resp.headers.items():
            self.send_header(name, str(value))
        if resp.status != 204 and resp.status >= 200:
            if data:
                self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if data and self.command != "HEAD":
            self.wfile.write(data)
        self.wfile.flush()

    def drop(self) -> None:
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)


class SandboxServer:
    """Base class: see the module docstring for the hooks a vendor overrides."""

    name = "sandbox"
    api_prefix = "/v1/"
    control_prefix = "/_sandbox/"
    throttle_message = "Too many requests"
    # The request log keeps each parsed body (tests read what was sent); a benchmark of a million records
    # turns it off and keeps each request's size in bytes only.
    record_bodies = True

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        limit: int = 100,
        window_seconds: float = 60.0,
        verbose: bool = False,
    ) -> None:
        self.host, self.port, self.verbose = host, int(port), verbose
        self.url: str | None = None
        self.limiter = SlidingWindowLimiter(limit, window_seconds)
        self.faults = FaultInjector()
        self.router = Router()
        self._rec_lock = threading.Lock()
        self._requests: list[dict[str, Any]] = []
        self._counters: Counter[str] = Counter()
        self._status_counts: Counter[int] = Counter()
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.register_routes(self.router)
        self._control = Router()
        self._register_control_routes(self._control)

    # ------------------------------------------------------------------------------------ vendor hooks
    def register_routes(self, router: Router) -> None:
        """Add the vendor's API routes."""

    def authenticate(self, req: Request) -> bool:
        """True if the request carries valid credentials; False answers 401."""
        return True

    def error_body(
        self, status: int, key: str, message: str, details: str, request_id: str, extra: dict[str, Any]
    ) -> Any:
        """The vendor's JSON error shape."""
        return {
            "code": status,
            "key": key,
            "message": message,
            "details": details,
            "request_id": request_id,
            **extra,
        }

    def rate_limit_headers(self, state: RateState) -> dict[str, str]:
        """Headers put on every API response (state after this request was counted)."""
        return {}

    def throttle_headers(self, retry_after: int) -> dict[str, str]:
        """Extra headers on a 429 (limiter or throttle fault)."""
        return {"Retry-After": str(retry_after)}

    def new_request_id(self) -> str:
        return uuid.uuid4().hex

    def store_snapshot(self) -> Any:
        return {}

    def reset_store(self) -> None:
        """Clear vendor state (objects, async jobs)."""

    def apply_config(self, config: dict[str, Any]) -> dict[str, Any]:
        """Apply vendor-specific runtime settings; return the vendor part of the current config."""
        return {}

    def extra_stats(self) -> dict[str, Any]:
        return {}

    def on_start(self) -> None:
        """Called before the server starts accepting (start worker threads here)."""

    def on_stop(self) -> None:
        """Called after the server stopped."""

    # -------------------------------------------------------------------------------------- lifecycle
    def start(self) -> str:
        """Bind (port 0 = any free port), serve in a daemon thread and return the base URL."""
        if self._httpd is not None:
            return self.url or ""
        httpd = _HTTPServer((self.host, self.port), _RequestHandler)
        httpd.sandbox = self
        self._httpd = httpd
        self.port = httpd.server_address[1]
        self.url = f"http://{self.host}:{self.port}"
        self.on_start()
        self._thread = threading.Thread(
            target=httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"{self.name}-sandbox",
            daemon=True,
        )
        self._thread.start()
        return self.url

    def stop(self) -> None:
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        httpd.shutdown()
        httpd.server_close()
        with httpd.conn_lock:  # keep-alive connections would otherwise keep being served
            for conn in list(httpd.open_connections):
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.on_stop()

    def __enter__(self) -> SandboxServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def serve_until_signalled(self, banner: str = "{name} sandbox listening on {url}") -> None:
        """Run in the foreground until SIGTERM/SIGINT (for CLIs); ``banner`` may use {url} and {name}.

        The handler only appends to a list: setting a ``threading.Event`` from a handler deadlocks when the
        signal lands while the main thread holds the event's lock inside ``Event.wait``."""
        received: list[int] = []
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda signum, _frame: received.append(signum))
        self.start()
        print(banner.format(url=self.url, name=self.name), flush=True)
        try:
            while not received:
                time.sleep(0.2)
        finally:
            self.stop()

    # ------------------------------------------------------------------------------------ test API
    @property
    def requests(self) -> list[dict[str, Any]]:
        with self._rec_lock:
            return [dict(r) for r in self._requests]

    def inject(
        self, kind: str | None = None, *, item_errors: Iterable[str] | None = None, **rule: Any
    ) -> FaultRule | None:
        """Add a fault rule (``kind`` + rule fields) and/or per-item error source ids."""
        if item_errors is not None:
            self.faults.add_item_errors(item_errors)
        if kind is None:
            if rule:
                raise ValueError("a fault rule needs a kind")
            return None
        return self.faults.add(kind=kind, **rule)

    def clear_faults(self) -> None:
        self.faults.clear()

    def configure(self, **config: Any) -> dict[str, Any]:
        """Change limit / window_seconds (alias window) and vendor settings at runtime."""
        config = dict(config)
        window = config.pop("window_seconds", config.pop("window", None))
        limit = config.pop("limit", None)
        if (limit is not None and int(limit) < 1) or (window is not None and float(window) <= 0):
            raise ValueError("limit must be >= 1 and window_seconds > 0")
        self.limiter.configure(limit, window)
        vendor = self.apply_config(config)
        return {"limit": self.limiter.limit, "window_seconds": self.limiter.window, **vendor}

    def reset(self, limit: int | None = None, window_seconds: float | None = None) -> None:
        """Clear store, recorded requests, counters, faults and the limiter."""
        with self._rec_lock:
            self._requests.clear()
            self._counters.clear()
            self._status_counts.clear()
        self.faults.clear()
        self.limiter.reset()
        self.configure(limit=limit, window_seconds=window_seconds)
        self.reset_store()

    def max_in_window(self, window_seconds: float | None = None) -> int:
        return self.limiter.max_in_window(window_seconds)

    def stats(self) -> dict[str, Any]:
        with self._rec_lock:
            counters = dict(self._counters)
            statuses = {str(k): v for k, v in sorted(self._status_counts.items())}
        return {
            "requests_total": counters.get("requests", 0),
            "accepted_by_limiter": self.limiter.accepted_total,
            "throttled_by_limiter": counters.get("limiter_429", 0),
            "throttled_by_fault": counters.get("fault_429", 0),
            "faults_fired": dict(self.faults.fired),
            "status_counts": statuses,
            "limit": self.limiter.limit,
            "window_seconds": self.limiter.window,
            "max_in_window": self.limiter.max_in_window(),
            **self.extra_stats(),
        }

    # --------------------------------------------------------------------------------- request flow
    def error_response(self, err: HTTPError, request_id: str) -> Response:
        body = self.error_body(err.status, err.key, err.message, err.details, request_id, err.extra)
        return Response(err.status, body, dict(err.headers))

    def _throttled(self, retry_after: int, request_id: str, details: str) -> Response:
        err = HTTPError(429, "too_many_requests", self.throttle_message, details)
        resp = self.error_response(err, request_id)
        resp.headers.update(self.throttle_headers(retry_after))
        return resp

    def _serve(self, h: _RequestHandler) -> None:
        split = urlsplit(h.path)
        path, query = split.path, dict(parse_qsl(split.query, keep_blank_values=True))
        if path.startswith(self.control_prefix):
            self._serve_control(h, path, query)
        else:
            self._serve_api(h, path, query)

    def _serve_api(self, h: _RequestHandler, path: str, query: dict[str, str]) -> None:
        t = time.time()
        method = h.command
        request_id = self.new_request_id()
        record: dict[str, Any] = {
            "t": t,
            "method": method,
            "path": path,
            "query": query,
            "status": None,
            "body": None,
            "bytes": 0,
            "throttled": False,
            "fault": None,
        }
        state: RateState | None = None
        try:
            raw = h.read_body()  # may raise 413 when the body is too large to read at all
            record["bytes"] = len(raw)
            record["body"] = _maybe_json(raw) if self.record_bodies else None
            req = Request(method, path, query, h.headers, raw, request_id)
            resp, state = self._process(req, record)
        except _DropConnection:
            self._record(record)
            h.drop()
            if self.verbose:
                sys.stderr.write(f"[{self.name}] {method} {path} -> dropped\n")
            return
        except HTTPError as err:
            resp = self.error_response(err, request_id)
        except Exception as exc:  # a sandbox bug must still answer like a server would
            traceback.print_exc()
            resp = self.error_response(
                HTTPError(500, "internal_error", "Internal Server Error", repr(exc)), request_id
            )
        resp.headers = {**self.rate_limit_headers(state or self.limiter.peek()), **resp.headers}
        record["status"] = resp.status
        record["answered"] = time.time()
        if resp.status == 429:
            record["throttled"] = True
        self._record(record)
        try:
            h.send(resp)
        except OSError:
            h.close_connection = True

    def _process(self, req: Request, record: dict[str, Any]) -> tuple[Response, RateState | None]:
        fault = self.faults.take(req.method, req.path)
        if fault is not None:
            record["fault"] = fault.kind
            if fault.kind == "drop":
                raise _DropConnection
            if fault.kind == "status":
                err = HTTPError(fault.status, details="Injected by the sandbox fault rules")
                return self.error_response(err, req.request_id), None
            if fault.kind == "throttle":
                self._count("fault_429")
                state = self.limiter.peek()
                state = RateState(
                    False, state.limit, 0, int(time.time()) + fault.retry_after, fault.retry_after
                )
                return self._throttled(fault.retry_after, req.request_id, "Injected throttle"), state
            time.sleep(fault.delay)  # slow: then go on normally
        if not self.authenticate(req):
            raise HTTPError(401, "unauthorized", "Unauthorized", "Cannot authenticate with given credentials")
        state = self.limiter.try_acquire()
        if not state.allowed:
            self._count("limiter_429")
            details = f"Limit of {state.limit} requests per {self.limiter.window:g} s reached"
            return self._throttled(state.retry_after, req.request_id, details), state
        try:
            route, params = self.router.match(req.method, req.path)
            req.route, req.params = route, params
            if route.max_bytes is not None and len(req.raw) > route.max_bytes:
                raise HTTPError(
                    413, details=f"Payload content length greater than maximum allowed: {route.max_bytes}"
                )
            if route.json_body:
                req.body = self._parse_json(req)
            return route.handler(req), state
        except HTTPError as err:
            return self.error_response(err, req.request_id), state

    @staticmethod
    def _parse_json(req: Request) -> Any:
        ctype = (req.header("Content-Type") or "").split(";")[0].strip().lower()
        if not req.raw:
            raise HTTPError(400, "invalid_payload", "Invalid payload", "Request body is required")
        if ctype != "application/json" and not ctype.endswith("+json"):
            raise HTTPError(
                415,
                "unsupported_media_type",
                "Unsupported Media Type",
                f"Content-Type {ctype or '(none)'} is not supported, use application/json",
            )
        try:
            return json.loads(req.raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise HTTPError(400, "invalid_payload", "Invalid payload", f"Malformed JSON: {exc}") from None

    def _count(self, name: str) -> None:
        with self._rec_lock:
            self._counters[name] += 1

    def _record(self, record: dict[str, Any]) -> None:
        with self._rec_lock:
            self._requests.append(record)
            self._counters["requests"] += 1
            if record["status"] is not None:
                self._status_counts[record["status"]] += 1

    # -------------------------------------------------------------------------------- control routes
    def _serve_control(self, h: _RequestHandler, path: str, query: dict[str, str]) -> None:
        request_id = self.new_request_id()
        try:
            raw = h.read_body()
            req = Request(h.command, path, query, h.headers, raw, request_id)
            route, req.params = self._control.match(h.command, path)
            req.body = _maybe_json(raw) if raw else None
            if raw and req.body is None:
                raise HTTPError(400, "invalid_payload", "Invalid payload", "Body must be JSON")
            resp = route.handler(req)
        except HTTPError as err:
            resp = self.error_response(err, request_id)
        except (TypeError, ValueError) as exc:
            resp = self.error_response(
                HTTPError(400, "invalid_payload", "Invalid payload", str(exc)), request_id
            )
        try:
            h.send(resp)
        except OSError:
            h.close_connection = True

    def _register_control_routes(self, r: Router) -> None:
        p = self.control_prefix
        r.add("GET", f"{p}store", lambda req: Response(200, self.store_snapshot()))
        r.add("GET", f"{p}requests", lambda req: Response(200, self.requests))
        r.add("GET", f"{p}stats", lambda req: Response(200, self.stats()))
        r.add("GET", f"{p}faults", lambda req: Response(200, self.faults.snapshot()))
        r.add("POST", f"{p}faults", self._ctl_add_faults)
        r.add("DELETE", f"{p}faults", self._ctl_clear_faults)
        r.add("POST", f"{p}reset", self._ctl_reset)
        r.add("GET", f"{p}config", lambda req: Response(200, self.configure()))
        r.add("POST", f"{p}config", lambda req: Response(200, self.configure(**_obj(req.body))))

    def _ctl_add_faults(self, req: Request) -> Response:
        """Body: a rule, a list of rules, or {"rules": [...], "item_errors": [...], "replace": bool}."""
        body = req.body
        if isinstance(body, list):
            body = {"rules": body}
        body = _obj(body)
        if "kind" in body:
            body = {"rules": [body]}
        if body.get("replace"):
            self.faults.clear()
        rules = body.get("rules") or []
        if not isinstance(rules, list) or not all(isinstance(x, dict) for x in rules):
            raise ValueError("rules must be a list of objects")
        for rule in rules:
            self.faults.add(**rule)
        if body.get("item_errors") is not None:
            self.faults.add_item_errors(body["item_errors"])
        return Response(200, self.faults.snapshot())

    def _ctl_clear_faults(self, req: Request) -> Response:
        self.clear_faults()
        return Response(200, self.faults.snapshot())

    def _ctl_reset(self, req: Request) -> Response:
        body = _obj(req.body)
        self.reset(limit=body.get("limit"), window_seconds=body.get("window_seconds", body.get("window")))
        return Response(200, {"reset": True, **self.configure()})


def _obj(body: Any) -> dict[str, Any]:
    if body is None:
        return {}
    if not isinstance(body, dict):
        raise ValueError("body must be a JSON object")
    return body


def _maybe_json(raw: bytes) -> Any:
    if not raw:
        return None
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
