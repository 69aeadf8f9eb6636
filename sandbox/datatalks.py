"""Local Data Talks API sandbox (the integration API in front of SALESmanago, ``api.datatalks.se/v1``).

Why: the SALESmanago destination must be tested against something that checks what Data Talks checks -
an AWS Signature Version 4 (service ``execute-api``) recomputed for real from the request with the test
secret, the ``group_key`` in every body, the flat ``data`` objects, the event types and product limits -
and answers the way API Gateway and Data Talks do. Sources: docs/destinations/salesmanago.md
(from the Data Talks integration pages, authentication and "using the API" pages).

- Auth: ``Authorization: AWS4-HMAC-SHA256 Credential=<key>/<date>/<region>/execute-api/aws4_request,
  SignedHeaders=..., Signature=...`` and ``X-Amz-Date``. Missing: 403 ``{"message": "Missing
  Authentication Token"}``; a wrong signature (wrong secret, changed body), another key, region or service:
  403 ``{"message": "The request signature we calculated does not match..."}``; a timestamp more than
  ``max_skew_seconds`` (300) from now: 403 ``Signature expired``. The signed headers must include
  ``host`` and ``x-amz-date``; the payload hash is recomputed from the body bytes.
- Body: ``{"data": ..., "group_key": "<key>"}``; an unknown ``group_key``: 400 ``{success: false,
  messages: [...], requestId}``. Contacts and events take one flat object (no nested objects); products
  an array of at most ``max_products`` (UNKNOWN at Data Talks: 100 here).
- Paths: exactly the documented ones - ``POST /v1/contacts``, ``POST /v1/events``, ``POST /v1/products``,
  ``GET /v1/contact_by_email?email=``, ``GET /v1/contact_by_sm_id?sm_id=`` (the page names a lookup by
  sm_id; this path is INFERRED) and ``DELETE /Production/contacts`` (the page documents the delete only on
  the execute-api host; the test connection points its ``delete_contact_url`` here). Any other path or
  method (``DELETE /v1/contacts`` included) answers 403 ``{"message": "Missing Authentication Token"}``,
  as API Gateway does.
- ``POST /v1/contacts`` upserts by email (documented String fields only; email not blank, at most 64
  characters before the @ and 254 in all, SALESmanago's rule) and gives each contact an ``sm_id``; the
  delete takes ``{data: {email}}`` (404 if absent); ``POST /v1/events`` needs ``email`` and
  ``contactExtEventType`` from the documented enum, ``value`` a number; ``externalId`` de-duplication is
  UNKNOWN at Data Talks: here a repeated ``externalId`` is stored again and counted in
  ``event_duplicates`` (the strict reading: a client must never resend).
- ``POST /v1/products``: every array item is checked against the documented fields - ``id`` and the other
  required fields present and not blank, no unknown field (``product_id`` is one), Strings within their
  lengths, ``price``/``special_price`` numbers, ``stock_available``/``sex`` integers - and every problem
  is listed in one 400 ``{success: false, messages, requestId}``.
- Lookups return ``{success, contact}`` (the real shape is UNKNOWN).
- Rate limit: API Gateway throttling, INFERRED: 429 ``{"message": "Too Many Requests"}`` past ``limit``
  per ``window_seconds``. Faults (5xx, 504, drops, slow answers) as every sandbox has them.

Run it: ``python -m sandbox.datatalks --port 8014`` (``--help`` lists every knob).
"""

from __future__ import annotations

import copy
import datetime as dt
import hashlib
import hmac
import re
import threading
import uuid
from collections import Counter
from typing import Any
from urllib.parse import quote

from sandbox.httpbase import HTTPError, RateState, Request, Response, Router, SandboxServer

