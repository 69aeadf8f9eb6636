"""Local Salesfire customer-sync API sandbox that follows Salesfire's documented contract.

Why: our Salesfire client must be tested against something that behaves like the real API - one signed
``POST /client/{site}/customers/{list}`` per customer, the documented field rules, upserts into the list
- without touching a real Salesfire account.  Source: docs/destinations/salesfire.md
(help.salesfire.co.uk).  The public docs leave a lot UNKNOWN (status codes, body shapes, bulk, rate limits, update semantics); each of
those is a constructor option (also settable at runtime with :meth:`SalesfireSandbox.configure` or
``POST /_sandbox/config``) whose default is the *strictest plausible* reading, so a client that passes
here should pass against the real API.  The UNKNOWN / INFERRED points are listed in the class docstring.

Run it: ``python -m sandbox.salesfire --port 8011 --list site-1/list-a=secret-a --list
site-1/list-b=secret-b`` (``--help`` lists every knob); in tests use ``SalesfireSandbox(port=0, lists={...})`` as a context manager.
Generic plumbing (recording, limiter, faults, ``/_sandbox/*``) lives in :mod:`sandbox.httpbase`.
"""

from __future__ import annotations

import base64
import copy
import datetime as dt
import hashlib
import hmac
import json
import re
import threading
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from sandbox.httpbase import HTTPError, RateState, Request, Response, Router, SandboxServer

CUSTOMERS_ROUTE = "/client/{site}/customers/{list}"
SIGNATURE_HEADER = "X-Signature"
DEFAULT_LISTS: dict[tuple[str, str], str] = {("site-1", "list-a"): "secret-a"}
UNLIMITED = 2**62  # limiter size used when no rate limit is configured (limit=None)

# FACT [S1]: the request body's fields.  Anything else is "unknown" (see ``unknown_fields``).
KNOWN_FIELDS = ("email", "mobile_number", "types", "channels", "update_existing", "attributes")
STORED_FIELDS = ("email", "mobile_number", "types", "channels", "attributes")
TYPES = ("MARKETING", "TRANSACTIONAL")  # uppercase only
CHANNELS = ("EMAIL", "SMS")  # uppercase only
ATTRIBUTE_KEY = re.compile(r"^[a-z][a-z0-9_]*$")  # lowercase snake_case, starts with a letter
DATE_OF_BIRTH = "date_of_birth"

# The documented date_of_birth examples, written as patterns: DD / MM = two digits (zero-padded),
# D / M = one or two digits without a leading zero, YYYY / YY = four / two digits; anything else is
# literal.  Each example maps to exactly one pattern (04-09-1994 -> DD-MM-YYYY, 4-9-94 -> D-M-YY), i.e.
# what a PHP/Laravel ``date_format:d-m-Y,d/m/Y,dmY,j-n-y,j/n/y,Y-m-d,Y/m/d`` rule accepts.  Mixed shapes
# such as ``04-09-94`` or ``4-9-1994`` are refused by default (UNKNOWN whether Salesfire takes them);
# pass ``date_of_birth_formats=`` to widen.  Day-first throughout; impossible dates (31-02-1994) refused.
DOB_FORMATS = ("DD-MM-YYYY", "DD/MM/YYYY", "DDMMYYYY", "D-M-YY", "D/M/YY", "YYYY-MM-DD", "YYYY/MM/DD")
DOB_EXAMPLES = ("04-09-1994", "04/09/1994", "04091994", "4-9-94", "4/9/94", "1994-09-04", "1994/09/04")
_DOB_TOKENS = {
    "YYYY": r"(?P<y>\d{4})",
    "YY": r"(?P<y>\d{2})",
    "MM": r"(?P<m>0[1-9]|1[0-2])",
    "M": r"(?P<m>1[0-2]|[1-9])",
    "DD": r"(?P<d>0[1-9]|[12]\d|3[01])",
    "D": r"(?P<d>[12]\d|3[01]|[1-9])",
}
_DOB_TOKEN_RE = re.compile("|".join(sorted(_DOB_TOKENS, key=len, reverse=True)))

