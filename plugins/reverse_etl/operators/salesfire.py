"""Salesfire load operator: each customer to the list its SQL mapping names (``_list``)."""

from __future__ import annotations

import json
import re
from typing import Any

from reverse_etl.errors import ConfigError
from reverse_etl.hooks.salesfire import SalesfireHook
from reverse_etl.ledger import Outcome, Planned
from reverse_etl.operators.load import SyncLoadOperator
from reverse_etl.payload import row_to_payload

ATTRIBUTE_KEY = re.compile(r"^[a-z][a-z0-9_]*$")


class SalesfireCustomersOperator(SyncLoadOperator):
    """One request per customer (Salesfire takes no arrays); each answer is recorded as it comes."""

    destination = "salesfire"
    entity = "customers"
    vendor_name = "Salesfire"
    read_back_refusal = "Salesfire's API has no endpoint that reads customers back"
    hook_class = SalesfireHook
    batch_size = 1

    def build_payload(self, row: dict, context: Any) -> dict:
        body = row_to_payload(row)
        bad = [k for k in body.get("attributes", {}) if not ATTRIBUTE_KEY.match(k)]
        if bad:
            raise ConfigError(
                f"include/sql/salesfire/customers.sql maps attribute {bad[0]!r}: Salesfire attribute keys are "
                "lowercase snake_case starting with a letter ([a-z][a-z0-9_]*)."
            )
        if "update_existing" in row:
            raise ConfigError(
                "include/sql/salesfire/customers.sql maps update_existing: it is a per-list setting of the "
                "Salesfire connection (extra 'update_existing', default false); remove the column."
            )
        if not row.get("_list"):
            raise ConfigError("include/sql/salesfire/customers.sql must select _list, the target list id.")
        # The list is part of what is delivered: moving a customer to another list sends it again.
        return {"list": row["_list"], "customer": body}

    def send_upserts(self, hook: SalesfireHook, batch: list[Planned], context: Any) -> list[Outcome]:
        def send(record: Planned) -> None:
            planned = json.loads(record.payload)
            hook.post_customer(planned["list"], planned["customer"])

        return self.send_each(batch, send)
