"""Local Voucherify API sandbox that follows the official OpenAPI 3.0.1 files.

Why: our Voucherify client must be tested against something that behaves like the real API (auth,
documented error bodies, schema validation of request bodies, upserts on ``source_id``, async bulk jobs,
``X-Rate-Limit-*`` headers and 429s) without touching a real project.  Request bodies are validated with
the request schemas of the very spec files we build against, so a body the sandbox accepts is one the
spec accepts.

Run it: ``python -m sandbox.voucherify --port 8010 --limit 100 --window 60`` (``--help`` lists every
knob); in tests use ``VoucherifySandbox(port=0)`` as a context manager.  Generic plumbing lives in
:mod:`sandbox.httpbase`.
"""

from __future__ import annotations

import copy
import hmac
import json
import os
import queue
import secrets
import string
import threading
import time
import traceback
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from jsonschema.exceptions import best_match
from openapi_schema_validator import OAS30Validator, oas30_format_checker

from sandbox.httpbase import HTTPError, RateState, Request, Response, Router, SandboxServer

SPEC_ENV = "VOUCHERIFY_SPEC_DIR"
SPEC_FILES = ("customers", "products", "orders", "async-actions")
DEFAULT_SPEC_DIR = Path(__file__).resolve().parent / "specs" / "voucherify"  # a copy of the official files
DEFAULT_APP_ID = "sandbox-app-id"
DEFAULT_APP_TOKEN = "sandbox-app-token"
BULK_MAX_BYTES = 10_485_760  # "The request can include up to 10 MB of data" (413 above)
ORDERS_IMPORT_MAX = 2000  # "There is a 2000 limit of orders per one request"
ORDER_ITEMS_MAX = 500  # OrderBase.items: "It can include up to 500 items."

# Async action types, checked at start against the AsyncActionBase.type enum of async-actions.json.
CUSTOMERS_BULK_UPDATE = "CUSTOMERS.BULK_UPDATE"
PRODUCTS_BULK_UPDATE = "PRODUCTS.BULK_UPDATE"
ORDERS_IMPORT = "ORDERS.IMPORT"
BULK_UPDATE_TYPES = (CUSTOMERS_BULK_UPDATE, PRODUCTS_BULK_UPDATE)

CUSTOMER_FIELDS = ("name", "description", "email", "phone", "birthday", "birthdate", "address", "metadata")
PRODUCT_FIELDS = ("name", "price", "attributes", "metadata", "image_url")
ORDER_FIELDS = ("status", "amount", "initial_amount", "discount_amount", "metadata", "referrer_id")

# Per-item errors produced for source ids listed in the fault injector's ``item_errors``.
ITEM_ERRORS = {
    CUSTOMERS_BULK_UPDATE: ("invalid_customer", "Customer email is invalid"),
    PRODUCTS_BULK_UPDATE: ("invalid_product", "Product is invalid"),
    ORDERS_IMPORT: ("invalid_order", "Order is invalid"),
}


# Known contradictions in the spec, patched at load: (file, component schema, fix, why).
SPEC_ERRATA = (
    (
        "orders",
        "OrderItem",
        lambda schema: schema.update(required=[r for r in schema.get("required", []) if r != "object"]),
        "OrderItem requires an `object` property it never defines; every order example in the spec "
        "(and real clients) omit it, so requiring it would reject documented requests",
    ),
    (
        "async-actions",
        "17_res_obj_get_async_action_result_orders_import",
        lambda schema: schema["properties"].update(
            failed={"type": "array", "items": schema["properties"]["failed"]}
        ),
        "ORDERS.IMPORT result.failed is typed as one object, but its description ('this array') and the "
        "spec's example give an array of {source_id, reason}; we answer with the array",
    ),
)


class SpecNotFoundError(FileNotFoundError):
    """The OpenAPI folder is missing: say where we looked and how to point elsewhere."""


def resolve_spec_dir(spec_dir: str | os.PathLike[str] | None = None) -> Path:
    """Constructor argument, else $VOUCHERIFY_SPEC_DIR, else sandbox/specs/voucherify (in the repo)."""
    path = Path(spec_dir or os.environ.get(SPEC_ENV) or DEFAULT_SPEC_DIR).expanduser()
    missing = [f"{n}.json" for n in SPEC_FILES if not (path / f"{n}.json").is_file()]
    if not path.is_dir() or missing:
        what = "folder does not exist" if not path.is_dir() else f"missing {', '.join(missing)}"
        raise SpecNotFoundError(
            f"Voucherify OpenAPI spec folder {path} is unusable ({what}). Set the environment variable "
            f"{SPEC_ENV} or pass spec_dir= to point at the folder holding {', '.join(SPEC_FILES)} (.json)."
        )
    return path


def describe_error(err: Any, prefix: str = "") -> str:
    """Voucherify-like details: 'Property .address: ... is not of type ...' (path + validator message)."""
    path = prefix + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err.absolute_path)
    message = err.message if len(err.message) <= 300 else err.message[:297] + "..."
    return f"Property {path}: {message}" if path else f"Payload: {message}"


