"""Local Connectif API sandbox that follows Connectif's documented contract (api.connectif.cloud).

Why: our Connectif client must be tested against something that behaves like the real API - the
``Authorization: apiKey <keyId>:<keySecret>`` header, ``{status, title, detail, code}`` error bodies,
the custom error codes (E0101/E0102/E0103/E0201/E0301/E0401), 100 requests/minute per account with
``X-RateLimit-*`` headers and no ``Retry-After``, contact/product upserts, purchases that need their
contact and products first, multipart CSV imports and exports that run in the background - without
touching a real account.  Sources: docs/destinations/connectif.md and the Connectif API
reference pages (api-docs.connectif.cloud: create-import, import / importlist resources,
create-export, export / exportlist resources, custom-error-codes, patch-contact, patchsert-product,
post-purchase).

Where the docs say nothing the behaviour is a constructor option (also settable at runtime with
:meth:`ConnectifSandbox.configure` or ``POST /_sandbox/config``), defaulting to the *strictest
plausible* reading so that a client passing here should pass against the real API.  The UNKNOWN
points are listed in the class docstring.

Exports: their paths come from Connectif's API reference (create-export): ``POST /exports/`` with
``{"exportType": "contacts"|"activities", "delimiter", "dateFormat", "filters"?, "version"?}`` and
``GET /exports/{id}``.  The collection path is the constructor option ``export_path="/exports/"`` (not
changeable at runtime) so a client with configurable paths can be tested; ``export_contract="simple"``
switches to the simpler ``{"type": "contacts"|"products"|"purchases"|"activities"}`` body.

Run it: ``python -m sandbox.connectif --port 8012 --limit 100 --window 60`` (``--help`` lists every
knob); in tests use ``ConnectifSandbox(port=0)`` as a context manager.  Generic plumbing (recording,
limiter, faults, ``/_sandbox/*`` control endpoints) lives in :mod:`sandbox.httpbase`.
"""

from __future__ import annotations

import copy
import csv
import hmac
import io
import json
import math
import re
import secrets
import threading
import time
import traceback
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.message import Message
from email.parser import BytesHeaderParser
from email.utils import collapse_rfc2231_value
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

from sandbox.httpbase import (
    HTTPError,
    RateState,
    Request,
    Response,
    Router,
    SandboxServer,
    SlidingWindowLimiter,
    status_phrase,
)

DEFAULT_KEY_ID = "sandbox-key"
DEFAULT_KEY_SECRET = "sandbox-secret"
AUTH_SCHEME = "apiKey"
FILES_PREFIX = "/files/"  # error reports and export files (stand-ins for pre-signed storage URLs)

# Documented: "file is too big. Maximum allowed size is 50Mb."  "Mb" could be 50 MiB; we take the
# smaller reading (50,000,000 bytes) so a file we accept is accepted there too.
MAX_IMPORT_BYTES = 50_000_000
MAX_QUEUED_IMPORTS = 10  # E0401
MAX_QUEUED_EXPORTS = 5  # E0301
FILE_URL_TTL = 6000.0  # export fileUrl: "a new url will be generated and it will be valid for 100 minutes"

IMPORT_TYPES = ("contacts", "products", "coupons")
IMPORT_FORM_FIELDS = ("type", "overrideExisting", "updateOnlyEmptyFields", "delimiter", "couponSetId", "file")
DELIMITERS = (",", ";")
DATE_FORMATS = ("ISO", "L", "LL", "LLL")
EXPORT_TYPES_DOCUMENTED = ("contacts", "activities")
EXPORT_TYPES_SIMPLE = ("contacts", "products", "purchases", "activities")
EXPORT_VERSIONS = ("v1", "v2")
EXPORT_RANGE_DAYS = 31  # "The range between fromDate and toDate cannot be greater than 31 days."

# ------------------------------------------------------------------------------------------- fields
EMAIL_STATUSES = ("active", "bounced", "paused", "banned")
PHONE_STATUSES = ("active", "bounced", "paused")
SUBSCRIPTION_STATUSES = ("subscribed", "unsubscribed", "none")
CONTACT_FIELD_TYPES: dict[str, Any] = {
    "_name": "string",
    "_surname": "string",
    "_birthdate": "datetime",
    "_emailStatus": ("enum", EMAIL_STATUSES),
    "_mobilePhone": "phone",
    "_mobilePhoneStatus": ("enum", PHONE_STATUSES),
    "_newsletterSubscriptionStatus": ("enum", SUBSCRIPTION_STATUSES),
    "_smsSubscriptionStatus": ("enum", SUBSCRIPTION_STATUSES),
    "_points": "integer",
}
EXTERNAL_ID = "_externalId"  # only PATCH /contacts/email/{email} documents it (and CSV imports)
CONTACT_EXPORT_COLUMNS = ("_email", *CONTACT_FIELD_TYPES, EXTERNAL_ID)

# Custom contact field types (docs): text/email/date/radio/phone -> string, boolean -> bool,
# decimal -> number, integer -> integer, checkbox -> string[].
CUSTOM_FIELD_KINDS = {
    "text": "string",
    "email": "email",
    "date": "datetime",
    "radio": "string",
    "phone": "string",
    "boolean": "boolean",
    "decimal": "number",
    "integer": "integer",
    "checkbox": "string[]",
}

# ProductCreation (PATCH /products/product-id/{id}); every field optional.
PRODUCT_FIELD_TYPES: dict[str, Any] = {
    "name": "string",
    "description": "string",
    "brand": "string",
    "availability": ("enum", ("instock", "outofstock")),
    "categories": "string[]",
    "tags": "string[]",
    "customField1": "string",
    "customField2": "string",
    "customField3": "string",
    "unitPrice": "number",
    "unitPriceOriginal": "number",
    "unitPriceWithoutVAT": "number",
    "discountedAmount": "number",
    "discountedPercentage": "number",
    "imageUrl": "url",
    "thumbnailUrl": "url",
    "productDetailUrl": "url",
    "inStockUnits": "integer",
    "isBlacklisted": "boolean",
    "priority": "integer",
    "publishedAt": "datetime",
    "rating": "number",
    "ratingCount": "integer",
    "reviewCount": "integer",
    "relatedExternalProductIds": "string[]",
}

# PurchaseCreation.  Required per the reference (only paymentMethod is marked Optional; cartId is not,
# see ``require_cart_id``); the contact is contactEmail or - per the E0101 text - contactExternalId.
PURCHASE_FIELD_TYPES: dict[str, Any] = {
    "purchaseId": "nonempty",
    "cartId": "nonempty",
    "contactEmail": "email",
    "contactExternalId": "nonempty",
    "purchaseDate": "datetime",
    "totalPrice": "number",
    "totalQuantity": "integer",
    "paymentMethod": "string",
    "products": "items",
}
PURCHASE_REQUIRED = ("purchaseId", "purchaseDate", "totalPrice", "totalQuantity", "products")
PURCHASE_ITEM_REQUIRED: dict[str, Any] = {
    "productId": "nonempty",
    "name": "nonempty",
    "unitPrice": "number",
    "quantity": "integer",
    "price": "number",
}
PURCHASE_ITEM_OPTIONAL = (
    "brand",
    "categories",
    "customField1",
    "customField2",
    "customField3",
    "description",
    "discountedAmount",
    "discountedPercentage",
    "imageUrl",
    "productDetailUrl",
    "publishedAt",
    "rating",
    "ratingCount",
    "reviewCount",
    "tags",
    "thumbnailUrl",
    "unitPriceOriginal",
    "unitPriceWithoutVAT",
)
PURCHASE_ITEM_TYPES = {
    **PURCHASE_ITEM_REQUIRED,
    **{f: PRODUCT_FIELD_TYPES[f] for f in PURCHASE_ITEM_OPTIONAL},
}
PURCHASE_EXPORT_COLUMNS = (
    "purchaseId",
    "cartId",
    "contactEmail",
    "purchaseDate",
    "totalPrice",
    "totalQuantity",
    "paymentMethod",
    "triggerPurchaseEvent",
    "productId",
    "name",
    "unitPrice",
    "quantity",
    "price",
)
ACTIVITY_EXPORT_COLUMNS = (
    "_email",
    "activityType",
    "date",
    "purchaseId",
    "cartId",
    "totalPrice",
    "totalQuantity",
    "paymentMethod",
    "productIds",
)
ERROR_REPORT_COLUMNS = ("row", "key", "field", "message")

# Pragmatic address check (ASCII dot-atom local part, dotted domain with a letter TLD, RFC lengths).
_EMAIL_RE = re.compile(
    r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}$"
)
E164 = r"^\+[1-9][0-9]{6,14}$"  # "international format": we require E.164 (no spaces)
_INT_TEXT = re.compile(r"^[+-]?[0-9]+$")
_NUM_TEXT = re.compile(r"^[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?$")


def is_email(value: Any) -> bool:
    return (
        isinstance(value, str)
        and len(value) <= 254
        and len(value.partition("@")[0]) <= 64
        and bool(_EMAIL_RE.fullmatch(value))
    )


def is_iso8601(value: Any) -> bool:
    """ISO 8601 date or date-time (``1990-05-17``, ``2024-05-01T10:00:00Z``, with offsets)."""
    if not isinstance(value, str) or not value:
        return False
    try:
        datetime.fromisoformat(value)
    except ValueError:
        return False
    return True


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _new_id() -> str:
    return secrets.token_hex(12)  # 24 hex chars, like the ids in Connectif's examples


def _choice(value: Any, name: str, choices: Iterable[Any]) -> Any:
    choices = tuple(choices)
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")
    return value


def _status(value: Any, name: str) -> int:
    status = int(value)
    if not 400 <= status <= 499:
        raise ValueError(f"{name} must be a 4xx status, got {status}")
    return status


def _non_negative(value: Any, name: str) -> float:
    number = float(value)
    if number < 0 or math.isnan(number):
        raise ValueError(f"{name} must be >= 0")
    return number


def _positive_int(value: Any, name: str) -> int:
    number = int(value)
    if number < 1:
        raise ValueError(f"{name} must be >= 1")
    return number