ACCESS_KEY = "SANDBOXACCESSKEY"
SECRET_KEY = "sandbox/secret/key"
REGION = "eu-west-1"
GROUP_KEY = "sandbox-group"
SERVICE = "execute-api"
EVENT_TYPES = (
    "PURCHASE",
    "CART",
    "VISIT",
    "PHONE_CALL",
    "OTHER",
    "RESERVATION",
    "CANCELLED",
    "ACTIVATION",
    "MEETING",
    "OFFER",
    "DOWNLOAD",
    "LOGIN",
    "TRANSACTION",
)
CONTACT_FIELDS = ("email", "fax", "name", "phone", "company", "streetAddress", "zipCode", "city", "country")
EVENT_FIELDS = (
    "email",
    "description",
    "products",
    "location",
    "value",
    "contactExtEventType",
    "externalId",
    "shopDomain",
    *(f"detail{i}" for i in range(1, 11)),
)
# POST /v1/products: the documented item fields, their types and limits (the Data Talks integration page).
PRODUCT_LIMITS = {
    "id": 32,
    "name": 100,
    "description": 1024,
    "category": 255,
    "sub_category": 512,
    "brand": 512,
    **{f"detail{i}": 512 for i in range(1, 6)},
    "url": 512,
    "image_url": 512,
    "image2_url": 128,
    "color": 40,
    "season": 40,
}
PRODUCT_NUMBERS = ("price", "special_price")  # Decimal
PRODUCT_INTEGERS = ("stock_available", "sex")  # Integer
PRODUCT_FIELDS = (*PRODUCT_LIMITS, *PRODUCT_NUMBERS, *PRODUCT_INTEGERS)
PRODUCT_REQUIRED = ("id", "name", "description", "category", "brand", "url", "image_url")
DELETE_PATH = "/Production/contacts"  # the documented delete, on the execute-api host
SM_ID_PATH = "/v1/contact_by_sm_id"  # INFERRED: the page names a lookup by sm_id; this path is our reading
AUTH_RE = re.compile(
    r"AWS4-HMAC-SHA256 Credential=(?P<key>[^/]+)/(?P<date>\d{8})/(?P<region>[^/]+)/(?P<service>[^/]+)/aws4_request,\s*"
    r"SignedHeaders=(?P<headers>[^,]+),\s*Signature=(?P<signature>[0-9a-f]{64})$"
)
MISMATCH = (
    "The request signature we calculated does not match the signature you provided. Check your AWS Secret "
    "Access Key and signing method. Consult the service documentation for details."
)


def _hmac(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode("utf-8"), hashlib.sha256).digest()


def signing_key(secret: str, date: str, region: str, service: str = SERVICE) -> bytes:
    return _hmac(_hmac(_hmac(_hmac(("AWS4" + secret).encode(), date), region), service), "aws4_request")


def _uri_encode(text: str, keep_slash: bool = False) -> str:
    return quote(text, safe="-_.~" + ("/" if keep_slash else ""))


def canonical_request(
    method: str, path: str, query: dict[str, str], headers: dict[str, str], signed: list[str], body: bytes
) -> str:
    """AWS SigV4 canonical request (API Gateway: the path is URI-encoded once per segment)."""
    canonical_query = "&".join(f"{_uri_encode(k)}={_uri_encode(v)}" for k, v in sorted(query.items()))
    canonical_headers = "".join(f"{name}:{' '.join(headers.get(name, '').split())}\n" for name in signed)
    return "\n".join(
        [
            method,
            _uri_encode(path, keep_slash=True) or "/",
            canonical_query,
            canonical_headers,
            ";".join(signed),
            hashlib.sha256(body).hexdigest(),
        ]
    )