class VoucherifySpec:
    """The four OpenAPI documents with request-body validators compiled once.

    ``$ref``s are resolved within their own file: each validator's root is ``{"components": ...}`` of
    that file merged with the operation's schema, so ``#/components/schemas/X`` resolves as in the spec.
    OpenAPI 3.0 semantics (``nullable``, formats) come from ``OAS30Validator``.  Contradictions in the
    spec listed in ``SPEC_ERRATA`` are patched before compiling.
    """

    def __init__(self, spec_dir: str | os.PathLike[str] | None = None) -> None:
        self.dir = resolve_spec_dir(spec_dir)
        self.docs: dict[str, dict[str, Any]] = {}
        for name in SPEC_FILES:
            with open(self.dir / f"{name}.json", encoding="utf-8") as fh:
                self.docs[name] = json.load(fh)
        for doc, schema_name, fix, _why in SPEC_ERRATA:
            fix(self.docs[doc]["components"]["schemas"][schema_name])
        self.request: dict[tuple[str, str], Any] = {}  # (METHOD, path template) -> validator
        self.items: dict[tuple[str, str], Any] = {}  # same key, for array bodies: the item validator
        for name, doc in self.docs.items():
            for template, ops in doc.get("paths", {}).items():
                for method, op in ops.items():
                    schema = (
                        (op.get("requestBody", {}) if isinstance(op, dict) else {})
                        .get("content", {})
                        .get("application/json", {})
                        .get("schema")
                    )
                    if schema is None:
                        continue
                    key = (method.upper(), template)
                    self.request[key] = self.validator(name, schema)
                    resolved = self._resolve(name, schema)
                    if resolved.get("type") == "array" and "items" in resolved:
                        self.items[key] = self.validator(name, resolved["items"])
        enum = self.docs["async-actions"]["components"]["schemas"]["AsyncActionBase"]["properties"]["type"]
        for kind in (CUSTOMERS_BULK_UPDATE, PRODUCTS_BULK_UPDATE, ORDERS_IMPORT):
            if kind not in enum["enum"]:
                raise ValueError(f"async action type {kind} is not in the spec's enum {enum['enum']}")

    def query_problem(self, doc: str, template: str, query: dict[str, str]) -> str | None:
        """Check a GET's query against the operation's documented parameters (integers coerced from text);
        None if valid, else the details. Parameters the operation does not document are ignored."""
        op = self.docs[doc]["paths"][template]["get"]
        for param in op.get("parameters", []):
            if "$ref" in param:
                param = self.docs[doc]["components"]["parameters"][param["$ref"].rsplit("/", 1)[-1]]
            name = param.get("name")
            if param.get("in") != "query" or name not in query:
                continue
            schema = self._resolve(doc, param["schema"])
            value: Any = query[name]
            if schema.get("type") == "integer":
                try:
                    value = int(value)
                except ValueError:
                    return f"Query parameter {name}: {value!r} is not an integer"
            details = self.check(self.validator(doc, schema), value)
            if details:
                return f"Query parameter {name}: {details.split(': ', 1)[-1]}"
        return None

    def _resolve(self, doc: str, schema: dict[str, Any]) -> dict[str, Any]:
        while "$ref" in schema:
            schema = self.docs[doc]["components"]["schemas"][schema["$ref"].rsplit("/", 1)[-1]]
        return schema

    def validator(self, doc: str, schema: dict[str, Any]) -> Any:
        root = {"components": self.docs[doc]["components"], **schema}
        return OAS30Validator(root, format_checker=oas30_format_checker)

    def component(self, doc: str, name: str) -> Any:
        """Validator for ``#/components/schemas/<name>`` of one file (tests check responses with it)."""
        return self.validator(doc, {"$ref": f"#/components/schemas/{name}"})

    def response(self, doc: str, method: str, template: str, status: int) -> Any:
        """Validator for the documented JSON response of an operation."""
        op = self.docs[doc]["paths"][template][method.lower()]
        schema = op["responses"][str(status)]["content"]["application/json"]["schema"]
        return self.validator(doc, schema)

    @staticmethod
    def check(validator: Any, instance: Any, prefix: str = "") -> str | None:
        """None if valid, else the details string of the most relevant error."""
        err = best_match(validator.iter_errors(instance))
        return None if err is None else describe_error(err, prefix)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _iso(value: str) -> str:
    """An ISO 8601 date or date-time as the sandbox stamps times (UTC, milliseconds, ``Z``), to compare."""
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _rand(n: int, alphabet: str = string.ascii_letters + string.digits) -> str:
    return "".join(secrets.choice(alphabet) for _ in range(n))