def _custom_fields(value: Any) -> dict[str, str] | None:
    if value is None:
        return None
    out = {}
    for field_id, kind in dict(value).items():
        if str(field_id).startswith("_"):
            raise ValueError(f"custom field ids must not start with '_' (built-in fields do): {field_id!r}")
        out[str(field_id)] = _choice(kind, f"custom field {field_id} type", CUSTOM_FIELD_KINDS)
    return out


def _str_list(value: Any) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = [value]
    return [str(v) for v in value]


def _list_separator(value: Any) -> str:
    if not isinstance(value, str) or not value or value in DELIMITERS or value in '\r\n"':
        raise ValueError(
            f"list_separator must be a non-empty string other than , ; quote or newline, got {value!r}"
        )
    return value


def _export_path(value: str) -> str:
    if not isinstance(value, str) or not value.startswith("/") or value.startswith(FILES_PREFIX):
        raise ValueError(f"export_path must start with '/' (and not be under {FILES_PREFIX}), got {value!r}")
    return value


def parse_bool_text(text: str) -> bool:
    """Form and CSV booleans: exactly ``true`` / ``false`` (UNKNOWN whether 1/0 or TRUE pass there)."""
    if text == "true":
        return True
    if text == "false":
        return False
    raise ValueError(f"must be true or false, got {text!r}")


# ------------------------------------------------------------------------------------- multipart
@dataclass
class FormPart:
    name: str | None
    filename: str | None
    content_type: str | None
    data: bytes


def parse_multipart(raw: bytes, content_type: str) -> list[FormPart]:
    """Split a multipart/form-data body into its parts (exact bytes; no size limit of its own)."""
    head = Message()
    head["Content-Type"] = content_type
    boundary = head.get_param("boundary")
    if not boundary or not isinstance(boundary, str):
        raise ValueError("the multipart/form-data Content-Type has no boundary")
    delim = b"--" + boundary.encode("latin-1")
    if raw.startswith(delim):
        data = raw
    else:
        at = raw.find(b"\r\n" + delim)
        if at < 0:
            raise ValueError("the body does not contain the multipart boundary")
        data = raw[at + 2 :]
    sections = data.split(b"\r\n" + delim)
    sections[0] = sections[0][len(delim) :]
    parts: list[FormPart] = []
    for section in sections:
        if section.startswith(b"--"):
            return parts
        eol = section.find(b"\r\n")
        if eol < 0:
            raise ValueError("malformed multipart part (no header block)")
        rest = section[eol + 2 :]
        if rest.startswith(b"\r\n"):  # a part without headers
            headers_raw, body = b"", rest[2:]
        else:
            headers_raw, sep, body = rest.partition(b"\r\n\r\n")
            if not sep:
                raise ValueError("malformed multipart part (headers not terminated)")
        headers = BytesHeaderParser().parsebytes(headers_raw + b"\r\n\r\n")
        name = headers.get_param("name", header="content-disposition")
        filename = headers.get_filename()
        parts.append(
            FormPart(
                None if name is None else collapse_rfc2231_value(name),
                filename,
                headers.get_content_type() if headers.get("Content-Type") else None,
                body,
            )
        )
    raise ValueError("the multipart body has no closing boundary")


# ---------------------------------------------------------------------------------------- limiter
class ConnectifLimiter(SlidingWindowLimiter):
    """The base sliding window plus "when does the window next free a slot" for X-RateLimit-Reset."""

    def next_slot_epoch(self) -> int:
        """Epoch seconds (rounded up) when the oldest request in the window leaves it; now if none."""
        with self._lock:
            now = self._clock()
            self._prune(now)
            wait = (self._window[0] + self.window - now) if self._window else 0.0
        return math.ceil(time.time() + max(0.0, wait))


