"""Voucherify load operators: thin adapters over the generic load (the mapping lives in SQL)."""

from __future__ import annotations

from typing import Any, ClassVar

from reverse_etl.batching import json_array
from reverse_etl.errors import VendorRejected
from reverse_etl.hooks.voucherify import VoucherifyHook
from reverse_etl.jobs import Finished
from reverse_etl.ledger import DELETED, DELIVERED, FAILED, Outcome, Planned
from reverse_etl.operators.load import SyncLoadOperator

# "The request can include up to 10 MB of data"; the documented 413 says "greater than maximum allowed:
# 10485760". Our batches stop at 10,000,000 bytes of body (compact JSON, UTF-8): the smaller reading of
# "10 MB", 485,760 bytes under the documented cap.
MAX_BODY_BYTES = 10_000_000


def _payloads(batch: list[Planned]) -> list[Any]:
    import json

    return [json.loads(p.payload) for p in batch]


def _for_import(order: dict) -> dict:
    """An order for ``/v1/orders/import``: without ``created_at``, which the import replaces by its own time."""
    return {k: v for k, v in order.items() if k != "created_at"}


def _action_outcomes(action: dict, batch: list[Planned]) -> list[Outcome]:
    """Per-record outcomes from an async action's result: listed errors fail, the rest are delivered."""
    result = action.get("result") or {}
    errors: dict[str, str] = {}
    failed = result.get("errors") or result.get("failed") or []
    for item in [failed] if isinstance(failed, dict) else failed:
        source_id = item.get("source_id")
        if source_id:
            text = " ".join(str(item.get(k)) for k in ("key", "message", "details", "reason") if item.get(k))
            errors[str(source_id)] = text or "rejected by Voucherify"
    if action.get("status") == "FAILED" and not errors:
        message = result.get("message") or "async action FAILED"
        return [
            Outcome(p.key, FAILED, f"Voucherify async action {action.get('id')}: {message}") for p in batch
        ]
    return [
        Outcome(p.key, FAILED, errors[p.key]) if p.key in errors else Outcome(p.key, DELIVERED) for p in batch
    ]


class _VoucherifyLoad(SyncLoadOperator):
    destination = "voucherify"
    hook_class = VoucherifyHook
    vendor_name = "Voucherify"
    can_read_back = True
    resource: ClassVar[str] = ""

    def read_back(self, hook: VoucherifyHook, keys: list[str]) -> dict[str, dict]:
        """Listed (``GET /v1/{resource}``, 100 a page) or got one by one by ``source_id``."""
        return hook.read_objects(self.resource, keys)

    max_batch_bytes = MAX_BODY_BYTES

    def collect(self, hook: VoucherifyHook, job_ref: str, batch: list[Planned]) -> list[Outcome]:
        return _action_outcomes(hook.wait_async_action(job_ref), batch)

    def poll_jobs(self, hook: VoucherifyHook, jobs: dict[str, list[Planned]]) -> Finished:
        """Every action in flight in one listing, then the result of each finished one."""
        finished, unknown = hook.poll_async_actions(list(jobs))
        found: Finished = {ref: _action_outcomes(action, jobs[ref]) for ref, action in finished.items()}
        found.update(dict.fromkeys(unknown))
        return found

    def job_polling(self, hook: VoucherifyHook) -> dict[str, Any]:
        first = hook.extra("async_poll_seconds", 1.0)
        return {
            "first": first,
            "longest": max(first, hook.extra("async_poll_max_seconds", 30.0)),
            "timeout": hook.extra("async_timeout_seconds", 1800.0),
        }

    def max_jobs_in_flight(self, hook: VoucherifyHook) -> int:
        # Voucherify runs bulk jobs (and order imports) one at a time per project, the others queued: ours
        # wait there while we poll, so the queue never runs dry between two of our requests.
        return hook.extra("max_jobs_in_flight", 10, int)


class _VoucherifyBulkLoad(_VoucherifyLoad):
    """Customers and products: ``bulk/async`` upserts by ``source_id``, as many records as 10 MB hold."""

    batch_size = None
    delete_batch_size = 1000

    def send_upserts(self, hook: VoucherifyHook, batch: list[Planned], context: Any) -> str:
        return hook.bulk_upsert(self.resource, json_array([p.payload for p in batch]))


class VoucherifyCustomersOperator(_VoucherifyBulkLoad):
    """Upsert customers; delete the ones this pipeline created once the warehouse soft-deletes them."""

    entity = "customers"
    resource = "customers"
    supports_delete = True

    def send_deletes(self, hook: VoucherifyHook, batch: list[Planned], context: Any) -> list[Outcome]:
        return self.send_each(batch, lambda record: hook.delete_customer(record.key), DELETED)


class VoucherifyProductsOperator(_VoucherifyBulkLoad):
    entity = "products"
    resource = "products"


class VoucherifyOrdersOperator(_VoucherifyLoad):
    """Orders: ``POST /v1/orders`` one by one for the daily window (fires Voucherify's order events);
    with the param ``historical_import`` the async ``/v1/orders/import``, 2000 per request, which fires none.
    """

    entity = "orders"
    resource = "orders"

    def read_back(self, hook: VoucherifyHook, keys: list[str]) -> dict[str, dict]:
        """Orders name their customer by Voucherify id only: look the customers up (listed or one by one)
        so the order's ``customer.source_id`` can be compared with ours."""
        orders = super().read_back(hook, keys)
        ids = sorted({o["customer_id"] for o in orders.values() if o.get("customer_id")})
        customers = hook.read_objects("customers", ids, by="id")
        for order in orders.values():
            customer = customers.get(order.get("customer_id") or "")
            if customer is not None:
                order["customer"] = {**(order.get("customer") or {}), "source_id": customer.get("source_id")}
        return orders

    def build_payload(self, row: dict, context: Any) -> dict:
        """The import stamps ``created_at`` with the import time and its item schema has no ``created_at``:
        the order date travels as ``metadata.ordered_at`` (mapped in SQL), as the import's page asks."""
        payload = super().build_payload(row, context)
        return _for_import(payload) if context["params"].get("historical_import") else payload

    def batch_limit(self, context: Any) -> int:
        # Live orders cost one request each: record every answer, so a killed task resends at most one.
        return 2000 if context["params"].get("historical_import") else 1

    def send_upserts(self, hook: VoucherifyHook, batch: list[Planned], context: Any) -> list[Outcome] | str:
        if context["params"].get("historical_import"):
            # _for_import again: a record carried over from a live run was planned with created_at.
            return hook.import_orders([_for_import(order) for order in _payloads(batch)])
        outcomes = []
        for record, order in zip(batch, _payloads(batch), strict=True):
            try:
                hook.upsert_order(order)
            except VendorRejected as exc:
                outcomes.append(Outcome(record.key, FAILED, str(exc)))
                continue
            outcomes.append(Outcome(record.key, DELIVERED))
        return outcomes