class _Collection:
    """Objects of one resource type by id, with a source_id index (callers hold the sandbox lock)."""

    def __init__(self, resource_type: str) -> None:
        self.resource_type = resource_type
        self.by_id: dict[str, dict[str, Any]] = {}
        self.by_source: dict[str, str] = {}

    def find(self, ref: str) -> dict[str, Any] | None:
        """Path parameters accept the Voucherify id or the source_id."""
        obj = self.by_id.get(ref)
        if obj is None and ref in self.by_source:
            obj = self.by_id.get(self.by_source[ref])
        return obj

    def by_source_id(self, source_id: str) -> dict[str, Any] | None:
        oid = self.by_source.get(source_id)
        return None if oid is None else self.by_id.get(oid)

    def add(self, obj: dict[str, Any]) -> None:
        self.by_id[obj["id"]] = obj
        if obj.get("source_id"):
            self.by_source[obj["source_id"]] = obj["id"]

    def remove(self, obj: dict[str, Any]) -> None:
        self.by_id.pop(obj["id"], None)
        if obj.get("source_id"):
            self.by_source.pop(obj["source_id"], None)

    def get_or_404(self, ref: str) -> dict[str, Any]:
        obj = self.find(ref)
        if obj is None:
            raise self.not_found(ref)
        return obj

    def not_found(self, ref: str) -> HTTPError:
        return HTTPError(
            404,
            "not_found",
            "Resource not found",
            f"Cannot find {self.resource_type} with id {ref}",
            resource_id=ref,
            resource_type=self.resource_type,
        )

    def snapshot(self) -> dict[str, Any]:
        return {o.get("source_id") or oid: copy.deepcopy(o) for oid, o in self.by_id.items()}

    def clear(self) -> None:
        self.by_id.clear()
        self.by_source.clear()