# ---------------------------------------------------------------------------------------- sandbox
class ConnectifSandbox(SandboxServer):
    """Connectif contacts, products, purchases, imports and exports over real HTTP.

    Processing order of an API request: fault rules (base) -> auth (401) -> rate limiter (429, no
    slot used by 401s or 429s) -> routing (404/405) -> scope (403, only if ``scopes`` is set) ->
    415 (not JSON / not multipart) -> 400 (malformed JSON, bad path email, bad query) -> 413 (import
    file) -> 422 (validation) -> 400 E0xxx (custom error codes) -> handler.

    FACT (docs): the auth header; 100 req/min per account with ``X-RateLimit-Limit/Remaining/Reset``
    (epoch seconds) and 429; the error body ``{status, title, detail, code, ...extra}`` with E-codes
    on status 400; contact and product upserts and their fields; purchases needing their contact
    (E0101) and products (E0102), product URLs on authorised domains (E0103 on purchases, E0201 on
    products); imports (multipart; ``type``, ``overrideExisting``, ``updateOnlyEmptyFields`` and
    ``delimiter`` all Required, ``couponSetId`` required for coupons; ``file`` UTF-8 text/csv with a
    header row of field ids, ``_email`` required for contacts; 201 Import resource; 413 over 50 MB,
    415 not multipart, 422 validation; at most 10 queued imports E0401); the import list
    ``{links: {next, prev}, results: [...]}``; exports (``exportType`` contacts/activities,
    ``delimiter``, ``dateFormat``; at most 5 queued exports E0301; ``fileUrl`` only when finished,
    regenerated on each GET and valid 100 minutes).

    UNKNOWN / INFERRED, each an option (constructor keyword and runtime config key) - default first:

    * ``validation_status`` - 422 for body validation errors: every Connectif reference page lists
      "400 Bad request, i.e.: invalid json" and "422 Unprocessable Entity: Resource contains
      validation errors", so 400 is kept for malformed JSON / a bad path email / a bad query and
      for the documented E-codes.  The 422 body shape (HttpUnprocessableEntityError) is not
      published: we send the common ``{status, title, detail}`` with every problem named in
      ``detail`` (``"<field>: <message>; ..."``).
    * ``duplicate_purchase`` - ``"accept"``: a repeated purchaseId is stored once (the first
      version) and counted in ``store["purchase_duplicates"]``, 201 like the first; ``"reject"``:
      409; ``"replace"``: the later POST overwrites.
    * ``allowed_domains`` - None: URLs are not checked.  A list of origins (``https://shop.com``,
      the docs' example is ``http://www.mysite.com``) or bare hosts (``shop.com``): a
      ``productDetailUrl`` must match one exactly (scheme when given, host case-insensitively, no
      subdomains) - E0103 on purchases (the item's URL, else the catalog product's), E0201 on
      product PATCH.  ``allowedDomains`` echoes this list.
    * ``product_ids_key`` - ``"productIds"``: the extra field on E0102/E0103 as the error table
      names it; the docs' own JSON example spells it ``productsId`` (``"productsId"`` or ``"both"``).
    * ``require_cart_id`` - True: the reference does not mark ``cartId`` Optional (only
      ``paymentMethod``).  A purchase must name ``contactEmail`` or ``contactExternalId``
      (the latter from E0101's text) and at least one product.
    * ``custom_fields`` - None: any non-``_`` key with a string / number / bool / string[] value is
      a custom field; a ``{field_id: kind}`` mapping (kinds: text, email, date, radio, phone,
      boolean, decimal, integer, checkbox) types them and refuses unknown ids.
      ``custom_fields_on_email_route`` - False: ContactPatchByEmail (``/contacts/email/{email}``)
      documents no custom ``<key>``, so custom fields are refused there.  ``_externalId`` is
      refused on ``/contacts/{email}`` (not in ContactPatch).  Unknown ``_`` keys are refused;
      null values are refused everywhere (UNKNOWN whether null clears a field).
    * ``email_case_insensitive`` - True: contacts are keyed by the lowercased email.
      ``mobile_phone_pattern`` - E.164 (``+`` and 7-15 digits, no spaces) for "international".
    * Unknown fields in product / purchase bodies and unknown multipart fields are refused (422).
      Required means not blank: ``purchaseId``, ``cartId``, ``contactExternalId``,
      ``products[].productId`` and ``products[].name`` (JSON), and the key column of an import row
      (``_email`` / ``productId`` / coupon ``code``) must hold more than spaces, else 422 / a row error.
    * ``max_import_bytes`` - 50,000,000 (see MAX_IMPORT_BYTES); ``max_queued_imports`` 10 and
      ``max_queued_exports`` 5 count queued and inProgress jobs.
    * ``require_csv_content_type`` - True: the ``file`` part must be ``text/csv``.  A UTF-8 BOM is
      accepted and dropped.  Form booleans are exactly ``true`` / ``false``.
    * ``header_errors`` - ``"request"``: a file whose header is unusable (no ``_email`` /
      ``productId`` / ``code`` column, unknown or repeated columns, empty file) is refused with
      422 at POST; ``"import"``: accepted, and the import ends with status ``error``.
    * CSV columns: contacts ``_email`` + contact field ids (built-ins, ``_externalId``, custom ids);
      products ``product_id_column`` (``"productId"``, the Product resource's field id for the store
      id) + ProductCreation field ids; coupons ``coupon_code_column`` (``"code"``) only.  Empty
      cells mean "no value" (the field is left alone).  ``list_separator`` - ``"|"`` splits
      categories / tags / relatedExternalProductIds / checkbox cells.
    * Import semantics: ``overrideExisting=false`` leaves an existing contact/product unchanged (the
      row still counts as success); ``updateOnlyEmptyFields=true`` (only with overrideExisting)
      fills only fields the record lacks.  A coupon code already in the set (before or earlier in
      the file) is a row error.  ``coupon_sets`` - None: any couponSetId is accepted (and created);
      a collection restricts them (unknown -> 422).
    * Error report (``errorReportFileUrl``, only once finished with errors): CSV, delimiter ``,``,
      header ``row,key,field,message``; ``row`` is the record number in the uploaded file counting
      the header as 1 (first data row = 2), ``key`` the row's ``_email`` / productId / code, ``field``
      the column at fault (empty for whole-row problems).  The same URL with ``.json`` instead of
      ``.csv`` gives ``{"importId", "errors": [{row, key, field, message}]}``.  ``errors`` in the
      Import counts failed rows, ``success`` the others, ``total`` their sum.
    * ``file_url_auth`` - ``"forbidden"``: file URLs behave like pre-signed storage URLs (the docs'
      100-minute validity suggests so): no apiKey needed, and a request that *does* carry an
      Authorization header is refused with 400 (as S3 does for a second auth mechanism).
      ``"none"``: the header is ignored; ``"apiKey"``: the API key is required.  File downloads never
      use a rate-limit slot.  ``file_url_ttl`` - 6000 s for export URLs (403 once expired).
    * ``unset_fields`` - ``"omit"``: optional resource fields without a value (``startedAt``,
      ``finishedAt``, ``cancelledAt``, ``errorReportFileUrl``, ``fileUrl``, ``links.next`` ...) are
      left out, so clients must use ``.get()``; ``"null"`` sends them as null.
    * ``export_contract`` - ``"documented"`` (see the module docstring; activities need
      ``filters.fromDate``/``toDate`` at most 31 days apart; segmentId is accepted but not applied);
      ``"simple"``: ``{"type": contacts|products|purchases|activities, "delimiter"?: ",",
      "dateFormat"?: "ISO", "filters"?}``.
    * Paging of ``GET /imports/`` and exports: newest first, query ``limit`` (1..100, default
      ``page_size`` 20) and ``offset``; clients should just follow ``links.next``.
    * ``scopes`` - None: the key has every scope.  A collection of ``contacts:read``,
      ``contacts:write``, ``products:read``, ``products:write``, ``purchases:write``,
      ``imports:read``, ``imports:write``, ``exports:read``, ``exports:write`` (sandbox names)
      answers 403 for the others.  ``api_keys`` - extra ``{keyId: secret}`` keys of the same
      account (all share one rate limit).  The scheme must be exactly ``apiKey``.
    * Rate limit: sliding window.  ``X-RateLimit-Reset`` is when the window next frees a slot
      (when Remaining is 0: when the next request can pass), rounded up.  No ``Retry-After``.
    * Responses: PATCH contact 200 with the contact (``{"_email", ...fields}``), PATCH product 200
      with the Product resource (``id``, ``productId``, ``availability`` default instock, fields,
      ``createdAt``, ``updatedAt``), POST purchase 201 with the purchase as stored.

    Readback: :attr:`store` (see :meth:`store_snapshot`); ``fail_next_imports`` /
    ``fail_next_exports`` make the next jobs end with status ``error``; :meth:`cancel_import`.
    """

    name = "connectif"
    api_prefix = "/"
    throttle_message = "Too Many Requests"

    _CONVERTERS: dict[str, Callable[[Any], Any]] = {
        "async_delay": lambda v: _non_negative(v, "async_delay"),
        "allowed_domains": _str_list,
        "duplicate_purchase": lambda v: _choice(v, "duplicate_purchase", ("accept", "reject", "replace")),
        "max_import_bytes": lambda v: _positive_int(v, "max_import_bytes"),
        "max_queued_imports": lambda v: _positive_int(v, "max_queued_imports"),
        "max_queued_exports": lambda v: _positive_int(v, "max_queued_exports"),
        "validation_status": lambda v: _status(v, "validation_status"),
        "product_ids_key": lambda v: _choice(v, "product_ids_key", ("productIds", "productsId", "both")),
        "require_cart_id": bool,
        "custom_fields": _custom_fields,
        "custom_fields_on_email_route": bool,
        "email_case_insensitive": bool,
        "mobile_phone_pattern": lambda v: re.compile(v).pattern,
        "require_csv_content_type": bool,
        "header_errors": lambda v: _choice(v, "header_errors", ("request", "import")),
        "list_separator": lambda v: _list_separator(v),
        "product_id_column": str,
        "coupon_code_column": str,
        "coupon_sets": lambda v: None if v is None else sorted({str(s) for s in v}),
        "file_url_auth": lambda v: _choice(v, "file_url_auth", ("forbidden", "none", "apiKey")),
        "file_url_ttl": lambda v: _non_negative(v, "file_url_ttl"),
        "unset_fields": lambda v: _choice(v, "unset_fields", ("omit", "null")),
        "export_contract": lambda v: _choice(v, "export_contract", ("documented", "simple")),
        "page_size": lambda v: min(100, _positive_int(v, "page_size")),
        "scopes": lambda v: None if v is None else sorted({str(s) for s in v}),
        "api_keys": lambda v: {str(k): str(s) for k, s in dict(v or {}).items()},
    }

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        limit: int = 100,
        window_seconds: float = 60.0,
        api_key_id: str = DEFAULT_KEY_ID,
        api_key_secret: str = DEFAULT_KEY_SECRET,
        async_delay: float = 0.05,
        *,
        export_path: str = "/exports/",
        allowed_domains: Iterable[str] | None = None,
        duplicate_purchase: str = "accept",
        max_import_bytes: int = MAX_IMPORT_BYTES,
        max_queued_imports: int = MAX_QUEUED_IMPORTS,
        max_queued_exports: int = MAX_QUEUED_EXPORTS,
        validation_status: int = 422,
        product_ids_key: str = "productIds",
        require_cart_id: bool = True,
        custom_fields: Mapping[str, str] | None = None,
        custom_fields_on_email_route: bool = False,
        email_case_insensitive: bool = True,
        mobile_phone_pattern: str = E164,
        require_csv_content_type: bool = True,
        header_errors: str = "request",
        list_separator: str = "|",
        product_id_column: str = "productId",
        coupon_code_column: str = "code",
        coupon_sets: Iterable[str] | None = None,
        file_url_auth: str = "forbidden",
        file_url_ttl: float = FILE_URL_TTL,
        unset_fields: str = "omit",
        export_contract: str = "documented",
        page_size: int = 20,
        scopes: Iterable[str] | None = None,
        api_keys: Mapping[str, str] | None = None,
        verbose: bool = False,
    ) -> None:
        if not api_key_id or not api_key_secret or ":" in api_key_id:
            raise ValueError("api_key_id (without ':') and api_key_secret must be non-empty")
        self.api_key_id, self.api_key_secret = api_key_id, api_key_secret
        self.export_path = _export_path(export_path)
        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)
        self._contacts: dict[str, dict[str, Any]] = {}
        self._products: dict[str, dict[str, Any]] = {}
        self._purchases: dict[str, dict[str, Any]] = {}
        self._purchase_dups: Counter[str] = Counter()
        self._coupons: dict[str, list[str]] = {}
        self._imports: dict[str, dict[str, Any]] = {}
        self._exports: dict[str, dict[str, Any]] = {}
        self._file_tokens: dict[str, tuple[str, str, float | None]] = {}
        self._tally: Counter[str] = Counter()
        self._generation = 0
        self._stopping = False
        self._fail_next = {"import": 0, "export": 0}
        self._workers: list[threading.Thread] = []
        self._set_options(
            async_delay=async_delay,
            allowed_domains=allowed_domains,
            duplicate_purchase=duplicate_purchase,
            max_import_bytes=max_import_bytes,
            max_queued_imports=max_queued_imports,
            max_queued_exports=max_queued_exports,
            validation_status=validation_status,
            product_ids_key=product_ids_key,
            require_cart_id=require_cart_id,
            custom_fields=custom_fields,
            custom_fields_on_email_route=custom_fields_on_email_route,
            email_case_insensitive=email_case_insensitive,
            mobile_phone_pattern=mobile_phone_pattern,
            require_csv_content_type=require_csv_content_type,
            header_errors=header_errors,
            list_separator=list_separator,
            product_id_column=product_id_column,
            coupon_code_column=coupon_code_column,
            coupon_sets=coupon_sets,
            file_url_auth=file_url_auth,
            file_url_ttl=file_url_ttl,
            unset_fields=unset_fields,
            export_contract=export_contract,
            page_size=page_size,
            scopes=scopes,
            api_keys=api_keys,
        )
        self._files = Router()
        self._files.add("GET", FILES_PREFIX + "imports/{importId}/errors.csv", self._file_error_report_csv)
        self._files.add("GET", FILES_PREFIX + "imports/{importId}/errors.json", self._file_error_report_json)
        self._files.add("GET", FILES_PREFIX + "exports/{exportId}/{fileName}", self._file_export)
        super().__init__(host, port, limit=limit, window_seconds=window_seconds, verbose=verbose)
        self.limiter = ConnectifLimiter(limit, window_seconds)

    # ---------------------------------------------------------------------------------------- options
    def _set_options(self, **options: Any) -> None:
        converted = {name: self._CONVERTERS[name](value) for name, value in options.items()}
        with self._lock:
            for name, value in converted.items():
                setattr(self, name, value)
            if "mobile_phone_pattern" in converted:
                self._phone_re = re.compile(converted["mobile_phone_pattern"])

    def options(self) -> dict[str, Any]:
        with self._lock:
            return {name: copy.deepcopy(getattr(self, name)) for name in self._CONVERTERS}

    def apply_config(self, config: dict[str, Any]) -> dict[str, Any]:
        config = dict(config)
        fail_imports = config.pop("fail_next_imports", None)
        fail_exports = config.pop("fail_next_exports", None)
        unknown = set(config) - set(self._CONVERTERS)
        if unknown:
            raise ValueError(f"unknown config key(s): {sorted(unknown)} (export_path is constructor-only)")
        self._set_options(**config)
        with self._lock:
            if fail_imports is not None:
                self._fail_next["import"] = max(0, int(fail_imports))
            if fail_exports is not None:
                self._fail_next["export"] = max(0, int(fail_exports))
            out = self.options()
            out.update(
                export_path=self.export_path,
                fail_next_imports=self._fail_next["import"],
                fail_next_exports=self._fail_next["export"],
            )
        out.pop("api_keys", None)  # secrets stay out of /_sandbox/config
        return out

    def fail_next_imports(self, n: int = 1) -> None:
        """The next ``n`` imports end with status ``error`` (nothing stored)."""
        self.configure(fail_next_imports=n)

    def fail_next_exports(self, n: int = 1) -> None:
        """The next ``n`` exports end with status ``error`` (no file)."""
        self.configure(fail_next_exports=n)

    # ------------------------------------------------------------------------------------------ hooks
    def register_routes(self, r: Router) -> None:
        s = self._scoped
        r.add(
            "PATCH",
            "/contacts/email/{email}",
            s("contacts:write", self._patch_contact_by_email),
            json_body=True,
        )
        r.add("GET", "/contacts/{email}", s("contacts:read", self._get_contact))
        r.add("PATCH", "/contacts/{email}", s("contacts:write", self._patch_contact), json_body=True)
        r.add("GET", "/products/product-id/{productId}", s("products:read", self._get_product_by_store_id))
        r.add(
            "PATCH",
            "/products/product-id/{productId}",
            s("products:write", self._patch_product),
            json_body=True,
        )
        r.add("GET", "/products/{id}", s("products:read", self._get_product_by_id))
        r.add("POST", "/purchases", s("purchases:write", self._post_purchase), json_body=True)
        r.add("POST", "/imports", s("imports:write", self._post_import))
        r.add("GET", "/imports", s("imports:read", self._list_imports))
        r.add("GET", "/imports/{importId}", s("imports:read", self._get_import))
        base = self.export_path.rstrip("/")
        r.add("POST", base, s("exports:write", self._post_export), json_body=True)
        r.add("GET", base, s("exports:read", self._list_exports))
        r.add("GET", base + "/{exportId}", s("exports:read", self._get_export))

    def _scoped(self, scope: str, handler: Callable[[Request], Response]) -> Callable[[Request], Response]:
        def wrapper(req: Request) -> Response:
            scopes = self.scopes
            if scopes is not None and scope not in scopes:
                raise HTTPError(
                    403, details=f"Permission not granted to the API Key: it lacks the {scope} scope"
                )
            return handler(req)

        return wrapper

    def _check_api_key(self, header: str | None) -> None:
        """Raise 401 unless ``header`` is ``apiKey <keyId>:<keySecret>`` of a known key."""
        if not header:
            raise HTTPError(401, details="Not authorized to access API: missing Authorization header")
        scheme, _, credentials = header.partition(" ")
        if scheme != AUTH_SCHEME:
            raise HTTPError(
                401,
                details=f"Not authorized to access API: use 'Authorization: {AUTH_SCHEME} <keyId>:<keySecret>'",
            )
        key_id, sep, secret = credentials.strip().partition(":")
        keys = {self.api_key_id: self.api_key_secret, **self.api_keys}
        expected = keys.get(key_id)
        ok = bool(sep) and expected is not None
        if not (
            hmac.compare_digest(secret.encode("utf-8", "surrogateescape"), (expected or "").encode()) and ok
        ):
            raise HTTPError(401, details="Not authorized to access API: unknown API key or wrong key secret")

    def authenticate(self, req: Request) -> bool:
        self._check_api_key(req.header("Authorization"))
        return True

    def error_body(
        self, status: int, key: str, message: str, details: str, request_id: str, extra: dict[str, Any]
    ) -> Any:
        extra = dict(extra)
        body: dict[str, Any] = {
            "status": status,
            "title": status_phrase(status),
            "detail": details or message,
        }
        code = extra.pop("code", None)
        if code:
            body["code"] = code
        body.update(extra)
        return body

    def rate_limit_headers(self, state: RateState) -> dict[str, str]:
        reset = state.retry_epoch if state.remaining == 0 else self.limiter.next_slot_epoch()
        return {
            "X-RateLimit-Limit": str(state.limit),
            "X-RateLimit-Remaining": str(state.remaining),
            "X-RateLimit-Reset": str(reset),
        }

    def throttle_headers(self, retry_after: int) -> dict[str, str]:
        return {}  # Connectif documents no Retry-After: X-RateLimit-Reset (on every response) says when

    def new_request_id(self) -> str:
        return uuid.uuid4().hex

    def store_snapshot(self) -> dict[str, Any]:
        """``{"contacts": {email: contact}, "products": {storeProductId: product}, "purchases":
        {purchaseId: {...purchase, "triggerPurchaseEvent": bool}}, "purchase_duplicates": {purchaseId:
        n repeated POSTs}, "coupons": {couponSetId: [codes]}, "imports": {id: Import resource + "_report":
        [error rows] + "_skipped": n}, "exports": {id: Export resource}}``."""
        with self._lock:
            imports = {}
            for iid, imp in self._imports.items():
                imports[iid] = {
                    **self._render_import(imp),
                    "_report": copy.deepcopy(imp["report"]),
                    "_skipped": imp["skipped"],
                }
            return {
                "contacts": copy.deepcopy(self._contacts),
                "products": copy.deepcopy(self._products),
                "purchases": copy.deepcopy(self._purchases),
                "purchase_duplicates": dict(self._purchase_dups),
                "coupons": copy.deepcopy(self._coupons),
                "imports": imports,
                "exports": {
                    eid: self._render_export(exp, fresh_url=False) for eid, exp in self._exports.items()
                },
            }

    @property
    def store(self) -> dict[str, Any]:
        """Thread-safe deep copy; see :meth:`store_snapshot`."""
        return self.store_snapshot()

    def reset_store(self) -> None:
        with self._cond:
            self._contacts.clear()
            self._products.clear()
            self._purchases.clear()
            self._purchase_dups.clear()
            self._coupons.clear()
            self._imports.clear()
            self._exports.clear()
            self._file_tokens.clear()
            self._tally.clear()
            self._fail_next = {"import": 0, "export": 0}
            self._generation += 1
            self._cond.notify_all()

    def extra_stats(self) -> dict[str, Any]:
        with self._lock:
            return {
                "store_counts": {
                    "contacts": len(self._contacts),
                    "products": len(self._products),
                    "purchases": len(self._purchases),
                    "coupons": sum(len(c) for c in self._coupons.values()),
                },
                "purchase_duplicates": sum(self._purchase_dups.values()),
                "imports": dict(Counter(i["status"] for i in self._imports.values())),
                "exports": dict(Counter(e["status"] for e in self._exports.values())),
                "validation_failures": self._tally.get("validation_failures", 0),
            }

    def on_start(self) -> None:
        with self._lock:
            self._stopping = False
        self._workers = [
            threading.Thread(target=self._work, args=(kind,), name=f"connectif-{kind}s", daemon=True)
            for kind in ("import", "export")
        ]
        for worker in self._workers:
            worker.start()

    def on_stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        for worker in self._workers:
            worker.join(timeout=5)
        self._workers = []

    def __enter__(self) -> ConnectifSandbox:
        self.start()
        return self

    # -------------------------------------------------------------------------------------- helpers
    def _bad(self, status: int, detail: str, **extra: Any) -> HTTPError:
        if status == self.validation_status:
            with self._lock:
                self._tally["validation_failures"] += 1
        return HTTPError(status, details=detail, **extra)

    def _invalid(self, problems: list[str]) -> HTTPError:
        return self._bad(self.validation_status, "; ".join(problems))

    def _email_key(self, email: str) -> str:
        return email.lower() if self.email_case_insensitive else email

    def _path_email(self, req: Request) -> str:
        email = req.params["email"]
        if not is_email(email):
            raise self._bad(400, f"'{email}' is not a valid email address")
        return email

    @staticmethod
    def _body_object(req: Request) -> dict[str, Any]:
        if not isinstance(req.body, dict):
            raise HTTPError(400, details="Bad request: the JSON body must be an object")
        return req.body

    def _unset(self, resource: dict[str, Any], optional: Iterable[str]) -> dict[str, Any]:
        for name in optional:
            if resource.get(name) is None:
                if self.unset_fields == "omit":
                    resource.pop(name, None)
                else:
                    resource[name] = None
        return resource

    def _check_value(self, kind: Any, value: Any) -> str | None:
        """None when ``value`` (from JSON) has the type ``kind``; else the problem."""
        if value is None:
            return "must not be null"
        if isinstance(kind, tuple):
            if value not in kind[1]:
                return f"must be one of {', '.join(kind[1])} (got {value!r})"
            return None
        if kind in ("string", "nonempty", "email", "datetime", "phone", "url"):
            if not isinstance(value, str):
                return f"must be a string (got {type(value).__name__})"
            if kind == "nonempty" and not value.strip():
                return "is required and must not be blank"
            if kind == "email" and not is_email(value):
                return f"must be a valid email address (got {value!r})"
            if kind == "datetime" and not is_iso8601(value):
                return f"must be an ISO 8601 date-time (got {value!r})"
            if kind == "phone" and not self._phone_re.fullmatch(value):
                return f"must be a phone number in international format, e.g. +34600000000 (got {value!r})"
            if kind == "url":
                parts = urlsplit(value)
                if parts.scheme not in ("http", "https") or not parts.netloc:
                    return f"must be an absolute http(s) URL (got {value!r})"
            return None
        if kind == "boolean":
            return None if isinstance(value, bool) else f"must be a boolean (got {type(value).__name__})"
        if kind in ("number", "integer"):
            what = "an integer" if kind == "integer" else "a number"
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                return f"must be {what} (got {json.dumps(value)})"
            if kind == "integer" and not float(value).is_integer():  # 2.0 is 2 in JSON
                return f"must be an integer (got {json.dumps(value)})"
            return None
        if kind == "string[]":
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                return "must be an array of strings"
            return None
        raise AssertionError(kind)

    def _parse_text(self, kind: Any, text: str) -> Any:
        """A CSV cell (non-empty) as the value of type ``kind``; ValueError names the problem."""
        if kind in ("number", "integer"):
            pattern = _INT_TEXT if kind == "integer" else _NUM_TEXT
            if not pattern.fullmatch(text):
                raise ValueError(
                    f"must be {'an integer' if kind == 'integer' else 'a number'} (got {text!r})"
                )
            value = float(text) if kind == "number" else int(text)
            if kind == "number" and value.is_integer() and _INT_TEXT.fullmatch(text):
                value = int(text)
            return value
        if kind == "boolean":
            return parse_bool_text(text)
        if kind == "string[]":
            return text.split(self.list_separator)
        problem = self._check_value(kind, text)
        if problem:
            raise ValueError(problem)
        return text

    def _contact_kind(self, field: str) -> Any:
        """Type of a contact field id; None if the field is not accepted."""
        if field in CONTACT_FIELD_TYPES:
            return CONTACT_FIELD_TYPES[field]
        if field == EXTERNAL_ID:
            return "string"
        if field.startswith("_"):
            return None
        if self.custom_fields is None:
            return "any"
        kind = self.custom_fields.get(field)
        return None if kind is None else CUSTOM_FIELD_KINDS[kind]

    def _validate_contact(self, body: dict[str, Any], by_email_route: bool) -> list[str]:
        problems = []
        for field, value in body.items():
            if field == EXTERNAL_ID and not by_email_route:
                problems.append(f"{field}: is not allowed here; use PATCH /contacts/email/{{email}}")
                continue
            if field == "_email":
                problems.append(f"{field}: is not allowed; the email is the path parameter")
                continue
            kind = self._contact_kind(field)
            if kind is None:
                what = "built-in" if field.startswith("_") else "custom"
                problems.append(f"{field}: is not a known {what} contact field")
                continue
            is_custom = not field.startswith("_")
            if is_custom and by_email_route and not self.custom_fields_on_email_route:
                problems.append(f"{field}: custom fields are not accepted by PATCH /contacts/email/{{email}}")
                continue
            if kind == "any":
                ok = (
                    isinstance(value, str | bool)
                    or (isinstance(value, int | float) and math.isfinite(value))
                    or (isinstance(value, list) and all(isinstance(v, str) for v in value))
                )
                problem = None if ok else "must be a string, number, boolean or array of strings"
                if value is None:
                    problem = "must not be null"
            else:
                problem = self._check_value(kind, value)
            if problem:
                problems.append(f"{field}: {problem}")
        return problems

    def _validate_fields(
        self, body: dict[str, Any], types: Mapping[str, Any], prefix: str = "", required: Iterable[str] = ()
    ) -> list[str]:
        problems = [f"{prefix}{name}: is required" for name in required if name not in body]
        for name, value in body.items():
            kind = types.get(name)
            if kind is None:
                problems.append(f"{prefix}{name}: is not a known field")
            elif kind != "items":
                problem = self._check_value(kind, value)
                if problem:
                    problems.append(f"{prefix}{name}: {problem}")
        return problems

    def _domain_allowed(self, url: str) -> bool:
        parts = urlsplit(url)
        for entry in self.allowed_domains or ():
            allowed = urlsplit(entry if "://" in entry else f"//{entry}")
            if allowed.scheme and allowed.scheme.lower() != parts.scheme.lower():
                continue
            if (allowed.hostname or "").lower() == (parts.hostname or "").lower() and (
                allowed.port is None or allowed.port == parts.port
            ):
                return True
        return False

    def _product_ids_extra(self, ids: list[str]) -> dict[str, Any]:
        key = self.product_ids_key
        if key == "both":
            return {"productIds": ids, "productsId": ids}
        return {key: ids}

    # ------------------------------------------------------------------------------------- contacts
    def _get_contact(self, req: Request) -> Response:
        email = self._path_email(req)
        with self._lock:
            contact = self._contacts.get(self._email_key(email))
            if contact is None:
                raise HTTPError(404, details=f"Contact {email} does not exist.")
            return Response(200, copy.deepcopy(contact))

    def _patch_contact(self, req: Request) -> Response:
        return self._upsert_contact_request(req, by_email_route=False)

    def _patch_contact_by_email(self, req: Request) -> Response:
        return self._upsert_contact_request(req, by_email_route=True)

    def _upsert_contact_request(self, req: Request, by_email_route: bool) -> Response:
        email = self._path_email(req)
        body = self._body_object(req)
        problems = self._validate_contact(body, by_email_route)
        if problems:
            raise self._invalid(problems)
        with self._lock:
            key = self._email_key(email)
            contact = self._contacts.get(key)
            if contact is None:
                contact = self._contacts[key] = {"_email": key}
                self._tally["contacts_created"] += 1
            else:
                self._tally["contacts_updated"] += 1
            contact.update(copy.deepcopy(body))
            return Response(200, copy.deepcopy(contact))

    def _contact_by_external_id(self, external_id: str) -> dict[str, Any] | None:
        return next((c for c in self._contacts.values() if c.get(EXTERNAL_ID) == external_id), None)

    # ------------------------------------------------------------------------------------- products
    def _get_product_by_store_id(self, req: Request) -> Response:
        with self._lock:
            product = self._products.get(req.params["productId"])
            if product is None:
                raise HTTPError(404, details=f"Product {req.params['productId']} does not exist.")
            return Response(200, copy.deepcopy(product))

    def _get_product_by_id(self, req: Request) -> Response:
        with self._lock:
            product = next((p for p in self._products.values() if p["id"] == req.params["id"]), None)
            if product is None:
                raise HTTPError(404, details=f"Product {req.params['id']} does not exist.")
            return Response(200, copy.deepcopy(product))

    def _patch_product(self, req: Request) -> Response:
        product_id = req.params["productId"]
        if not product_id.strip():
            raise self._bad(400, "The product id in the path must not be empty")
        body = self._body_object(req)
        problems = self._validate_fields(body, PRODUCT_FIELD_TYPES)
        if problems:
            raise self._invalid(problems)
        url = body.get("productDetailUrl")
        if self.allowed_domains is not None and url and not self._domain_allowed(url):
            raise HTTPError(
                400,
                details="Product had URL from non authorized domain.",
                code="E0201",
                allowedDomains=list(self.allowed_domains),
            )
        with self._lock:
            return Response(200, copy.deepcopy(self._upsert_product(product_id, body)))

    def _upsert_product(
        self, product_id: str, data: dict[str, Any], only_empty: bool = False
    ) -> dict[str, Any]:
        """Create or patch one product (caller holds the lock and validated ``data``)."""
        now = _now()
        product = self._products.get(product_id)
        if product is None:
            product = self._products[product_id] = {
                "id": _new_id(),
                "productId": product_id,
                "availability": "instock",  # "The default value for this field is instock"
                "createdAt": now,
            }
        for name, value in data.items():
            if only_empty and product.get(name) not in (None, "", []):
                continue
            product[name] = copy.deepcopy(value)
        product["updatedAt"] = now
        return product

    # ------------------------------------------------------------------------------------ purchases
    def _post_purchase(self, req: Request) -> Response:
        raw_flag = req.query.get("triggerPurchaseEvent", "true")
        try:
            trigger = parse_bool_text(raw_flag)
        except ValueError:
            raise self._bad(400, f"triggerPurchaseEvent must be true or false (got {raw_flag!r})") from None
        body = self._body_object(req)
        required = [*PURCHASE_REQUIRED, *(("cartId",) if self.require_cart_id else ())]
        problems = self._validate_fields(body, PURCHASE_FIELD_TYPES, required=required)
        if "contactEmail" not in body and "contactExternalId" not in body:
            problems.append("contactEmail: is required (or contactExternalId)")
        items = body.get("products")
        if "products" in body:
            if not isinstance(items, list):
                problems.append("products: must be an array")
            elif not items:
                problems.append("products: must contain at least one product")
            else:
                for i, item in enumerate(items):
                    if not isinstance(item, dict):
                        problems.append(f"products[{i}]: must be an object")
                        continue
                    problems += self._validate_fields(
                        item, PURCHASE_ITEM_TYPES, f"products[{i}].", PURCHASE_ITEM_REQUIRED
                    )
        if problems:
            raise self._invalid(problems)
        with self._lock:
            if "contactEmail" in body:
                who = body["contactEmail"]
                contact = self._contacts.get(self._email_key(who))
            else:
                who = body["contactExternalId"]
                contact = self._contact_by_external_id(who)
            if contact is None:
                raise HTTPError(400, details=f"Contact {who} does not exist.", code="E0101")
            wanted = list(dict.fromkeys(item["productId"] for item in items))
            missing = [pid for pid in wanted if pid not in self._products]
            if missing:
                raise HTTPError(
                    400,
                    details=f"Product {', '.join(missing)} does not exist.",
                    code="E0102",
                    **self._product_ids_extra(missing),
                )
            if self.allowed_domains is not None:
                bad = []
                for item in items:
                    url = item.get("productDetailUrl") or self._products[item["productId"]].get(
                        "productDetailUrl"
                    )
                    if url and not self._domain_allowed(url) and item["productId"] not in bad:
                        bad.append(item["productId"])
                if bad:
                    raise HTTPError(
                        400,
                        details=f"Product {', '.join(bad)} had URL from non authorized domain.",
                        code="E0103",
                        **self._product_ids_extra(bad),
                        allowedDomains=list(self.allowed_domains),
                    )
            pid = body["purchaseId"]
            stored = self._purchases.get(pid)
            if stored is not None:
                if self.duplicate_purchase == "reject":
                    raise HTTPError(409, details=f"Purchase {pid} already exists.")
                self._purchase_dups[pid] += 1
                if self.duplicate_purchase == "accept":
                    return Response(201, {k: v for k, v in stored.items() if k != "triggerPurchaseEvent"})
            self._purchases[pid] = {**copy.deepcopy(body), "triggerPurchaseEvent": trigger}
            return Response(201, copy.deepcopy(body))

    # -------------------------------------------------------------------------------------- imports
    def _queued(self, jobs: dict[str, dict[str, Any]]) -> int:
        return sum(1 for job in jobs.values() if job["status"] in ("queued", "inProgress"))

    def _post_import(self, req: Request) -> Response:
        ctype = req.header("Content-Type") or ""
        if ctype.split(";")[0].strip().lower() != "multipart/form-data":
            raise HTTPError(415, details="Request without multipart/form-data Content-Type header.")
        try:
            parts = parse_multipart(req.raw, ctype)
        except ValueError as exc:
            raise self._bad(400, f"Bad request: malformed multipart/form-data body ({exc})") from None
        fields: dict[str, FormPart] = {}
        problems = []
        for part in parts:
            if part.name is None:
                problems.append("a form part has no name")
            elif part.name in fields:
                problems.append(f"{part.name}: is given more than once")
            else:
                fields[part.name] = part
        file_part = fields.get("file")
        if file_part is not None and len(file_part.data) > self.max_import_bytes:
            raise HTTPError(
                413, details=f"file is too big. Maximum allowed size is {self.max_import_bytes} bytes."
            )
        options, kind, text = self._validate_import_form(fields, problems)
        header, header_problem = (None, None)
        if text is not None and kind is not None:
            header, header_problem = self._check_header(kind, text, options["delimiter"])
            if header_problem and self.header_errors == "request":
                problems.append(f"file: {header_problem}")
        if problems:
            raise self._invalid(problems)
        with self._cond:
            if self._queued(self._imports) >= self.max_queued_imports:
                raise HTTPError(
                    400,
                    details=f"You have reached the limit of {self.max_queued_imports} queued imports. "
                    "Please try again when any queued import has been completed.",
                    code="E0401",
                )
            now = _now()
            imp = {
                "id": _new_id(),
                "type": kind,
                "status": "queued",
                "total": 0,
                "success": 0,
                "errors": 0,
                "errorReportFileUrl": None,
                "origin": "api",
                "options": options,
                "createdAt": now,
                "startedAt": None,
                "finishedAt": None,
                "cancelledAt": None,
                "text": text,
                "header": header,
                "header_problem": header_problem,
                "report": [],
                "skipped": 0,
                "report_token": None,
            }
            self._imports[imp["id"]] = imp
            self._cond.notify_all()
            return Response(201, self._render_import(imp))

    def _validate_import_form(
        self, fields: dict[str, FormPart], problems: list[str]
    ) -> tuple[dict[str, Any], str | None, str | None]:
        for name in fields:
            if name not in IMPORT_FORM_FIELDS:
                problems.append(f"{name}: is not a known import field")
        values: dict[str, str] = {}
        for name in ("type", "overrideExisting", "updateOnlyEmptyFields", "delimiter", "couponSetId"):
            part = fields.get(name)
            if part is None:
                continue
            try:
                values[name] = part.data.decode("utf-8")
            except UnicodeDecodeError:
                problems.append(f"{name}: must be UTF-8 text")
        kind = values.get("type")
        if kind is None:
            problems.append("type: is required")
        elif kind not in IMPORT_TYPES:
            problems.append(f"type: must be one of {', '.join(IMPORT_TYPES)} (got {kind!r})")
            kind = None
        flags: dict[str, bool] = {}
        for name in ("overrideExisting", "updateOnlyEmptyFields"):
            if name not in values:
                problems.append(f"{name}: is required")
                continue
            try:
                flags[name] = parse_bool_text(values[name])
            except ValueError as exc:
                problems.append(f"{name}: {exc}")
        if flags.get("updateOnlyEmptyFields") and flags.get("overrideExisting") is False:
            problems.append("updateOnlyEmptyFields: can only be true if overrideExisting is also true")
        delimiter = values.get("delimiter")
        if delimiter is None:
            problems.append("delimiter: is required")
        elif delimiter not in DELIMITERS:
            problems.append(f"delimiter: must be ',' or ';' (got {delimiter!r})")
        coupon_set = values.get("couponSetId")
        if kind == "coupons":
            if not coupon_set:
                problems.append("couponSetId: is required when type is coupons")
            elif self.coupon_sets is not None and coupon_set not in self.coupon_sets:
                problems.append(f"couponSetId: coupon set {coupon_set} does not exist")
        text = None
        part = fields.get("file")
        if part is None:
            problems.append("file: is required")
        else:
            ctype = (part.content_type or "").lower()
            if self.require_csv_content_type and ctype != "text/csv":
                problems.append(f"file: must have content-type text/csv (got {part.content_type or 'none'})")
            try:
                text = part.data.decode("utf-8")
            except UnicodeDecodeError as exc:
                problems.append(f"file: must be UTF-8 encoded ({exc.reason} at byte {exc.start})")
            else:
                text = text.removeprefix("\ufeff")
        options: dict[str, Any] = {
            "delimiter": delimiter if delimiter in DELIMITERS else ",",
            "overrideExisting": flags.get("overrideExisting", False),
            "updateOnlyEmptyFields": flags.get("updateOnlyEmptyFields", False),
        }
        if kind == "coupons" and coupon_set:
            options = {"couponSetId": coupon_set, **options}
        return options, kind, text

    def _id_column(self, kind: str) -> str:
        return {"contacts": "_email", "products": self.product_id_column, "coupons": self.coupon_code_column}[
            kind
        ]

    def _column_kind(self, kind: str, column: str) -> Any:
        if kind == "contacts":
            return self._contact_kind(column)
        if kind == "products":
            return PRODUCT_FIELD_TYPES.get(column)
        return None

    def _check_header(self, kind: str, text: str, delimiter: str) -> tuple[list[str] | None, str | None]:
        """The header row, and the problem with it (None if usable)."""
        reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
        try:
            header = next(reader, None)
        except csv.Error as exc:
            return None, f"the header row is not valid CSV ({exc})"
        if not header:
            return None, "the CSV file is empty: its first row must hold the field ids"
        id_column = self._id_column(kind)
        if id_column not in header:
            return header, (
                f"the header row must contain the {id_column} column (got {', '.join(header)}; "
                f"delimiter {delimiter!r})"
            )
        repeated = sorted({c for c in header if header.count(c) > 1})
        if repeated:
            return header, f"the header row repeats {', '.join(repeated)}"
        unknown = [c for c in header if c != id_column and self._column_kind(kind, c) is None]
        if unknown:
            return header, f"unknown field id(s) in the header row for {kind}: {', '.join(unknown)}"
        return header, None

    def _render_import(self, imp: dict[str, Any]) -> dict[str, Any]:
        resource = {
            k: copy.deepcopy(imp[k])
            for k in (
                "id",
                "type",
                "status",
                "total",
                "success",
                "errors",
                "errorReportFileUrl",
                "origin",
                "options",
                "createdAt",
                "startedAt",
                "finishedAt",
                "cancelledAt",
            )
        }
        return self._unset(resource, ("errorReportFileUrl", "startedAt", "finishedAt", "cancelledAt"))

    def _get_import(self, req: Request) -> Response:
        with self._lock:
            imp = self._imports.get(req.params["importId"])
            if imp is None:
                raise HTTPError(404, details=f"Import {req.params['importId']} does not exist.")
            return Response(200, self._render_import(imp))

    def _list_imports(self, req: Request) -> Response:
        with self._lock:
            items = [self._render_import(i) for i in reversed(self._imports.values())]
        return Response(200, self._page(req, items))

    def _page(self, req: Request, items: list[dict[str, Any]]) -> dict[str, Any]:
        try:
            limit = int(req.query.get("limit", self.page_size))
            offset = int(req.query.get("offset", 0))
        except ValueError:
            raise self._bad(400, "limit and offset must be integers") from None
        if not 1 <= limit <= 100 or offset < 0:
            raise self._bad(400, "limit must be between 1 and 100 and offset >= 0")
        base = f"{self.url}{req.path}"
        links: dict[str, Any] = {
            "next": f"{base}?{urlencode({'limit': limit, 'offset': offset + limit})}"
            if offset + limit < len(items)
            else None,
            "prev": f"{base}?{urlencode({'limit': limit, 'offset': max(0, offset - limit)})}"
            if offset > 0
            else None,
        }
        return {"links": self._unset(links, ("next", "prev")), "results": items[offset : offset + limit]}

    def cancel_import(self, import_id: str) -> dict[str, Any]:
        """Cancel a queued import (status ``cancelled``); the API's own cancel path is UNKNOWN."""
        with self._lock:
            imp = self._imports.get(import_id)
            if imp is None:
                raise KeyError(import_id)
            if imp["status"] != "queued":
                raise ValueError(
                    f"import {import_id} is {imp['status']}, only queued imports can be cancelled"
                )
            imp.update(status="cancelled", cancelledAt=_now())
            return self._render_import(imp)

    # -------------------------------------------------------------------------------------- exports
    def _post_export(self, req: Request) -> Response:
        body = self._body_object(req)
        export = self._validate_export(body)
        with self._cond:
            if self._queued(self._exports) >= self.max_queued_exports:
                raise HTTPError(
                    400,
                    details=f"You have reached the limit of {self.max_queued_exports} queued exports. "
                    "Please try again when any queued export has been completed or deleted.",
                    code="E0301",
                )
            export.update(
                id=_new_id(),
                status="queued",
                origin="api",
                progress=0,
                total=0,
                createdAt=_now(),
                finishedAt=None,
                fileName=None,
                fileExtension=None,
                content=None,
            )
            self._exports[export["id"]] = export
            self._cond.notify_all()
            return Response(201, self._render_export(export))

    def _validate_export(self, body: dict[str, Any]) -> dict[str, Any]:
        simple = self.export_contract == "simple"
        type_key = "type" if simple else "exportType"
        types = EXPORT_TYPES_SIMPLE if simple else EXPORT_TYPES_DOCUMENTED
        known = (type_key, "delimiter", "dateFormat", "filters") + (() if simple else ("version",))
        problems = [f"{k}: is not a known field" for k in body if k not in known]
        required = (type_key,) if simple else (type_key, "delimiter", "dateFormat")
        problems += [f"{k}: is required" for k in required if k not in body]
        kind = body.get(type_key)
        if type_key in body and kind not in types:
            problems.append(f"{type_key}: must be one of {', '.join(types)} (got {kind!r})")
        delimiter = body.get("delimiter", ",")
        if delimiter not in DELIMITERS:
            problems.append(f"delimiter: must be ',' or ';' (got {delimiter!r})")
        date_format = body.get("dateFormat", "ISO")
        if date_format not in DATE_FORMATS:
            problems.append(f"dateFormat: must be one of {', '.join(DATE_FORMATS)} (got {date_format!r})")
        if "version" in body and body["version"] not in EXPORT_VERSIONS:
            problems.append(f"version: must be v1 or v2 (got {body['version']!r})")
        filters = body.get("filters", {})
        if not isinstance(filters, dict):
            problems.append("filters: must be an object")
            filters = {}
        for key, value in filters.items():
            if key not in ("activityTypes", "fromDate", "toDate", "segmentId"):
                problems.append(f"filters.{key}: is not a known filter")
            elif key == "activityTypes":
                problem = self._check_value("string[]", value)
                if kind != "activities":
                    problem = "can be set only for the activities export type"
                if problem:
                    problems.append(f"filters.activityTypes: {problem}")
            elif key == "segmentId":
                problem = self._check_value("string", value)
                if problem:
                    problems.append(f"filters.segmentId: {problem}")
            elif kind != "activities":
                problems.append(f"filters.{key}: can be set only for the activities export type")
            elif not is_iso8601(value):
                problems.append(f"filters.{key}: must be an ISO 8601 date-time (got {value!r})")
        if kind == "activities":
            start, end = filters.get("fromDate"), filters.get("toDate")
            if start is None or end is None:
                problems.append("filters: fromDate and toDate are required for the activities export type")
            elif is_iso8601(start) and is_iso8601(end):
                a, b = _aware(start), _aware(end)
                if b < a:
                    problems.append("filters.toDate: must not be before fromDate")
                elif b - a > timedelta(days=EXPORT_RANGE_DAYS):
                    problems.append(
                        f"filters: the range between fromDate and toDate cannot be greater than {EXPORT_RANGE_DAYS} days"
                    )
        if problems:
            raise self._invalid(problems)
        export: dict[str, Any] = {
            "exportType": kind,
            "delimiter": delimiter,
            "dateFormat": date_format,
            "filters": copy.deepcopy(filters) if "filters" in body else None,
        }
        if simple:
            export["type"] = kind
        elif "version" in body:
            export["version"] = body["version"]
        return export

    def _render_export(self, exp: dict[str, Any], fresh_url: bool = True) -> dict[str, Any]:
        keys = (
            "id",
            "type",
            "exportType",
            "status",
            "delimiter",
            "dateFormat",
            "filters",
            "version",
            "origin",
            "progress",
            "total",
            "createdAt",
            "finishedAt",
            "fileName",
            "fileExtension",
        )
        resource = {k: copy.deepcopy(exp[k]) for k in keys if k in exp}
        resource["fileUrl"] = None
        if fresh_url and exp["status"] == "finished" and self.url:
            # "Any time the resource is requested a new url will be generated" (valid file_url_ttl s)
            token = secrets.token_urlsafe(18)
            expires = time.time() + self.file_url_ttl
            self._file_tokens[token] = ("export", exp["id"], expires)
            query = urlencode({"token": token, "expires": int(expires)})
            resource["fileUrl"] = f"{self.url}{FILES_PREFIX}exports/{exp['id']}/{exp['fileName']}?{query}"
        return self._unset(resource, ("filters", "finishedAt", "fileName", "fileExtension", "fileUrl"))

    def _get_export(self, req: Request) -> Response:
        with self._lock:
            exp = self._exports.get(req.params["exportId"])
            if exp is None:
                raise HTTPError(404, details=f"Export {req.params['exportId']} does not exist.")
            return Response(200, self._render_export(exp))

    def _list_exports(self, req: Request) -> Response:
        with self._lock:
            items = [self._render_export(e) for e in reversed(self._exports.values())]
        return Response(200, self._page(req, items))

    # ---------------------------------------------------------------------------------------- worker
    def _pause(self, generation: int) -> bool:
        """Sleep ``async_delay``, re-read while waiting: lowering it releases a waiting job at once (a test
        holds an import queued for as long as it needs). False if the sandbox was reset or stopped."""
        started = time.monotonic()
        with self._cond:
            while True:
                if self._stopping or generation != self._generation:
                    return False
                left = started + self.async_delay - time.monotonic()
                if left <= 0:
                    return True
                self._cond.wait(min(left, 0.2))

    def _work(self, kind: str) -> None:
        """One worker per job kind: jobs run one at a time, oldest first."""
        jobs = self._imports if kind == "import" else self._exports
        while True:
            with self._cond:
                while True:
                    if self._stopping:
                        return
                    job = next((j for j in jobs.values() if j["status"] == "queued"), None)
                    if job is not None:
                        break
                    self._cond.wait()
                generation = self._generation
            if not self._pause(generation):
                continue
            with self._lock:
                if generation != self._generation or job["status"] != "queued":
                    continue
                job["status"] = "inProgress"
                if kind == "import":
                    job["startedAt"] = _now()
                fail = self._fail_next[kind] > 0
                self._fail_next[kind] -= int(fail)
            if not self._pause(generation):
                continue
            try:
                with self._lock:
                    if generation != self._generation:
                        continue
                    if fail:
                        job.update(status="error", finishedAt=_now())
                    elif kind == "import":
                        self._run_import(job)
                    else:
                        self._run_export(job)
            except Exception:
                traceback.print_exc()
                with self._lock:
                    job.update(status="error", finishedAt=_now())

    def _run_import(self, imp: dict[str, Any]) -> None:
        """Process every row (caller holds the lock)."""
        if imp["header_problem"]:
            imp.update(status="error", finishedAt=_now())
            return
        kind, header, options = imp["type"], imp["header"], imp["options"]
        reader = csv.reader(io.StringIO(imp["text"], newline=""), delimiter=options["delimiter"])
        id_column = self._id_column(kind)
        seen_codes: set[str] = set()
        row_number = 1
        next(reader)  # header (already checked)
        while True:
            try:
                row = next(reader)
            except StopIteration:
                break
            except csv.Error as exc:
                row_number += 1
                self._row_error(imp, row_number, "", "", f"invalid CSV: {exc}")
                break
            row_number += 1
            if not row or all(cell == "" for cell in row):
                continue  # blank lines are not rows
            key = row[header.index(id_column)] if len(row) > header.index(id_column) else ""
            if len(row) != len(header):
                self._row_error(imp, row_number, key, "", f"expected {len(header)} columns, got {len(row)}")
                continue
            values = dict(zip(header, row, strict=True))
            if kind == "coupons":
                self._import_coupon(imp, row_number, key, seen_codes)
            else:
                self._import_record(imp, kind, row_number, key, values)
        imp.update(status="finished", finishedAt=_now(), total=imp["success"] + imp["errors"])
        if imp["errors"]:
            token = imp["report_token"] = secrets.token_urlsafe(18)
            self._file_tokens[token] = ("import", imp["id"], None)
            query = urlencode({"token": token})
            imp["errorReportFileUrl"] = f"{self.url}{FILES_PREFIX}imports/{imp['id']}/errors.csv?{query}"

    def _row_error(self, imp: dict[str, Any], row: int, key: str, field: str, message: str) -> None:
        imp["report"].append({"row": row, "key": key, "field": field, "message": message})

    def _import_record(
        self, imp: dict[str, Any], kind: str, row: int, key: str, values: dict[str, str]
    ) -> None:
        id_column = self._id_column(kind)
        problems: list[tuple[str, str]] = []
        if kind == "contacts" and not is_email(key):
            problems.append((id_column, f"must be a valid email address (got {key!r})"))
        elif not key.strip():
            problems.append((id_column, "is required and must not be blank"))
        data: dict[str, Any] = {}
        for column, text in values.items():
            if column == id_column or text == "":
                continue
            field_kind = self._column_kind(kind, column)
            try:
                data[column] = text if field_kind == "any" else self._parse_text(field_kind, text)
            except ValueError as exc:
                problems.append((column, str(exc)))
        if problems:
            for column, message in problems:
                self._row_error(imp, row, key, column, message)
            imp["errors"] += 1
            return
        options = imp["options"]
        if kind == "contacts":
            email = self._email_key(key)
            existing = self._contacts.get(email)
            if existing is None:
                self._contacts[email] = {"_email": email, **data}
            elif not options["overrideExisting"]:
                imp["skipped"] += 1
            else:
                for name, value in data.items():
                    if not options["updateOnlyEmptyFields"] or existing.get(name) in (None, "", []):
                        existing[name] = value
        elif key in self._products and not options["overrideExisting"]:
            imp["skipped"] += 1
        else:
            self._upsert_product(key, data, only_empty=options["updateOnlyEmptyFields"])
        imp["success"] += 1

    def _import_coupon(self, imp: dict[str, Any], row: int, code: str, seen: set[str]) -> None:
        column = self.coupon_code_column
        codes = self._coupons.setdefault(imp["options"]["couponSetId"], [])
        if not code.strip():
            self._row_error(imp, row, code, column, "is required and must not be blank")
        elif code in seen:
            self._row_error(imp, row, code, column, f"coupon code {code} is repeated in the file")
        elif code in codes:
            self._row_error(imp, row, code, column, f"coupon code {code} already exists in the coupon set")
        else:
            seen.add(code)
            codes.append(code)
            imp["success"] += 1
            return
        imp["errors"] += 1

    def _run_export(self, exp: dict[str, Any]) -> None:
        """Write the CSV (caller holds the lock)."""
        kind, fmt = exp["exportType"], exp["dateFormat"]
        filters = exp.get("filters") or {}
        rows: list[list[Any]] = []
        if kind == "contacts":
            custom = sorted({k for c in self._contacts.values() for k in c if not k.startswith("_")})
            columns = [*CONTACT_EXPORT_COLUMNS, *custom]
            for contact in self._contacts.values():
                rows.append(
                    [
                        _date_cell(contact.get(c), fmt) if c == "_birthdate" else contact.get(c)
                        for c in columns
                    ]
                )
        elif kind == "products":
            columns = [self.product_id_column, *PRODUCT_FIELD_TYPES]
            for product in self._products.values():
                cells = [product["productId"]]
                for c in PRODUCT_FIELD_TYPES:
                    cells.append(_date_cell(product.get(c), fmt) if c == "publishedAt" else product.get(c))
                rows.append(cells)
        elif kind == "purchases":
            columns = list(PURCHASE_EXPORT_COLUMNS)
            for purchase in self._purchases.values():
                head = [purchase.get(c) for c in PURCHASE_EXPORT_COLUMNS[:8]]
                head[3] = _date_cell(head[3], fmt)
                for item in purchase["products"]:
                    rows.append([*head, *(item.get(c) for c in PURCHASE_EXPORT_COLUMNS[8:])])
        else:  # activities: the sandbox knows purchase activities only
            columns = list(ACTIVITY_EXPORT_COLUMNS)
            types = filters.get("activityTypes")
            start, end = _aware(filters["fromDate"]), _aware(filters["toDate"])
            if types is None or "purchase" in types:
                for p in self._purchases.values():
                    when = _aware(p["purchaseDate"])
                    if not start <= when <= end:
                        continue
                    email = p.get("contactEmail")
                    if email is None:
                        email = (self._contact_by_external_id(p["contactExternalId"]) or {}).get("_email")
                    ids = [item["productId"] for item in p["products"]]
                    rows.append(
                        [
                            email,
                            "purchase",
                            _date_cell(p["purchaseDate"], fmt),
                            p["purchaseId"],
                            p.get("cartId"),
                            p["totalPrice"],
                            p["totalQuantity"],
                            p.get("paymentMethod"),
                            ids,
                        ]
                    )
        out = io.StringIO()
        writer = csv.writer(out, delimiter=exp["delimiter"])
        writer.writerow(columns)
        writer.writerows([[self._csv_cell(v) for v in row] for row in rows])
        exp.update(
            status="finished",
            progress=100,
            total=len(rows),
            finishedAt=_now(),
            fileName=f"export-{kind}-{exp['id']}.csv",
            fileExtension="csv",
            content=out.getvalue().encode("utf-8"),
        )

    def _csv_cell(self, value: Any) -> str:
        if value is None:
            return ""
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, list):
            return self.list_separator.join(str(v) for v in value)
        return str(value)

    # ---------------------------------------------------------------------------------------- files
    def _serve(self, h: Any) -> None:
        split = urlsplit(h.path)
        if split.path.startswith(FILES_PREFIX):
            self._serve_file(h, split.path, dict(parse_qsl(split.query, keep_blank_values=True)))
        else:
            super()._serve(h)

    def _serve_file(self, h: Any, path: str, query: dict[str, str]) -> None:
        """Error reports and export files: faults and recording as for the API, but no rate limit."""
        request_id = self.new_request_id()
        record: dict[str, Any] = {
            "t": time.time(),
            "method": h.command,
            "path": path,
            "query": query,
            "status": None,
            "body": None,
            "throttled": False,
            "fault": None,
        }
        headers: dict[str, str] = {}
        try:
            h.read_body()
            fault = self.faults.take(h.command, path)
            if fault is not None:
                record["fault"] = fault.kind
                if fault.kind == "drop":
                    self._record(record)
                    h.drop()
                    return
                if fault.kind == "status":
                    raise HTTPError(fault.status, details="Injected by the sandbox fault rules")
                if fault.kind == "throttle":
                    self._count("fault_429")
                    headers["X-RateLimit-Reset"] = str(int(time.time()) + fault.retry_after)
                    raise HTTPError(429, details="Injected throttle")
                time.sleep(fault.delay)
            route, params = self._files.match(h.command, path)
            req = Request(h.command, path, query, h.headers, b"", request_id, params=params, route=route)
            auth = req.header("Authorization")
            if self.file_url_auth == "forbidden" and auth:
                raise HTTPError(
                    400,
                    details="File URLs are pre-signed: send no Authorization header "
                    "(only one auth mechanism allowed)",
                )
            if self.file_url_auth == "apiKey":
                self._check_api_key(auth)
            status, data, ctype = route.handler(req)
            record["status"] = status
            self._record(record)
            self._send_bytes(h, status, data, ctype)
        except HTTPError as err:
            resp = self.error_response(err, request_id)
            resp.headers.update(headers)
            record["status"] = resp.status
            record["throttled"] = resp.status == 429
            self._record(record)
            try:
                h.send(resp)
            except OSError:
                h.close_connection = True

    @staticmethod
    def _send_bytes(h: Any, status: int, data: bytes, ctype: str) -> None:
        try:
            h.send_response(status)
            h.send_header("Content-Type", ctype)
            h.send_header("Content-Length", str(len(data)))
            if h.close_connection:
                h.send_header("Connection", "close")
            h.end_headers()
            if h.command != "HEAD":
                h.wfile.write(data)
            h.wfile.flush()
        except OSError:
            h.close_connection = True

    def _file_token(self, req: Request, kind: str, obj_id: str) -> None:
        token = req.query.get("token", "")
        with self._lock:
            entry = self._file_tokens.get(token)
        if entry is None or entry[:2] != (kind, obj_id):
            raise HTTPError(403, details="Invalid or missing file token")
        if entry[2] is not None and time.time() > entry[2]:
            raise HTTPError(403, details="Request has expired: GET the export again for a fresh fileUrl")

    def _import_report(self, req: Request) -> dict[str, Any]:
        iid = req.params["importId"]
        self._file_token(req, "import", iid)
        with self._lock:
            imp = self._imports.get(iid)
            if imp is None:
                raise HTTPError(404, details=f"Import {iid} does not exist.")
            return copy.deepcopy(imp)

    def _file_error_report_csv(self, req: Request) -> tuple[int, bytes, str]:
        imp = self._import_report(req)
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=ERROR_REPORT_COLUMNS)
        writer.writeheader()
        writer.writerows(imp["report"])
        return 200, out.getvalue().encode("utf-8"), "text/csv; charset=utf-8"

    def _file_error_report_json(self, req: Request) -> tuple[int, bytes, str]:
        imp = self._import_report(req)
        body = {"importId": imp["id"], "errors": imp["report"]}
        return 200, json.dumps(body).encode("utf-8"), "application/json; charset=utf-8"

    def _file_export(self, req: Request) -> tuple[int, bytes, str]:
        eid = req.params["exportId"]
        self._file_token(req, "export", eid)
        with self._lock:
            exp = self._exports.get(eid)
            if exp is None or exp["content"] is None or req.params["fileName"] != exp["fileName"]:
                raise HTTPError(404, details=f"No file for export {eid}")
            return 200, exp["content"], "text/csv; charset=utf-8"