# Pragmatic address check (ASCII local part of dot-atoms, a dotted domain with a letter TLD, RFC
# lengths): stricter than Laravel's default ``email`` rule, so addresses we accept are accepted there.
_EMAIL_RE = re.compile(
    r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}$"
)

VALIDATION_MESSAGE = "The given data was invalid."
# How update_existing acts on an existing profile.  "documented" (default) follows the page's words:
# "If you choose to update existing profiles, the system will skip duplicates" - true leaves an existing
# profile unchanged, false updates it.
# "true_updates" is the other reading of "update existing profiles (yes/no)": true updates, false skips.
UPDATE_SEMANTICS = ("documented", "true_updates", "always", "never")
SIGNATURE_ENCODINGS = ("hex", "base64")


def sign(secret: str, body: bytes, encoding: str = "hex") -> str:
    """The ``X-Signature`` value: HMAC-SHA-256 of the exact body bytes keyed with the list's secret
    (UTF-8), as lowercase hex (default) or standard padded base64."""
    digest = hmac.new(secret.encode("utf-8"), body, hashlib.sha256)
    if encoding == "base64":
        return base64.b64encode(digest.digest()).decode("ascii")
    if encoding == "hex":
        return digest.hexdigest()
    raise ValueError(f"signature encoding must be one of {SIGNATURE_ENCODINGS}, got {encoding!r}")


def compile_dob_format(fmt: str) -> re.Pattern[str]:
    """``"D-M-YY"`` -> a full-match regex with groups d, m, y (see ``DOB_FORMATS``)."""
    parts, pos = [], 0
    for m in _DOB_TOKEN_RE.finditer(fmt):
        parts.append(re.escape(fmt[pos : m.start()]) + _DOB_TOKENS[m.group()])
        pos = m.end()
    parts.append(re.escape(fmt[pos:]))
    pattern = "".join(parts)
    if not all(f"(?P<{g}>" in pattern for g in "dmy") or any(pattern.count(f"(?P<{g}>") > 1 for g in "dmy"):
        raise ValueError(f"date_of_birth format {fmt!r} needs exactly one day, month and year token")
    return re.compile(pattern)


def parse_dob(value: str, formats: Iterable[re.Pattern[str]]) -> dt.date | None:
    """The date if ``value`` matches one of the formats and is a real calendar date, else None."""
    for pattern in formats:
        m = pattern.fullmatch(value)
        if not m:
            continue
        year = int(m["y"])
        if len(m["y"]) == 2:  # PHP's "y" pivot: 70-99 -> 19xx, 00-69 -> 20xx
            year += 1900 if year >= 70 else 2000
        try:
            return dt.date(year, int(m["m"]), int(m["d"]))
        except ValueError:
            continue
    return None


def _label(field: str) -> str:
    """Laravel's attribute label: ``mobile_number`` -> ``mobile number``."""
    return field.replace("_", " ")


def parse_list_spec(spec: str) -> tuple[tuple[str, str], str]:
    """CLI ``site-1/list-a=secret-a`` -> (("site-1", "list-a"), "secret-a")."""
    name, sep, secret = spec.partition("=")
    site, slash, list_id = name.partition("/")
    if not sep or not slash or not site or not list_id or "/" in list_id or not secret:
        raise ValueError(f"list must look like SITE/LIST=SECRET, got {spec!r}")
    return (site, list_id), secret


def _normalise_lists(lists: Mapping[Any, str] | None) -> dict[tuple[str, str], str]:
    """Keys may be ("site", "list") tuples or "site/list" strings; values are the secrets."""
    out: dict[tuple[str, str], str] = {}
    for key, secret in (DEFAULT_LISTS if lists is None else lists).items():
        if isinstance(key, str):
            (site, list_id), _ = parse_list_spec(f"{key}={secret}")
        else:
            site, list_id = key
        if not isinstance(secret, str) or not secret:
            raise ValueError(f"the secret of list {site}/{list_id} must be a non-empty string")
        out[(str(site), str(list_id))] = secret
    return out


def _status(value: Any, name: str, lo: int, hi: int) -> int:
    status = int(value)
    if not lo <= status <= hi:
        raise ValueError(f"{name} must be between {lo} and {hi}, got {status}")
    return status