class VoucherifySandbox(SandboxServer):
    """Voucherify customers, products, orders and async actions over real HTTP.

    Request level vs item level for the bulk endpoints (``/customers/bulk/async``,
    ``/products/bulk/async``, ``/orders/import``): the spec types these bodies as arrays whose items
    follow an item schema, documents 413 above 10 MB, 400 ``invalid_payload`` for ``/orders/import``
    and a 2000-order cap, and reports per-item ``errors`` / ``failed`` entries in the async action
    result.  So at request level we reject only what is wrong with the request as a whole - a body
    that is not a JSON array (400), more than 2000 orders (400), more than 10 MB (413).  Each item is
    then checked against the item schema on its own (``source_id`` is required there for customers
    and products): valid items are stored by the async job and invalid ones appear as per-item errors
    in the result.  The spec's 400 example for ``/orders/import`` ("Property .items[0]...") shows
    that the real API may also reject a whole import for one malformed item, so clients must handle
    both; ``bulk_validation="request"`` switches the sandbox to that stricter behaviour.
    """

    name = "voucherify"
    throttle_message = "Too many requests hit the API too quickly."

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        limit: int = 100,
        window_seconds: float = 60.0,
        app_id: str = DEFAULT_APP_ID,
        app_token: str = DEFAULT_APP_TOKEN,
        async_delay: float = 0.05,
        spec_dir: str | os.PathLike[str] | None = None,
        *,
        verbose: bool = False,
        bulk_validation: str = "item",
    ) -> None:
        self.spec = VoucherifySpec(spec_dir)
        self.app_id, self.app_token = app_id, app_token
        self.async_delay = float(async_delay)
        self.bulk_validation = self._check_bulk_validation(bulk_validation)
        self._lock = threading.RLock()
        self.customers = _Collection("customer")
        self.products = _Collection("product")
        self.orders = _Collection("order")
        self._actions: dict[str, dict[str, Any]] = {}
        self._jobs: queue.Queue[tuple[str, int, list[tuple[Any, str | None]]] | None] = queue.Queue()
        self._generation = 0  # bumped by reset(): jobs of an older generation are dropped
        # ids of customers upserted through the customers endpoints; orders create their customers too
        self._customers_upserted: set[str] = set()
        self._fail_next = 0
        self._worker: threading.Thread | None = None
        super().__init__(host, port, limit=limit, window_seconds=window_seconds, verbose=verbose)

    @staticmethod
    def _check_bulk_validation(value: str) -> str:
        if value not in ("item", "request"):
            raise ValueError("bulk_validation must be 'item' or 'request'")
        return value

    # ------------------------------------------------------------------------------------------ hooks
    def register_routes(self, r: Router) -> None:
        big = BULK_MAX_BYTES
        r.add("POST", "/v1/customers/bulk/async", self._customers_bulk, json_body=True, max_bytes=big)
        r.add("GET", "/v1/customers", self._customers_list)
        r.add("POST", "/v1/customers", self._customer_create, json_body=True)
        r.add("GET", "/v1/customers/{customerId}", self._customer_get)
        r.add("PUT", "/v1/customers/{customerId}", self._customer_update, json_body=True)
        r.add("DELETE", "/v1/customers/{customerId}", self._customer_delete)
        r.add("POST", "/v1/products/bulk/async", self._products_bulk, json_body=True, max_bytes=big)
        r.add("GET", "/v1/products", self._products_list)
        r.add("POST", "/v1/products", self._product_create, json_body=True)
        r.add("GET", "/v1/products/{productId}", self._product_get)
        r.add("PUT", "/v1/products/{productId}", self._product_update, json_body=True)
        r.add("DELETE", "/v1/products/{productId}", self._product_delete)
        r.add("POST", "/v1/orders/import", self._orders_import, json_body=True, max_bytes=big)
        r.add("GET", "/v1/orders", self._orders_list)
        r.add("POST", "/v1/orders", self._order_create, json_body=True)
        r.add("GET", "/v1/orders/{orderId}", self._order_get)
        r.add("PUT", "/v1/orders/{orderId}", self._order_update, json_body=True)
        r.add("GET", "/v1/async-actions", self._async_actions_list)
        r.add("GET", "/v1/async-actions/{asyncActionId}", self._async_action_get)

    def authenticate(self, req: Request) -> bool:
        app_id, token = (req.header(name) or "" for name in ("X-App-Id", "X-App-Token"))
        id_ok = hmac.compare_digest(app_id.encode(), self.app_id.encode())  # bytes: any header text is safe
        return hmac.compare_digest(token.encode(), self.app_token.encode()) and id_ok

    def error_body(
        self, status: int, key: str, message: str, details: str, request_id: str, extra: dict[str, Any]
    ) -> Any:
        if status == 413:
            # The spec documents 413 in its gateway shape {statusCode, error, message}; we add the
            # common fields too, but a client should branch on the HTTP status, not on `code`.
            return {
                "statusCode": 413,
                "error": "Request Entity Too Large",
                "message": f"Payload content length greater than maximum allowed: {BULK_MAX_BYTES}",
                "code": 413,
                "key": "query_too_large",
                "details": details,
                "request_id": request_id,
            }
        return {
            "code": status,
            "key": key,
            "message": message,
            "details": details,
            "request_id": request_id,
            **extra,
        }

    def rate_limit_headers(self, state: RateState) -> dict[str, str]:
        return {
            "X-Rate-Limit-Limit": str(state.limit),
            "X-Rate-Limit-Remaining": str(state.remaining),
            "X-Rate-Limit-Retry": str(state.retry_epoch),
        }

    def throttle_headers(self, retry_after: int) -> dict[str, str]:
        return {"Retry-After": str(retry_after), "X-Rate-Limit-Type": "api_calls"}

    def new_request_id(self) -> str:
        return "v-" + secrets.token_hex(9)

    def store_snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "customers": self.customers.snapshot(),
                "products": self.products.snapshot(),
                "orders": self.orders.snapshot(),
            }

    @property
    def store(self) -> dict[str, Any]:
        """Thread-safe deep copy: {"customers": {...}, "products": {...}, "orders": {...}} by source_id."""
        return self.store_snapshot()

    def reset_store(self) -> None:
        with self._lock:
            for coll in (self.customers, self.products, self.orders):
                coll.clear()
            self._customers_upserted.clear()
            self._actions.clear()
            self._generation += 1
            self._fail_next = 0

    def apply_config(self, config: dict[str, Any]) -> dict[str, Any]:
        unknown = set(config) - {"async_delay", "bulk_validation", "fail_next_async_actions"}
        if unknown:
            raise ValueError(f"unknown config key(s): {sorted(unknown)}")
        if "async_delay" in config:
            if float(config["async_delay"]) < 0:
                raise ValueError("async_delay must be >= 0")
            self.async_delay = float(config["async_delay"])
        if "bulk_validation" in config:
            self.bulk_validation = self._check_bulk_validation(config["bulk_validation"])
        if "fail_next_async_actions" in config:
            self.fail_next_async_actions(int(config["fail_next_async_actions"]))
        return {
            "async_delay": self.async_delay,
            "bulk_validation": self.bulk_validation,
            "fail_next_async_actions": self._fail_next,
        }

    def extra_stats(self) -> dict[str, Any]:
        with self._lock:
            return {
                "store_counts": {
                    "customers": len(self.customers.by_id),
                    "products": len(self.products.by_id),
                    "orders": len(self.orders.by_id),
                },
                # the others were created as orders' customers
                "customers_upserted": len(self._customers_upserted & set(self.customers.by_id)),
                "async_actions": dict(Counter(a["status"] for a in self._actions.values())),
            }

    def on_start(self) -> None:
        self._worker = threading.Thread(target=self._work, name="voucherify-async", daemon=True)
        self._worker.start()

    def on_stop(self) -> None:
        self._jobs.put(None)
        if self._worker is not None:
            self._worker.join(timeout=5)
            self._worker = None

    def actions(self) -> list[dict[str, Any]]:
        """Every async action so far, oldest first, without its result (benchmarks read their timings)."""
        with self._lock:
            return [
                {k: copy.deepcopy(v) for k, v in a.items() if k != "result"} for a in self._actions.values()
            ]

    def fail_next_async_actions(self, n: int = 1) -> None:
        """The next ``n`` async actions end FAILED (nothing stored), to test a client's FAILED path."""
        with self._lock:
            self._fail_next = max(0, int(n))

    def __enter__(self) -> VoucherifySandbox:
        self.start()
        return self

    # -------------------------------------------------------------------------------------- helpers
    def _validate(self, req: Request) -> None:
        assert req.route is not None
        details = self.spec.check(self.spec.request[(req.method, req.route.template)], req.body)
        if details:
            raise HTTPError(400, "invalid_payload", "Invalid payload", details)

    @staticmethod
    def _order_items_problem(order: Any, prefix: str = "") -> str | None:
        """The items cap is stated in the schema's description, not as maxItems: enforce its words."""
        items = order.get("items") if isinstance(order, dict) else None
        if isinstance(items, list) and len(items) > ORDER_ITEMS_MAX:
            return (
                f"Property {prefix}.items: must NOT have more than {ORDER_ITEMS_MAX} items (got {len(items)}); "
                f"an order can include up to {ORDER_ITEMS_MAX} items"
            )
        return None

    def _check_order_items(self, order: Any) -> None:
        details = self._order_items_problem(order)
        if details:
            raise HTTPError(400, "invalid_payload", "Invalid payload", details)

    def _documented(self, action_type: str, item: Any, index: int) -> str | None:
        """Per-item rules the pages state in words (the schema checks come first)."""
        if action_type == ORDERS_IMPORT:
            return self._order_items_problem(item, f"[{index}]")
        return None

    @staticmethod
    def _apply(obj: dict[str, Any], data: dict[str, Any], fields: tuple[str, ...], created: bool) -> None:
        """Set the given fields (absent ones stay unchanged, `metadata` is replaced as a whole)."""
        for name in fields:
            if name in data:
                obj[name] = copy.deepcopy(data[name])
        if obj.get("metadata") is None:
            obj["metadata"] = {}
        if not created:
            obj["updated_at"] = _now()

    def _upsert_customer(
        self, data: dict[str, Any], *, by_id: bool = True, direct: bool = True
    ) -> tuple[dict[str, Any], bool]:
        """Create or update on ``id`` (must exist) or ``source_id``; ``direct``: through the customers
        endpoints, not as an order's customer. The caller holds the lock."""
        obj = None
        if by_id and data.get("id"):
            obj = self.customers.by_id.get(data["id"])
            if obj is None:
                raise self.customers.not_found(data["id"])
        elif data.get("source_id"):
            obj = self.customers.by_source_id(data["source_id"])
        created = obj is None
        if obj is None:
            obj = {"id": "cust_" + _rand(24)}
            if data.get("source_id"):
                obj["source_id"] = data["source_id"]
            obj.update(
                summary={
                    "redemptions": {
                        "total_redeemed": 0,
                        "total_failed": 0,
                        "total_succeeded": 0,
                        "total_rolled_back": 0,
                        "total_rollback_failed": 0,
                        "total_rollback_succeeded": 0,
                        "gift": {"redeemed_amount": 0, "amount_to_go": 0},
                        "loyalty_card": {"redeemed_points": 0, "points_to_go": 0},
                    },
                    "orders": {
                        "total_amount": 0,
                        "total_count": 0,
                        "average_amount": 0,
                        "last_order_amount": 0,
                    },
                },
                loyalty={"points": 0, "referred_customers": 0, "campaigns": {}},
                referrals={"total": 0, "campaigns": []},
                metadata={},
                system_metadata={},
                created_at=_now(),
                object="customer",
            )
            self.customers.add(obj)
        self._apply(obj, data, CUSTOMER_FIELDS, created)
        if direct:
            self._customers_upserted.add(obj["id"])
        return obj, created

    def _upsert_product(self, data: dict[str, Any], *, by_id: bool = True) -> dict[str, Any]:
        obj = None
        if by_id and data.get("id"):
            obj = self.products.by_id.get(data["id"])
            if obj is None:
                raise self.products.not_found(data["id"])
        elif data.get("source_id"):
            obj = self.products.by_source_id(data["source_id"])
        created = obj is None
        if obj is None:
            obj = {
                "id": "prod_" + secrets.token_hex(9)[:17],
                "source_id": data.get("source_id"),
                "name": None,
                "price": None,
                "attributes": [],
                "metadata": {},
                "image_url": None,
                "skus": {"object": "list", "data_ref": "data", "data": [], "total": 0},
                "created_at": _now(),
                "updated_at": None,
                "object": "product",
            }
            self.products.add(obj)
        self._apply(obj, data, PRODUCT_FIELDS, created)
        return obj

    def _upsert_order(
        self, data: dict[str, Any], *, by_id: bool = True, keep_created_at: bool = True
    ) -> dict[str, Any]:
        """Create/update an order; its ``customer`` / ``referrer`` objects are upserted into customers."""
        obj = None
        if by_id and data.get("id"):
            obj = self.orders.by_id.get(data["id"])
            if obj is None:
                raise self.orders.not_found(data["id"])
        elif data.get("source_id"):
            obj = self.orders.by_source_id(data["source_id"])
        people = {}
        for role in ("customer", "referrer"):  # before any write, so a 404 leaves no half-made order
            if isinstance(data.get(role), dict):
                people[role] = data[role]
        upserted = {role: self._upsert_customer(person, direct=False)[0] for role, person in people.items()}
        created = obj is None
        if obj is None:
            obj = {
                "id": "ord_" + _rand(23),
                "source_id": data.get("source_id"),
                "status": "CREATED",
                "amount": 0,
                "items": [],
                "metadata": {},
                "object": "order",
                "created_at": _now(),
                "updated_at": None,
                "customer_id": None,
                "referrer_id": None,
            }
            if keep_created_at and data.get("created_at"):
                obj["created_at"] = data["created_at"]
            self.orders.add(obj)
        self._apply(obj, data, ORDER_FIELDS, created)
        if "items" in data:
            obj["items"] = [self._order_item(item) for item in data["items"] or []]
            if "amount" not in data:
                obj["amount"] = sum(item.get("amount") or 0 for item in obj["items"])
        for role, cust in upserted.items():
            obj[f"{role}_id"] = cust["id"]
            obj[role] = {"id": cust["id"], "object": "customer"}
        return obj

    @staticmethod
    def _order_item(item: Any) -> Any:
        if not isinstance(item, dict):
            return item
        out = {**copy.deepcopy(item), "object": "order_item"}
        if out.get("amount") is None and isinstance(out.get("price"), int):
            out["amount"] = out["price"] * int(out.get("quantity") or 1)
        return out

    # ----------------------------------------------------------------------------------------- lists
    def _list(self, req: Request, doc: str, coll: _Collection, newest_first: bool) -> Response:
        """``GET /v1/{customers|orders|products}``: ``limit`` 1..100 (default 10), ``page`` from 1 (99 at
        most for customers), ``order`` by ``created_at``/``updated_at``/``source_id`` (``-`` descending);
        unordered, customers come newest first and orders oldest first, as their pages say. Customers
        also take the ``email`` filter. (``starting_after`` and the other filters are not served.)"""
        details = self.spec.query_problem(doc, f"/v1/{doc}", req.query)
        if details:
            raise HTTPError(400, "invalid_query_params", "Invalid query params", details)
        limit, page = int(req.query.get("limit", 10)), int(req.query.get("page", 1))
        with self._lock:
            items = list(coll.by_id.values())  # insertion order: creation order
            if doc == "customers" and req.query.get("email"):
                items = [c for c in items if (c.get("email") or "").lower() == req.query["email"].lower()]
            order = req.query.get("order")
            if order:
                field = order.lstrip("-")
                items.sort(key=lambda o: (o.get(field) is None, str(o.get(field) or "")))
                if order.startswith("-"):
                    items.reverse()
            elif newest_first:
                items.reverse()
            chunk = [copy.deepcopy(o) for o in items[(page - 1) * limit : page * limit]]
        body: dict[str, Any] = {"object": "list", "data_ref": doc, doc: chunk, "total": len(items)}
        if doc == "customers":
            body["has_more"] = page * limit < len(items)
        return Response(200, body)

    def _customers_list(self, req: Request) -> Response:
        return self._list(req, "customers", self.customers, newest_first=True)

    def _orders_list(self, req: Request) -> Response:
        return self._list(req, "orders", self.orders, newest_first=False)

    def _products_list(self, req: Request) -> Response:
        return self._list(req, "products", self.products, newest_first=False)

    # ------------------------------------------------------------------------------------- customers
    def _customer_create(self, req: Request) -> Response:
        self._validate(req)
        with self._lock:
            obj, _ = self._upsert_customer(req.body)
            return Response(200, copy.deepcopy(obj))

    def _customer_get(self, req: Request) -> Response:
        with self._lock:
            return Response(200, copy.deepcopy(self.customers.get_or_404(req.params["customerId"])))

    def _customer_update(self, req: Request) -> Response:
        self._validate(req)
        with self._lock:
            obj = self.customers.get_or_404(req.params["customerId"])
            self._apply(obj, req.body, CUSTOMER_FIELDS, created=False)
            return Response(200, copy.deepcopy(obj))

    def _customer_delete(self, req: Request) -> Response:
        with self._lock:
            self.customers.remove(self.customers.get_or_404(req.params["customerId"]))
        return Response(204)

    # -------------------------------------------------------------------------------------- products
    def _product_create(self, req: Request) -> Response:
        self._validate(req)
        with self._lock:
            return Response(200, copy.deepcopy(self._upsert_product(req.body)))

    def _product_get(self, req: Request) -> Response:
        with self._lock:
            return Response(200, copy.deepcopy(self.products.get_or_404(req.params["productId"])))

    def _product_update(self, req: Request) -> Response:
        self._validate(req)
        with self._lock:
            obj = self.products.get_or_404(req.params["productId"])
            self._apply(obj, req.body, PRODUCT_FIELDS, created=False)
            return Response(200, copy.deepcopy(obj))

    def _product_delete(self, req: Request) -> Response:
        # The real API moves the product to the bin unless force=true; either way it is gone for GET.
        with self._lock:
            self.products.remove(self.products.get_or_404(req.params["productId"]))
        return Response(204)

    # ---------------------------------------------------------------------------------------- orders
    def _order_create(self, req: Request) -> Response:
        self._validate(req)
        self._check_order_items(req.body)
        with self._lock:
            return Response(200, copy.deepcopy(self._upsert_order(req.body)))

    def _order_get(self, req: Request) -> Response:
        with self._lock:
            return Response(200, copy.deepcopy(self.orders.get_or_404(req.params["orderId"])))

    def _order_update(self, req: Request) -> Response:
        self._validate(req)
        self._check_order_items(req.body)
        with self._lock:
            obj = self.orders.get_or_404(req.params["orderId"])
            body = {k: v for k, v in req.body.items() if k not in ("id", "source_id")}
            return Response(200, copy.deepcopy(self._upsert_order({**body, "id": obj["id"]})))

    # ------------------------------------------------------------------------------------ bulk/async
    def _customers_bulk(self, req: Request) -> Response:
        return Response(202, {"async_action_id": self._submit_bulk(req, CUSTOMERS_BULK_UPDATE)})

    def _products_bulk(self, req: Request) -> Response:
        return Response(202, {"async_action_id": self._submit_bulk(req, PRODUCTS_BULK_UPDATE)})

    def _orders_import(self, req: Request) -> Response:
        if isinstance(req.body, list) and len(req.body) > ORDERS_IMPORT_MAX:
            raise HTTPError(
                400,
                "invalid_payload",
                "Invalid payload",
                f"Property .: must NOT have more than {ORDERS_IMPORT_MAX} items "
                f"(got {len(req.body)}); there is a {ORDERS_IMPORT_MAX} limit of orders per request",
            )
        return Response(200, {"async_action_id": self._submit_bulk(req, ORDERS_IMPORT)})  # 200 per the spec

    def _submit_bulk(self, req: Request, action_type: str) -> str:
        """Request-level checks, per-item schema checks, then queue the job (see the class docstring)."""
        assert req.route is not None
        key = (req.method, req.route.template)
        if not isinstance(req.body, list):
            raise HTTPError(
                400,
                "invalid_payload",
                "Invalid payload",
                f"Payload: must be an array, got {type(req.body).__name__}",
            )
        if self.bulk_validation == "request":
            self._validate(req)
        checked = [
            (
                item,
                self.spec.check(self.spec.items[key], item, f"[{i}]")
                or self._documented(action_type, item, i),
            )
            for i, item in enumerate(req.body)
        ]
        first = next((details for _, details in checked if details), None)
        if self.bulk_validation == "request" and first:
            raise HTTPError(400, "invalid_payload", "Invalid payload", first)
        now = _now()
        action: dict[str, Any] = {
            "id": "aa_" + secrets.token_hex(9),
            "type": action_type,
            "status": "ENQUEUED",
        }
        if action_type in BULK_UPDATE_TYPES:
            action["operation_status"] = "UNKNOWN"
        action.update(
            created_at=now,
            updated_at=now,
            request_id=req.request_id,
            processing_time=0,
            progress=0,
            object="async_action",
        )
        with self._lock:
            self._actions[action["id"]] = action
            generation = self._generation
        self._jobs.put((action["id"], generation, checked))
        return action["id"]

    def _async_actions_list(self, req: Request) -> Response:
        """``GET /v1/async-actions``: ``limit`` (1..100, default 10) actions, newest first as the spec's
        example lists them, ``end_date`` keeping those created before it; each without its ``result`` ("a
        status DONE doesn't include the result of the completed action")."""
        details = self.spec.query_problem("async-actions", "/v1/async-actions", req.query)
        if details:
            raise HTTPError(400, "invalid_query_params", "Invalid query params", details)
        limit = int(req.query.get("limit", 10))
        end = req.query.get("end_date")
        try:
            before = None if end is None else _iso(end)
        except ValueError:
            raise HTTPError(
                400,
                "invalid_query_params",
                "Invalid query params",
                "Property .end_date cannot be recognized as a ISO-8601 compliant date",
            ) from None
        with self._lock:
            actions = [a for a in self._actions.values() if before is None or a["created_at"] < before]
            listed = [{k: copy.deepcopy(v) for k, v in a.items() if k != "result"} for a in reversed(actions)]
        body = {"object": "list", "data_ref": "async_actions", "async_actions": listed[:limit]}
        return Response(200, {**body, "has_more": len(listed) > limit})

    def _async_action_get(self, req: Request) -> Response:
        aid = req.params["asyncActionId"]
        with self._lock:
            action = self._actions.get(aid)
            if action is None:
                raise HTTPError(
                    404,
                    "not_found",
                    "Resource not found",
                    f"Cannot find async_action with id {aid}",
                    resource_id=aid,
                    resource_type="async_action",
                )
            return Response(200, copy.deepcopy(action))

    def _work(self) -> None:
        """One worker: actions run one at a time in submission order, like Voucherify's bulk queue."""
        while True:
            job = self._jobs.get()
            if job is None:
                return
            try:
                self._run(*job)
            except Exception:
                traceback.print_exc()
                with self._lock:
                    action = self._actions.get(job[0])
                    if action is not None:
                        action.update(status="FAILED", updated_at=_now(), progress=100)

    def _run(self, aid: str, generation: int, items: list[tuple[Any, str | None]]) -> None:
        with self._lock:
            action = self._actions.get(aid)
            if action is None or generation != self._generation:
                return
            action.update(status="IN_PROGRESS", updated_at=_now())
            fail_all = self._fail_next > 0
            self._fail_next -= int(fail_all)
        started = time.monotonic()
        # async_delay is read as it goes: a test can hold the queue with a long delay, then release it.
        while (left := started + self.async_delay - time.monotonic()) > 0:
            if generation != self._generation:
                return
            time.sleep(min(left, 0.05))
        kind = action["type"]
        errors: list[dict[str, Any]] = []
        done = 0
        for n, (item, invalid) in enumerate(items, 1):
            sid = item.get("source_id") if isinstance(item, dict) else None
            with self._lock:
                if generation != self._generation:
                    return  # reset while running
                error = self._run_item(kind, item, sid, invalid, fail_all)
                if error:
                    errors.append(error)
                else:
                    done += 1
                action["progress"] = int(100 * n / len(items))
        with self._lock:
            if generation != self._generation:
                return
            action.update(
                status="FAILED" if fail_all else "DONE",
                progress=100,
                updated_at=_now(),
                processing_time=int((time.monotonic() - started) * 1000),
                result=self._result(kind, done, errors),
            )
            if kind in BULK_UPDATE_TYPES:
                action["operation_status"] = "FAILED" if fail_all else "SUCCESS"

    def _run_item(
        self, kind: str, item: Any, sid: Any, invalid: str | None, fail_all: bool
    ) -> dict[str, Any] | None:
        """Store one bulk item; return its error entry (result shape of the action type) or None."""
        if fail_all:
            key, message, details = "internal_error", "Internal error", "The async action failed (sandbox)"
        elif invalid:
            key, message, details = "invalid_payload", "Invalid payload", invalid
        elif self.faults.is_item_error(sid):
            key, message = ITEM_ERRORS[kind]
            details = f"{message} (source_id {sid}, sandbox item_errors)"
        else:
            try:
                if kind == CUSTOMERS_BULK_UPDATE:
                    self._upsert_customer(item, by_id=False)
                elif kind == PRODUCTS_BULK_UPDATE:
                    self._upsert_product(item, by_id=False)
                else:
                    # "The orders will also have a `created_at` date that's assigned when they've been imported"
                    self._upsert_order(item, keep_created_at=False)
                return None
            except HTTPError as err:
                key, message, details = err.key, err.message, err.details
        if kind == ORDERS_IMPORT:  # ORDERS.IMPORT example: failed[{source_id (may be null), reason}]
            return {"source_id": sid, "reason": details or message}
        # BULK_UPDATE errors[{message, details, key, source_id}]: source_id is a required string there
        return {
            "message": message,
            "details": details,
            "key": key,
            "source_id": "" if sid is None else str(sid),
        }

    @staticmethod
    def _result(kind: str, done: int, errors: list[dict[str, Any]]) -> dict[str, Any]:
        if kind == ORDERS_IMPORT:
            return {
                "message": f"{done} order(s) imported successfully, {len(errors)} failed.",
                "failed": errors,
                "done_count": done,
                "failed_count": len(errors),
            }
        till = (
            (datetime.now(UTC) + timedelta(days=7)).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        )
        return {
            "done_count": done,
            "failed_count": len(errors),
            "reports": [],
            "reports_available_till": till,
            "errors": errors,
        }