def _aware(value: str) -> datetime:
    """ISO 8601 text as an aware datetime (naive values are taken as UTC)."""
    parsed = datetime.fromisoformat(value)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _date_cell(value: Any, fmt: str) -> Any:
    """Export date formats (moment.js tokens as Connectif names them): ISO, L, LL, LLL."""
    if not isinstance(value, str) or not is_iso8601(value):
        return value
    parsed = datetime.fromisoformat(value)
    if fmt == "ISO":
        if parsed.tzinfo is None:
            return value
        return parsed.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    if fmt == "L":
        return parsed.strftime("%m/%d/%Y")
    day = f"{parsed:%B} {parsed.day}, {parsed.year}"
    if fmt == "LL":
        return day
    hour = parsed.hour % 12 or 12
    return f"{day} {hour}:{parsed:%M} {'PM' if parsed.hour >= 12 else 'AM'}"


def main(argv: list[str] | None = None) -> None:
    """CLI: run the sandbox in the foreground until SIGTERM/SIGINT."""
    from sandbox.env import sandbox_parser

    p = sandbox_parser("connectif", __doc__.splitlines()[0])
    p.add_argument("--limit", type=int, default=100, help="requests allowed per window, per account")
    p.add_argument("--window", type=float, default=60.0, help="the limit's sliding window, in seconds")
    p.add_argument("--key-id", default=DEFAULT_KEY_ID, help="the API key id it accepts")
    p.add_argument("--key-secret", default=DEFAULT_KEY_SECRET, help="the API key secret it accepts")
    p.add_argument(
        "--async-delay", type=float, default=0.05, help="seconds an import/export stays in each state"
    )
    p.add_argument("--export-path", default="/exports/", help="path of the exports collection")
    p.add_argument(
        "--export-contract",
        choices=("documented", "simple"),
        default="documented",
        help="the export request body it expects",
    )
    p.add_argument(
        "--allowed-domain",
        dest="allowed_domains",
        action="append",
        metavar="ORIGIN",
        help="authorised domain, repeatable (unset: URLs not checked)",
    )
    p.add_argument(
        "--duplicate-purchase",
        choices=("accept", "reject", "replace"),
        default="accept",
        help="what a second POST of a purchaseId gets",
    )
    p.add_argument(
        "--max-import-bytes", type=int, default=MAX_IMPORT_BYTES, help="largest import file (413 beyond)"
    )
    p.add_argument(
        "--file-url-auth",
        choices=("forbidden", "none", "apiKey"),
        default="forbidden",
        help="what an Authorization header on a pre-signed file URL gets",
    )
    p.add_argument("--verbose", action="store_true", help="log one line per request to stderr")
    args = p.parse_args(argv)
    try:
        sb = ConnectifSandbox(
            args.host,
            args.port,
            args.limit,
            args.window,
            args.key_id,
            args.key_secret,
            args.async_delay,
            export_path=args.export_path,
            export_contract=args.export_contract,
            allowed_domains=args.allowed_domains,
            duplicate_purchase=args.duplicate_purchase,
            max_import_bytes=args.max_import_bytes,
            file_url_auth=args.file_url_auth,
            verbose=args.verbose,
        )
    except ValueError as exc:
        raise SystemExit(f"python -m sandbox.connectif: {exc}") from None
    sb.serve_until_signalled(
        f"Connectif sandbox on {{url}} Authorization: apiKey {args.key_id}:{args.key_secret} "
        f"limit={args.limit}/{args.window:g}s"
    )


if __name__ == "__main__":
    main()