class DataTalksSandbox(SandboxServer):
    """Data Talks v1 over real HTTP. Options (constructor or :meth:`configure`): ``access_key``,
    ``secret_key``, ``region``, ``group_keys`` (accepted group keys), ``max_skew_seconds`` (300),
    ``max_products`` (100)."""

    name = "datatalks"
    api_prefix = "/"  # /v1/... on api.datatalks.se and /Production/contacts (the documented delete)
    throttle_message = "Too Many Requests"

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        limit: int = 100,
        window_seconds: float = 60.0,
        access_key: str = ACCESS_KEY,
        secret_key: str = SECRET_KEY,
        region: str = REGION,
        group_keys: tuple[str, ...] = (GROUP_KEY,),
        max_skew_seconds: float = 300.0,
        max_products: int = 100,
        verbose: bool = False,
    ) -> None:
        self._lock = threading.RLock()
        self.options = {
            "access_key": access_key,
            "secret_key": secret_key,
            "region": region,
            "group_keys": tuple(group_keys),
            "max_skew_seconds": float(max_skew_seconds),
            "max_products": int(max_products),
        }
        self._contacts: dict[str, dict[str, Any]] = {}
        self._events: list[dict[str, Any]] = []
        self._products: dict[str, dict[str, Any]] = {}
        self._deleted: list[str] = []
        self._tally: Counter[str] = Counter()
        super().__init__(host, port, limit=limit, window_seconds=window_seconds, verbose=verbose)

    # ------------------------------------------------------------------------------------------ hooks
    def register_routes(self, r: Router) -> None:
        """Exactly the documented paths; API Gateway answers any other path or method with 403."""
        r.add("POST", "/v1/contacts", self._post_contact, json_body=True)
        r.add("DELETE", DELETE_PATH, self._delete_contact, json_body=True)
        r.add("POST", "/v1/events", self._post_event, json_body=True)
        r.add("POST", "/v1/products", self._post_products, json_body=True)
        r.add("GET", "/v1/contact_by_email", self._contact_by_email)
        r.add("GET", SM_ID_PATH, self._contact_by_sm_id)

    def authenticate(self, req: Request) -> bool:
        """SigV4, recomputed from the request with the secret; every failure is API Gateway's 403."""
        opts = self.options
        try:
            self.router.match(req.method, req.path)
        except HTTPError:  # API Gateway answers an unknown path or method like a missing signature
            raise HTTPError(403, message="Missing Authentication Token") from None
        header = req.header("Authorization")
        amz_date = req.header("X-Amz-Date")
        if not header or not amz_date:
            self._bump("auth_failures")
            raise HTTPError(403, message="Missing Authentication Token")
        found = AUTH_RE.match(header.strip())
        if not found:
            self._bump("auth_failures")
            raise HTTPError(
                403,
                message=f"Authorization header requires 'Credential', 'SignedHeaders' and 'Signature' parameters. Authorization={header[:80]}",
            )
        signed = found["headers"].split(";")
        if found["key"] != opts["access_key"]:
            self._bump("auth_failures")
            raise HTTPError(403, message="The security token included in the request is invalid.")
        if found["region"] != opts["region"] or found["service"] != SERVICE or found["date"] != amz_date[:8]:
            self._bump("auth_failures")
            raise HTTPError(
                403,
                message=f"Credential should be scoped to a valid region/service/date: {found['date']}/{found['region']}/{found['service']}",
            )
        if "host" not in signed or "x-amz-date" not in signed or signed != sorted(signed):
            self._bump("auth_failures")
            raise HTTPError(403, message="'Host' and 'X-Amz-Date' must be signed, SignedHeaders sorted.")
        try:
            when = dt.datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=dt.UTC)
        except ValueError:
            self._bump("auth_failures")
            raise HTTPError(403, message=f"Invalid X-Amz-Date {amz_date!r}") from None
        skew = abs((dt.datetime.now(dt.UTC) - when).total_seconds())
        if skew > opts["max_skew_seconds"]:
            self._bump("auth_failures")
            raise HTTPError(
                403, message=f"Signature expired: {amz_date} is now earlier than the allowed window."
            )
        headers = {name: req.header(name) or "" for name in signed}
        canonical = canonical_request(req.method, req.path, req.query, headers, signed, req.raw)
        scope = f"{found['date']}/{found['region']}/{SERVICE}/aws4_request"
        to_sign = "\n".join(
            ["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()]
        )
        key = signing_key(opts["secret_key"], found["date"], found["region"])
        expected = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, found["signature"]):
            self._bump("auth_failures")
            raise HTTPError(403, message=MISMATCH)
        return True

    def error_body(
        self, status: int, key: str, message: str, details: str, request_id: str, extra: dict[str, Any]
    ) -> Any:
        if status in (403, 429) or (status >= 500 and not extra.get("messages")):
            return {"message": message}  # API Gateway's own answers
        return {
            "success": False,
            "messages": extra.get("messages") or [details or message],
            "requestId": request_id,
        }

    def rate_limit_headers(self, state: RateState) -> dict[str, str]:
        return {}

    def throttle_headers(self, retry_after: int) -> dict[str, str]:
        return {}  # API Gateway sends no Retry-After

    def store_snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "contacts": copy.deepcopy(self._contacts),
                "events": copy.deepcopy(self._events),
                "products": copy.deepcopy(self._products),
                "deleted": list(self._deleted),
                "event_duplicates": sum(
                    c - 1
                    for c in Counter(
                        e.get("externalId") for e in self._events if e.get("externalId")
                    ).values()
                    if c > 1
                ),
            }

    @property
    def store(self) -> dict[str, Any]:
        return self.store_snapshot()

    def reset_store(self) -> None:
        with self._lock:
            self._contacts.clear()
            self._events.clear()
            self._products.clear()
            self._deleted.clear()
            self._tally.clear()

    def apply_config(self, config: dict[str, Any]) -> dict[str, Any]:
        unknown = set(config) - set(self.options)
        if unknown:
            raise ValueError(f"unknown config key(s): {sorted(unknown)}")
        with self._lock:
            self.options.update(config)
            return dict(self.options)

    def extra_stats(self) -> dict[str, Any]:
        with self._lock:
            return dict(self._tally)

    def __enter__(self) -> DataTalksSandbox:
        self.start()
        return self

    # -------------------------------------------------------------------------------------- handlers
    def _bump(self, name: str) -> None:
        with self._lock:
            self._tally[name] += 1

    def _ok(self, req: Request, **extra: Any) -> Response:
        return Response(200, {"success": True, "messages": [], "requestId": req.request_id, **extra})

    def _bad(self, *messages: str) -> HTTPError:
        self._bump("validation_failures")
        return HTTPError(400, messages=list(messages))

    def _envelope(self, req: Request) -> Any:
        body = req.body
        if not isinstance(body, dict) or set(body) - {"data", "group_key"}:
            raise self._bad('The body must be {"data": ..., "group_key": ...}.')
        if body.get("group_key") not in self.options["group_keys"]:
            raise self._bad(f"Unknown group_key {body.get('group_key')!r}.")
        if "data" not in body:
            raise self._bad("data is required.")
        return body["data"]

    def _flat(self, data: Any, allowed: tuple[str, ...] | None) -> dict[str, Any]:
        if not isinstance(data, dict):
            raise self._bad("data must be an object.")
        nested = [k for k, v in data.items() if isinstance(v, dict)]
        if nested:
            raise self._bad(f"data must be flat: {', '.join(nested)} is an object.")
        if allowed is not None:
            unknown = [k for k in data if k not in allowed]
            if unknown:
                raise self._bad(f"Unknown field(s) {', '.join(unknown)}: ask Data Talks to map them.")
        return data

    def _email(self, data: dict[str, Any]) -> str:
        """SALESmanago's rule: a valid address, at most 64 characters before the @ and 254 in all."""
        email = data.get("email")
        if not isinstance(email, str) or not email.strip():
            raise self._bad("email is required and must not be blank.")
        local = email.partition("@")[0]
        if not re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", email) or len(local) > 64 or len(email) > 254:
            raise self._bad(
                f"email must be a valid address, at most 64 characters before the @ and 254 in all (got {email!r})."
            )
        return email.lower()

    def _strings(self, data: dict[str, Any], names: Any, where: str = "") -> None:
        bad = [k for k in names if data.get(k) is not None and not isinstance(data[k], str)]
        if bad:
            raise self._bad(*(f"{where}{k}: must be a String (got {type(data[k]).__name__})." for k in bad))

    def _post_contact(self, req: Request) -> Response:
        data = self._flat(self._envelope(req), CONTACT_FIELDS)
        self._strings(data, CONTACT_FIELDS)
        email = self._email(data)
        with self._lock:
            created = email not in self._contacts
            stored = self._contacts.setdefault(email, {"_posts": 0, "sm_id": str(uuid.uuid4())})
            stored.update({k: v for k, v in data.items() if v is not None}, email=email)
            stored["_posts"] += 1
            self._tally["contacts_created" if created else "contacts_updated"] += 1
        return self._ok(req, datatalksId=stored["sm_id"], key=email)

    def _delete_contact(self, req: Request) -> Response:
        data = self._flat(self._envelope(req), ("email",))
        email = self._email(data)
        with self._lock:
            if self._contacts.pop(email, None) is None:
                raise HTTPError(404, messages=[f"Contact {email} not found."])
            self._deleted.append(email)
        return self._ok(req, key=email)

    def _post_event(self, req: Request) -> Response:
        data = self._flat(self._envelope(req), EVENT_FIELDS)
        self._strings(data, [f for f in EVENT_FIELDS if f != "value"])
        email = self._email(data)
        kind = data.get("contactExtEventType")
        if kind not in EVENT_TYPES:
            raise self._bad(f"contactExtEventType must be one of {', '.join(EVENT_TYPES)} (got {kind!r}).")
        value = data.get("value")
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise self._bad("value must be a Float.")
        with self._lock:
            if email not in self._contacts:
                self._contacts[email] = {
                    "email": email,
                    "_posts": 0,
                    "_from_event": True,
                    "sm_id": str(uuid.uuid4()),
                }
            self._events.append(copy.deepcopy(data))
        return self._ok(req, key=data.get("externalId"))

    def _product_problems(self, i: int, product: Any) -> list[str]:
        """Everything wrong with one array item, by the documented fields: required, types, lengths."""
        if not isinstance(product, dict):
            return [f"data[{i}]: must be an object"]
        where = f"data[{i}]."
        problems = [
            f"{where}{k}: unknown field (not a documented product field)"
            for k in product
            if k not in PRODUCT_FIELDS
        ]
        for field in PRODUCT_REQUIRED:
            value = product.get(field)
            if value is None or (isinstance(value, str) and not value.strip()):
                problems.append(f"{where}{field}: is required and must not be blank")
        for field, limit in PRODUCT_LIMITS.items():
            value = product.get(field)
            if value is None:
                continue
            if not isinstance(value, str):
                problems.append(f"{where}{field}: must be a String (got {type(value).__name__})")
            elif len(value) > limit:
                problems.append(f"{where}{field}: longer than {limit} characters")
        for field in PRODUCT_NUMBERS:
            value = product.get(field)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
                problems.append(f"{where}{field}: must be a Decimal number (got {value!r})")
        for field in PRODUCT_INTEGERS:
            value = product.get(field)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                problems.append(f"{where}{field}: must be an Integer (got {value!r})")
        return problems

    def _post_products(self, req: Request) -> Response:
        data = self._envelope(req)
        if not isinstance(data, list) or not data:
            raise self._bad("data must be a non-empty array of products.")
        if len(data) > self.options["max_products"]:
            raise self._bad(f"At most {self.options['max_products']} products per request (got {len(data)}).")
        problems = [p for i, product in enumerate(data) for p in self._product_problems(i, product)]
        if problems:
            raise self._bad(*problems)
        with self._lock:
            for product in data:
                self._products[product["id"]] = copy.deepcopy(product)
        return self._ok(req)

    def _contact_by_email(self, req: Request) -> Response:
        email = (req.query.get("email") or "").lower()
        if not email:
            raise self._bad("email is required.")
        with self._lock:
            contact = copy.deepcopy(self._contacts.get(email))
        if contact is None:
            raise HTTPError(404, messages=[f"Contact {email} not found."])
        contact.pop("_posts", None)
        return self._ok(req, contact=contact)

    def _contact_by_sm_id(self, req: Request) -> Response:
        sm_id = req.query.get("sm_id") or ""
        if not sm_id.strip():
            raise self._bad("sm_id is required.")
        with self._lock:
            contact = next(
                (copy.deepcopy(c) for c in self._contacts.values() if c.get("sm_id") == sm_id), None
            )
        if contact is None:
            raise HTTPError(404, messages=[f"Contact with sm_id {sm_id} not found."])
        contact.pop("_posts", None)
        return self._ok(req, contact=contact)


