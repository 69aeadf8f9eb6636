"""Connectif load operators: contacts, products and purchases, one request per record, all drawing on
the account's single bucket. Built-in Connectif fields are mapped in SQL without their ``_`` prefix
(``name`` for ``_name``: a leading ``_`` marks meta columns); custom fields go under ``custom__<field id>``.
"""

from __future__ import annotations

import json
from typing import Any, ClassVar

from reverse_etl.errors import VendorRejected
from reverse_etl.hooks.connectif import ConnectifHook
from reverse_etl.ledger import DELIVERED, FAILED, Outcome, Planned
from reverse_etl.operators.load import SyncLoadOperator
from reverse_etl.payload import row_to_payload


class _ConnectifLoad(SyncLoadOperator):
    destination = "connectif"
    hook_class = ConnectifHook
    batch_size = 1  # single-record endpoints: every answer is recorded as it comes

    def send_one(self, hook: ConnectifHook, key: str, payload: dict, context: Any) -> None:
        raise NotImplementedError

    def send_upserts(self, hook: ConnectifHook, batch: list[Planned], context: Any) -> list[Outcome]:
        outcomes = []
        for record in batch:
            try:
                self.send_one(hook, record.key, json.loads(record.payload), context)
            except VendorRejected as exc:
                outcomes.append(Outcome(record.key, FAILED, str(exc)))
                continue
            outcomes.append(Outcome(record.key, DELIVERED))
        return outcomes


class ConnectifContactsOperator(_ConnectifLoad):
    """``PATCH /contacts/{email}`` (creates the contact when absent)."""

    entity = "contacts"
    builtin: ClassVar[tuple[str, ...]] = (
        "name",
        "surname",
        "birthdate",
        "emailStatus",
        "mobilePhone",
        "mobilePhoneStatus",
        "newsletterSubscriptionStatus",
        "smsSubscriptionStatus",
        "points",
    )

    def build_payload(self, row: dict, context: Any) -> dict:
        mapped = row_to_payload(row)
        custom = mapped.pop("custom", {})
        return {**{f"_{k}" if k in self.builtin else k: v for k, v in mapped.items()}, **custom}

    def send_one(self, hook: ConnectifHook, key: str, payload: dict, context: Any) -> None:
        hook.patch_contact(key, payload)


class ConnectifProductsOperator(_ConnectifLoad):
    """``PATCH /products/product-id/{id}`` (upsert by the store's product id)."""

    entity = "products"

    def send_one(self, hook: ConnectifHook, key: str, payload: dict, context: Any) -> None:
        hook.patch_product(key, payload)


class ConnectifPurchasesOperator(_ConnectifLoad):
    """``POST /purchases/`` once its contact and products exist (the DAG orders the loads). Backfill runs,
    and runs with the param ``historical_import``, send ``triggerPurchaseEvent=false`` so old purchases
    fire no automations."""

    entity = "purchases"

    def send_one(self, hook: ConnectifHook, key: str, payload: dict, context: Any) -> None:
        run_type = str(getattr(context.get("dag_run"), "run_type", "") or "")
        historical = "backfill" in run_type or bool(context["params"].get("historical_import"))
        hook.post_purchase(payload, trigger_event=not historical)
