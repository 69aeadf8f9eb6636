"""SALESmanago (through Data Talks) load operators: contacts (upsert, and delete of the contacts this
pipeline sent when the warehouse deletes them), external events (each sent once, with its externalId) and
products (arrays, split when Data Talks refuses a batch)."""

from __future__ import annotations

import json
from typing import Any

from reverse_etl.hooks.datatalks import DataTalksHook
from reverse_etl.ledger import DELETED, DELIVERED, Outcome, Planned
from reverse_etl.operators.load import SyncLoadOperator


class _DataTalksLoad(SyncLoadOperator):
    destination = "salesmanago"
    hook_class = DataTalksHook
    vendor_name = "SALESmanago"
    batch_size = 1  # contacts and events: one object per request

    def send_one(self, hook: DataTalksHook, payload: dict) -> None:
        raise NotImplementedError

    def send_upserts(self, hook: DataTalksHook, batch: list[Planned], context: Any) -> list[Outcome]:
        return self.send_each(batch, lambda record: self.send_one(hook, json.loads(record.payload)))


class SalesmanagoContactsOperator(_DataTalksLoad):
    """``POST /v1/contacts`` per contact; the documented ``DELETE .../Production/contacts`` (the
    connection's ``delete_contact_url``) for a contact the ledger says we sent, once the warehouse
    soft-deletes it, or erases it outright (the erasure sweep, ``contacts.keys.sql``)."""

    entity = "contacts"
    supports_delete = True
    can_read_back = True

    def read_back(self, hook: DataTalksHook, keys: list[str]) -> dict[str, dict]:
        """``GET /v1/contact_by_email`` per contact: one request each (Data Talks lists nothing)."""
        held = {}
        for email in keys:
            found = hook.contact_by_email(email)
            contact = (found or {}).get("contact")
            if contact:
                held[email] = contact
        return held

    def send_one(self, hook: DataTalksHook, payload: dict) -> None:
        hook.upsert_contact(payload)

    def send_deletes(self, hook: DataTalksHook, batch: list[Planned], context: Any) -> list[Outcome]:
        return self.send_each(batch, lambda record: hook.delete_contact(record.key), DELETED)


class SalesmanagoEventsOperator(_DataTalksLoad):
    """``POST /v1/events`` per event. Whether Data Talks de-duplicates ``externalId`` is unknown, so an
    event the ledger holds as delivered is never sent again, even if its row changes."""

    entity = "events"
    send_once = True
    read_back_refusal = "Data Talks offers no way to read SALESmanago's external events back"

    def send_one(self, hook: DataTalksHook, payload: dict) -> None:
        hook.add_event(payload)


class SalesmanagoProductsOperator(_DataTalksLoad):
    """``POST /v1/products`` with arrays of ``products_per_request`` (100) of documented product items
    (``id`` required); a refused array is split until the refused products are isolated."""

    entity = "products"
    read_back_refusal = "Data Talks offers no way to read SALESmanago's products back"

    def batch_limit(self, context: Any) -> int:
        return self.hook_class(self.vendor_conn_id).extra("products_per_request", 100, int)

    def send_upserts(self, hook: DataTalksHook, batch: list[Planned], context: Any) -> list[Outcome]:
        hook.upsert_products([json.loads(record.payload) for record in batch])  # a refusal splits the batch
        return [Outcome(record.key, DELIVERED) for record in batch]