def main(argv: list[str] | None = None) -> None:
    """CLI: run the sandbox in the foreground until SIGTERM/SIGINT."""
    from sandbox.env import sandbox_parser

    p = sandbox_parser("datatalks", __doc__.splitlines()[0])
    p.add_argument("--limit", type=int, default=100, help="requests allowed per window (429 beyond)")
    p.add_argument("--window", type=float, default=60.0, help="the limit's sliding window, in seconds")
    p.add_argument("--access-key", default=ACCESS_KEY, help="the AWS access key id it accepts")
    p.add_argument("--secret-key", default=SECRET_KEY, help="the secret it checks SigV4 signatures with")
    p.add_argument("--region", default=REGION, help="the signing region it expects")
    p.add_argument(
        "--group-key",
        dest="group_keys",
        action="append",
        metavar="KEY",
        help=f"an accepted group_key, repeatable (unset: {GROUP_KEY})",
    )
    p.add_argument("--max-skew-seconds", type=float, default=300.0, help="how far X-Amz-Date may be from now")
    p.add_argument("--max-products", type=int, default=100, help="most products in one POST /v1/products")
    p.add_argument("--verbose", action="store_true", help="log one line per request to stderr")
    args = p.parse_args(argv)
    sandbox = DataTalksSandbox(
        args.host,
        args.port,
        limit=args.limit,
        window_seconds=args.window,
        access_key=args.access_key,
        secret_key=args.secret_key,
        region=args.region,
        group_keys=tuple(args.group_keys or (GROUP_KEY,)),
        max_skew_seconds=args.max_skew_seconds,
        max_products=args.max_products,
        verbose=args.verbose,
    )
    groups = ", ".join(sandbox.options["group_keys"])
    sandbox.serve_until_signalled(
        f"Data Talks sandbox on {{url}} access key {args.access_key}, group_key {groups}, "
        f"region {args.region}, limit={args.limit}/{args.window:g}s"
    )


if __name__ == "__main__":
    main()