def main(argv: list[str] | None = None) -> None:
    """CLI: run the sandbox in the foreground until SIGTERM/SIGINT."""
    from sandbox.env import sandbox_parser

    p = sandbox_parser("voucherify", __doc__.splitlines()[0])
    p.add_argument("--limit", type=int, default=100, help="requests allowed per window (429 beyond)")
    p.add_argument("--window", type=float, default=60.0, help="the limit's sliding window, in seconds")
    p.add_argument("--app-id", default=DEFAULT_APP_ID, help="the X-App-Id it accepts")
    p.add_argument("--app-token", default=DEFAULT_APP_TOKEN, help="the X-App-Token it accepts")
    p.add_argument(
        "--async-delay", type=float, default=0.05, help="seconds an async action stays IN_PROGRESS"
    )
    p.add_argument(
        "--spec-dir", default=None, help=f"OpenAPI folder (unset: ${SPEC_ENV} or {DEFAULT_SPEC_DIR})"
    )
    p.add_argument(
        "--bulk-validation",
        choices=("item", "request"),
        default="item",
        help="a bad item in a bulk body fails that item, or the whole request",
    )
    p.add_argument("--verbose", action="store_true", help="log one line per request to stderr")
    args = p.parse_args(argv)
    try:
        sb = VoucherifySandbox(
            args.host,
            args.port,
            args.limit,
            args.window,
            args.app_id,
            args.app_token,
            args.async_delay,
            args.spec_dir,
            verbose=args.verbose,
            bulk_validation=args.bulk_validation,
        )
    except SpecNotFoundError as exc:
        raise SystemExit(str(exc)) from None
    sb.serve_until_signalled(
        f"Voucherify sandbox on {{url}} X-App-Id={args.app_id} X-App-Token={args.app_token} "
        f"limit={args.limit}/{args.window:g}s"
    )


if __name__ == "__main__":
    main()