def _choice(value: Any, name: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")
    return value


class SalesfireSandbox(SandboxServer):
    """Salesfire's ``POST /client/{site}/customers/{list}`` over real HTTP.

    Processing order of an API request: fault rules (base) -> routing (404 unknown path, 405 other
    method) -> unknown site/list (404) -> ``X-Signature`` check on the raw body (401) -> rate limiter
    (429, only when ``limit`` is set) -> Content-Type (415) -> JSON (400) -> array body (422) ->
    field validation (422) -> upsert -> ``200 {"success": true}``.  Routing runs before the signature
    check because the key is the list's secret, chosen by the path; none of 404/405/401 uses a
    rate-limit slot.

    FACT (docs): the endpoint; ``X-Signature`` = HMAC-SHA-256 of the body keyed with the list's secret;
    the field rules (at least one of email / mobile_number; types ⊆ {MARKETING, TRANSACTIONAL} and
    channels ⊆ {EMAIL, SMS}, uppercase only; update_existing bool; attributes keys lowercase snake_case,
    values string or null; the date_of_birth formats by example); "validation error messages" exist.

    UNKNOWN / INFERRED, each an option (constructor keyword and runtime config key) - default first:

    * ``signature_encoding`` - ``"hex"`` (INFERRED: lowercase hex) or ``"base64"`` (standard, padded).
      ``accept_uppercase_hex`` - False: hex is compared case-sensitively against lowercase hex.
      No timestamp / nonce is documented, so none is checked.  Secrets are used as UTF-8 bytes.
    * ``auth_failure_status`` - 401 (could be 403) for a missing or wrong signature.
    * ``validation_status`` - 422 with the Laravel-style body
      ``{"message": "The given data was invalid.", "errors": {"<field>": ["<message>"]}}``; nested
      fields are named Laravel-style (``types.0``, ``attributes.date_of_birth``).  Every other error is
      ``{"message": "..."}``.  Debug detail (not vendor behaviour) goes to the ``X-Sandbox-Detail`` header.
    * ``array_body_status`` - 422: bulk is undocumented and every example is one object, so an array
      body is refused as "one customer per request" (validation body, field ``body``).
    * ``require_json_content_type`` - True: a body without ``Content-Type: application/json`` is 415
      (a Laravel API would not parse it as JSON at all).  Malformed JSON is 400.
    * ``unknown_fields`` - ``"reject"``: a top-level field the page does not list answers 422 naming
      it (strictest reading: a client must send only the documented fields); ``"ignore"`` accepts and
      drops them (what a Laravel validator does with unvalidated keys).
    * ``mobile_number_pattern`` - None: the format is unspecified, any non-empty string is accepted;
      a regex string makes it a full-match rule.  (A JSON number is refused: the documented type is string.)
    * ``allowed_attributes`` - None: any snake_case key (the docs say the defaults *include* name and
      date_of_birth); a collection of names restricts keys to those configured in the "dashboard".
    * ``date_of_birth_formats`` - ``DOB_FORMATS``, the documented examples exactly (see there).
    * Null / empty values: a present ``email`` or ``mobile_number`` must be a non-empty string (null
      is refused; leave the key out instead), ``types`` / ``channels`` / ``attributes`` /
      ``update_existing`` must not be null; attribute *values* may be null (documented).
    * Upsert key (INFERRED): per (site, list) the email, else the mobile_number.
      ``email_key_case_insensitive`` - True: ``A@x.com`` and ``a@x.com`` are one customer.
    * ``update_semantics`` - the page says "If you choose to update existing profiles, the system will
      skip duplicates": ambiguous against the field's name and "Option to update existing profiles".  ``"documented"`` (default) follows those words: ``update_existing: true`` leaves an
      existing profile unchanged (a skipped duplicate), false updates it; ``"true_updates"`` is the
      other reading (true merges into the existing profile, false skips it); ``"always"``: every POST
      updates; ``"never"``: an existing profile is never changed.  ``update_existing_default`` - False:
      what an absent ``update_existing`` means.  An update replaces the given top-level fields and
      merges ``attributes`` key by key (a null value is stored as null).
    * ``success_status`` / ``success_body`` - ``200`` / ``{"success": true}``, also for a skipped duplicate.
    * Rate limit - none documented: ``limit=None`` is unlimited (no rate-limit headers).  With a limit
      (INFERRED, Laravel throttle style): sliding window, ``X-RateLimit-Limit`` / ``X-RateLimit-Remaining``
      on every API response, 429 ``{"message": "Too Many Attempts."}`` with ``Retry-After`` and
      ``X-RateLimit-Reset`` (epoch seconds).  ``configure(unlimited=True)`` removes a limit again.

    Readback: :attr:`store` is ``{"site/list": {key: {...customer..., "_posts": n, "_updates": u,
    "_skipped": s}}}`` for every configured list; ``_posts`` counts accepted POSTs for that key
    (``_posts == 1`` proves exactly-once delivery), ``_updates`` the ones that changed an existing
    profile, ``_skipped`` the duplicates left unchanged.
    """

    name = "salesfire"
    api_prefix = "/client/"
    throttle_message = "Too Many Attempts."

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        limit: int | None = None,
        window_seconds: float = 60.0,
        lists: Mapping[Any, str] | None = None,
        signature_encoding: str = "hex",
        *,
        accept_uppercase_hex: bool = False,
        auth_failure_status: int = 401,
        validation_status: int = 422,
        array_body_status: int = 422,
        require_json_content_type: bool = True,
        unknown_fields: str = "reject",
        mobile_number_pattern: str | None = None,
        allowed_attributes: Iterable[str] | None = None,
        date_of_birth_formats: Iterable[str] = DOB_FORMATS,
        email_key_case_insensitive: bool = True,
        update_semantics: str = "documented",
        update_existing_default: bool = False,
        success_status: int = 200,
        success_body: Any = None,
        verbose: bool = False,
    ) -> None:
        self._lock = threading.RLock()
        self.lists: dict[tuple[str, str], str] = _normalise_lists(lists)
        self._customers: dict[tuple[str, str], dict[str, dict[str, Any]]] = {}
        self._tally: Counter[str] = Counter()
        self.unlimited = limit is None
        self._options: dict[str, Any] = {}
        self._set_options(
            signature_encoding=signature_encoding,
            accept_uppercase_hex=accept_uppercase_hex,
            auth_failure_status=auth_failure_status,
            validation_status=validation_status,
            array_body_status=array_body_status,
            require_json_content_type=require_json_content_type,
            unknown_fields=unknown_fields,
            mobile_number_pattern=mobile_number_pattern,
            allowed_attributes=allowed_attributes,
            date_of_birth_formats=date_of_birth_formats,
            email_key_case_insensitive=email_key_case_insensitive,
            update_semantics=update_semantics,
            update_existing_default=update_existing_default,
            success_status=success_status,
            success_body={"success": True} if success_body is None else success_body,
        )
        super().__init__(
            host,
            port,
            limit=UNLIMITED if limit is None else limit,
            window_seconds=window_seconds,
            verbose=verbose,
        )

    # ---------------------------------------------------------------------------------------- options
    _CONVERTERS: dict[str, Any] = {
        "signature_encoding": lambda v: _choice(v, "signature_encoding", SIGNATURE_ENCODINGS),
        "accept_uppercase_hex": bool,
        "auth_failure_status": lambda v: _status(v, "auth_failure_status", 400, 499),
        "validation_status": lambda v: _status(v, "validation_status", 400, 499),
        "array_body_status": lambda v: _status(v, "array_body_status", 400, 499),
        "require_json_content_type": bool,
        "unknown_fields": lambda v: _choice(v, "unknown_fields", ("ignore", "reject")),
        "mobile_number_pattern": lambda v: None if v is None else re.compile(v).pattern,
        "allowed_attributes": lambda v: None if v is None else sorted(set(v)),
        "date_of_birth_formats": lambda v: [str(f) for f in ([v] if isinstance(v, str) else v)],
        "email_key_case_insensitive": bool,
        "update_semantics": lambda v: _choice(v, "update_semantics", UPDATE_SEMANTICS),
        "update_existing_default": bool,
        "success_status": lambda v: _status(v, "success_status", 200, 299),
        "success_body": copy.deepcopy,
    }

    def _set_options(self, **options: Any) -> None:
        converted = {name: self._CONVERTERS[name](value) for name, value in options.items()}
        if "date_of_birth_formats" in converted:
            formats = converted["date_of_birth_formats"]
            if not formats:
                raise ValueError("date_of_birth_formats must name at least one format")
            compiled = [compile_dob_format(f) for f in formats]
        bad = [k for k in converted.get("allowed_attributes") or [] if not ATTRIBUTE_KEY.fullmatch(k)]
        if bad:
            raise ValueError(f"allowed_attributes must be lowercase snake_case, got {bad}")
        with self._lock:
            self._options.update(converted)
            if "date_of_birth_formats" in converted:
                self._dob_patterns = compiled
            if "mobile_number_pattern" in converted:
                pattern = converted["mobile_number_pattern"]
                self._mobile_re = None if pattern is None else re.compile(pattern)

    def option(self, name: str) -> Any:
        with self._lock:
            return copy.deepcopy(self._options[name])

    def __getattr__(self, name: str) -> Any:
        # options read as attributes: sb.signature_encoding, sb.validation_status, ...
        options = self.__dict__.get("_options")
        if options is not None and name in options:
            return options[name]
        raise AttributeError(name)

    def add_list(self, site: str, list_id: str, secret: str) -> None:
        """Add (or re-key) a customer list."""
        lists = _normalise_lists({(site, list_id): secret})
        with self._lock:
            self.lists.update(lists)

    def configure(self, **config: Any) -> dict[str, Any]:
        """Runtime settings: ``limit`` / ``window_seconds`` (a limit switches rate limiting on),
        ``unlimited=True`` (switch it off), ``lists`` (``{"site/list": secret}``, replaces all) and
        every option named in the class docstring."""
        config = dict(config)
        unlimited = config.pop("unlimited", None)
        new_state = self.unlimited
        if config.get("limit") is not None:
            if unlimited:
                raise ValueError("pass either unlimited=True or a limit, not both")
            new_state = False
        elif unlimited is not None:
            new_state = bool(unlimited)
            if new_state:
                config["limit"] = UNLIMITED
        out = super().configure(**config)  # raises on a bad limit / window / option before we switch
        self.unlimited = new_state
        if self.unlimited:
            out["limit"] = None
        return out

    # ------------------------------------------------------------------------------------------ hooks
    def register_routes(self, r: Router) -> None:
        r.add("POST", CUSTOMERS_ROUTE, self._post_customer)

    def authenticate(self, req: Request) -> bool:
        """Route first (404/405), then the list (404), then the signature over the raw bytes."""
        _route, params = self.router.match(req.method, req.path)
        key = (params["site"], params["list"])
        with self._lock:
            secret = self.lists.get(key)
            encoding = self._options["signature_encoding"]
            uppercase_ok = self._options["accept_uppercase_hex"]
            status = self._options["auth_failure_status"]
        if secret is None:
            raise HTTPError(
                404, "not_found", "Customer list not found.", f"No list {key[1]!r} for site {key[0]!r}"
            )
        provided = req.header(SIGNATURE_HEADER)
        if provided is None or not provided.strip():
            self._bump("signature_failures")
            raise HTTPError(status, message="Missing signature.", details=f"No {SIGNATURE_HEADER} header")
        provided = provided.strip()
        if encoding == "hex" and uppercase_ok:
            provided = provided.lower()
        expected = sign(secret, req.raw, encoding)
        if not hmac.compare_digest(provided.encode("utf-8", "surrogateescape"), expected.encode("ascii")):
            self._bump("signature_failures")
            raise HTTPError(
                status,
                message="Invalid signature.",
                details=f"{SIGNATURE_HEADER} is not the {encoding} HMAC-SHA-256 of the body bytes "
                f"({len(req.raw)} bytes) keyed with the secret of list {key[0]}/{key[1]}",
            )
        return True

    def error_body(
        self, status: int, key: str, message: str, details: str, request_id: str, extra: dict[str, Any]
    ) -> Any:
        body: dict[str, Any] = {"message": message}
        if "errors" in extra:
            body["errors"] = extra["errors"]
        return body

    def error_response(self, err: HTTPError, request_id: str) -> Response:
        resp = super().error_response(err, request_id)
        if err.details:  # sandbox debugging aid, not vendor behaviour; header-safe ASCII on one line
            detail = err.details.encode("ascii", "backslashreplace").decode("ascii")
            resp.headers.setdefault("X-Sandbox-Detail", " ".join(detail.split())[:500])
        return resp

    def rate_limit_headers(self, state: RateState) -> dict[str, str]:
        if self.unlimited:
            return {}
        return {"X-RateLimit-Limit": str(state.limit), "X-RateLimit-Remaining": str(state.remaining)}

    def throttle_headers(self, retry_after: int) -> dict[str, str]:
        return {"Retry-After": str(retry_after), "X-RateLimit-Reset": str(int(time.time()) + retry_after)}

    def store_snapshot(self) -> dict[str, dict[str, dict[str, Any]]]:
        with self._lock:
            return {
                f"{site}/{list_id}": copy.deepcopy(self._customers.get((site, list_id), {}))
                for site, list_id in self.lists
            }

    @property
    def store(self) -> dict[str, dict[str, dict[str, Any]]]:
        """Thread-safe deep copy: ``{"site/list": {email_or_mobile: {...customer..., "_posts": n}}}``."""
        return self.store_snapshot()

    def customer(self, site: str, list_id: str, key: str) -> dict[str, Any] | None:
        """One stored customer by upsert key (email - lowercased by default - or mobile_number)."""
        with self._lock:
            found = self._customers.get((site, list_id), {}).get(self._norm_key(key))
            return copy.deepcopy(found)

    def post_counts(self) -> dict[str, dict[str, int]]:
        """``{"site/list": {key: accepted POSTs}}`` - every value 1 means exactly-once delivery."""
        return {
            name: {key: c["_posts"] for key, c in customers.items()}
            for name, customers in self.store_snapshot().items()
        }

    def reset_store(self) -> None:
        with self._lock:
            self._customers.clear()
            self._tally.clear()

    def apply_config(self, config: dict[str, Any]) -> dict[str, Any]:
        config = dict(config)
        lists = config.pop("lists", None)
        unknown = set(config) - set(self._CONVERTERS)
        if unknown:
            raise ValueError(f"unknown config key(s): {sorted(unknown)}")
        new_lists = None if lists is None else _normalise_lists(lists)
        self._set_options(**config)
        with self._lock:
            if new_lists is not None:
                self.lists = new_lists
            out = copy.deepcopy(self._options)
            out["lists"] = sorted(f"{site}/{list_id}" for site, list_id in self.lists)
        return out

    def stats(self) -> dict[str, Any]:
        out = super().stats()
        if self.unlimited:
            out["limit"] = None
        return out

    def extra_stats(self) -> dict[str, Any]:
        with self._lock:
            tally = dict(self._tally)
            counts = {f"{s}/{lst}": len(self._customers.get((s, lst), {})) for s, lst in self.lists}
        return {
            "store_counts": counts,
            "customers_created": tally.get("created", 0),
            "customers_updated": tally.get("updated", 0),
            "skipped_duplicates": tally.get("skipped", 0),
            "validation_failures": tally.get("validation_failures", 0),
            "signature_failures": tally.get("signature_failures", 0),
        }

    def __enter__(self) -> SalesfireSandbox:
        self.start()
        return self

    # --------------------------------------------------------------------------------------- handler
    def _post_customer(self, req: Request) -> Response:
        with self._lock:
            opts = dict(self._options)
        body = self._parse_body(req, opts)
        if isinstance(body, list):
            self._bump("validation_failures")
            message = "One customer per request: send a single JSON object, not an array."
            raise HTTPError(
                opts["array_body_status"],
                "validation_error",
                VALIDATION_MESSAGE,
                message,
                errors={"body": [message]},
            )
        if not isinstance(body, dict):
            self._reject(opts, {"body": ["The request body must be a JSON object (one customer)."]})
        errors = self.validate(body)
        if errors:
            self._reject(opts, errors)
        key_list = (req.params["site"], req.params["list"])
        with self._lock:
            self._upsert(key_list, body)
        success = copy.deepcopy(opts["success_body"])
        return Response(opts["success_status"], None if opts["success_status"] == 204 else success)

    def _parse_body(self, req: Request, opts: dict[str, Any]) -> Any:
        if opts["require_json_content_type"]:
            return self._parse_json(req)  # 400 empty, 415 not JSON, 400 malformed
        if not req.raw:
            raise HTTPError(400, "invalid_payload", "Request body is required.")
        try:
            return json.loads(req.raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise HTTPError(400, "invalid_payload", "Malformed JSON.", str(exc)) from None

    def _reject(self, opts: dict[str, Any], errors: dict[str, list[str]]) -> None:
        self._bump("validation_failures")
        first = next(iter(errors.values()))[0]
        raise HTTPError(
            opts["validation_status"], "validation_error", VALIDATION_MESSAGE, first, errors=errors
        )

    def validate(self, body: dict[str, Any]) -> dict[str, list[str]]:
        """Laravel-style ``{field: [messages]}`` for one customer object (empty when valid)."""
        with self._lock:
            opts = dict(self._options)
            dob_patterns = list(self._dob_patterns)
            mobile_re = self._mobile_re
        errors: dict[str, list[str]] = {}

        def add(field: str, message: str) -> None:
            errors.setdefault(field, []).append(message)

        if "email" not in body and "mobile_number" not in body:
            add("email", "The email field is required when mobile number is not present.")
            add("mobile_number", "The mobile number field is required when email is not present.")
        if "email" in body:
            email = body["email"]
            if not isinstance(email, str):
                add("email", "The email field must be a string.")
            elif len(email) > 254 or len(email.partition("@")[0]) > 64 or not _EMAIL_RE.fullmatch(email):
                add("email", "The email field must be a valid email address.")
        if "mobile_number" in body:
            mobile = body["mobile_number"]
            if not isinstance(mobile, str):
                add("mobile_number", "The mobile number field must be a string.")
            elif not mobile.strip():
                add("mobile_number", "The mobile number field must not be empty.")
            elif mobile_re is not None and not mobile_re.fullmatch(mobile):
                add("mobile_number", "The mobile number field format is invalid.")
        for field, allowed in (("types", TYPES), ("channels", CHANNELS)):
            if field not in body:
                continue
            values = body[field]
            if not isinstance(values, list):
                add(field, f"The {field} field must be an array.")
                continue
            for i, value in enumerate(values):
                if value not in allowed:  # case-sensitive: "marketing" is refused
                    add(
                        f"{field}.{i}",
                        f"The selected {field}.{i} is invalid (allowed, uppercase only: {', '.join(allowed)}).",
                    )
        if "update_existing" in body and not isinstance(body["update_existing"], bool):
            add("update_existing", "The update existing field must be true or false.")
        if "attributes" in body:
            attributes = body["attributes"]
            if not isinstance(attributes, dict):
                add("attributes", "The attributes field must be an object.")
            else:
                self._validate_attributes(attributes, opts, dob_patterns, add)
        if opts["unknown_fields"] == "reject":
            for field in body:
                if field not in KNOWN_FIELDS:
                    add(field, f"The {_label(field)} field is not allowed.")
        return errors

    @staticmethod
    def _validate_attributes(
        attributes: dict[str, Any], opts: dict[str, Any], dob_patterns: list[re.Pattern[str]], add: Any
    ) -> None:
        allowed_keys = opts["allowed_attributes"]
        for name, value in attributes.items():
            field = f"attributes.{name}"
            if not ATTRIBUTE_KEY.fullmatch(name):
                add(
                    field,
                    f"The attribute key {name!r} is invalid: keys are lowercase snake_case, start with a "
                    "letter and use only a-z, 0-9 and _.",
                )
                continue
            if allowed_keys is not None and name not in allowed_keys:
                add(field, f"The attribute {name!r} is not configured for this list.")
                continue
            if value is not None and not isinstance(value, str):
                add(field, f"The {field} field must be a string or null.")
                continue
            if name == DATE_OF_BIRTH and value is not None and parse_dob(value, dob_patterns) is None:
                add(
                    field,
                    f"The {field} field must be a date in one of the formats {', '.join(opts['date_of_birth_formats'])}.",
                )

    def _norm_key(self, key: str) -> str:
        return key.lower() if "@" in key and self._options["email_key_case_insensitive"] else key

    def _upsert(self, list_key: tuple[str, str], body: dict[str, Any]) -> None:
        """Store one valid customer; the caller holds the lock."""
        raw_key = body["email"] if "email" in body else body["mobile_number"]
        key = raw_key.lower() if "email" in body and self._options["email_key_case_insensitive"] else raw_key
        customers = self._customers.setdefault(list_key, {})
        data = {f: copy.deepcopy(body[f]) for f in STORED_FIELDS if f in body}
        existing = customers.get(key)
        if existing is None:
            customers[key] = {**data, "_posts": 1, "_updates": 0, "_skipped": 0}
            self._tally["created"] += 1
            return
        existing["_posts"] += 1
        semantics = self._options["update_semantics"]
        flag = body.get("update_existing", self._options["update_existing_default"])
        if (
            semantics == "always"
            or (semantics == "documented" and not flag)
            or (semantics == "true_updates" and flag)
        ):
            attributes = data.pop("attributes", None)
            existing.update(data)
            if attributes is not None:
                existing["attributes"] = {**existing.get("attributes", {}), **attributes}
            existing["_updates"] += 1
            self._tally["updated"] += 1
        else:
            existing["_skipped"] += 1
            self._tally["skipped"] += 1

    def _bump(self, name: str) -> None:
        with self._lock:
            self._tally[name] += 1


def main(argv: list[str] | None = None) -> None:
    """CLI: run the sandbox in the foreground until SIGTERM/SIGINT."""
    from sandbox.env import sandbox_parser

    p = sandbox_parser("salesfire", __doc__.splitlines()[0])
    p.add_argument(
        "--list",
        dest="lists",
        action="append",
        metavar="SITE/LIST=SECRET",
        help="a customer list and its secret, repeatable (unset: site-1/list-a=secret-a)",
    )
    p.add_argument("--limit", type=int, default=None, help="requests allowed per window (unset: no limit)")
    p.add_argument("--window", type=float, default=60.0, help="the limit's sliding window, in seconds")
    p.add_argument(
        "--signature-encoding",
        choices=SIGNATURE_ENCODINGS,
        default="hex",
        help="how X-Signature encodes the HMAC-SHA-256",
    )
    p.add_argument("--accept-uppercase-hex", action="store_true", help="accept uppercase hex signatures")
    p.add_argument(
        "--auth-failure-status", type=int, default=401, help="status of a missing or wrong signature"
    )
    p.add_argument("--validation-status", type=int, default=422, help="status of a body that breaks a rule")
    p.add_argument("--array-body-status", type=int, default=422, help="status of a JSON array body (bulk)")
    p.add_argument(
        "--unknown-fields",
        choices=("ignore", "reject"),
        default="reject",
        help="what an undocumented top-level field gets",
    )
    p.add_argument(
        "--update-semantics",
        choices=UPDATE_SEMANTICS,
        default="documented",
        help="what update_existing does to an existing profile (see SalesfireSandbox)",
    )
    p.add_argument("--verbose", action="store_true", help="log one line per request to stderr")
    args = p.parse_args(argv)
    try:
        lists = dict(parse_list_spec(spec) for spec in args.lists) if args.lists else None
        sb = SalesfireSandbox(
            args.host,
            args.port,
            args.limit,
            args.window,
            lists,
            args.signature_encoding,
            accept_uppercase_hex=args.accept_uppercase_hex,
            auth_failure_status=args.auth_failure_status,
            validation_status=args.validation_status,
            array_body_status=args.array_body_status,
            unknown_fields=args.unknown_fields,
            update_semantics=args.update_semantics,
            verbose=args.verbose,
        )
    except ValueError as exc:
        raise SystemExit(f"python -m sandbox.salesfire: {exc}") from None
    names = " ".join(f"{site}/{list_id}={secret}" for (site, list_id), secret in sb.lists.items())
    limit = "unlimited" if args.limit is None else f"{args.limit}/{args.window:g}s"
    sb.serve_until_signalled(
        f"Salesfire sandbox on {{url}} lists: {names} signature={args.signature_encoding} limit={limit}"
    )


if __name__ == "__main__":
    main()
