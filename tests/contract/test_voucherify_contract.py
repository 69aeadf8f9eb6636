"""Voucherify contract: the bytes our hook sends, built from the sample warehouse through the real SQL
mappings, suites and operators, checked against the official OpenAPI files with a validator set up here
(openapi-schema-validator on the operation's own request schema, resolved by JSON pointer), independent
of the sandbox's spec code. Then: the historical import keeps the order date in metadata as its page
asks, and the payloads from before issue 9 are flagged or refused."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import duckdb
import pytest
from openapi_schema_validator import OAS30Validator, oas30_format_checker
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT4

from reverse_etl.extract import extract
from reverse_etl.hooks.voucherify import VoucherifyHook
from reverse_etl.operators.voucherify import (
    VoucherifyCustomersOperator,
    VoucherifyOrdersOperator,
    VoucherifyProductsOperator,
)
from reverse_etl.staging import iter_valid
from reverse_etl.validate import validate
from reverse_etl.window import Window
from sandbox.env import REPO, SANDBOX_APP_ID, SANDBOX_APP_TOKEN, conn_json
from sandbox.voucherify import VoucherifySandbox

SPECS = REPO / "sandbox" / "specs" / "voucherify"
WINDOW = Window(dt.datetime(2026, 10, 28, tzinfo=dt.UTC), dt.datetime(2026, 11, 1, tzinfo=dt.UTC))
CONN = "voucherify_contract"
# The one known contradiction of the files: OrderItem lists `object` as required but never defines it, and
# every documented order example omits it (the sandbox patches the same erratum, see SPEC_ERRATA).
ERRATA = {("required", "'object' is a required property")}


def request_validator(doc: str, method: str, path: str) -> OAS30Validator:
    """The documented request-body schema of one operation, straight from the official file."""
    contents = json.loads((SPECS / f"{doc}.json").read_text(encoding="utf-8"))
    uri = f"urn:voucherify:{doc}"
    registry = Registry().with_resource(uri, Resource(contents=contents, specification=DRAFT4))
    pointer = "/".join(
        [
            "#",
            "paths",
            path.replace("/", "~1"),
            method,
            "requestBody",
            "content",
            "application~1json",
            "schema",
        ]
    )
    return OAS30Validator({"$ref": uri + pointer}, registry=registry, format_checker=oas30_format_checker)


def spec_errors(validator: OAS30Validator, body: object) -> list[str]:
    return [
        f"{list(e.absolute_path)}: {e.message}"
        for e in validator.iter_errors(body)
        if (e.validator, e.message) not in ERRATA
    ]


def import_date_problems(order: dict) -> list[str]:
    """The import's page: created_at is assigned at import; keep the real order date in order metadata,
    ISO 8601 date or date-time. We also require a time zone, so the date means one instant."""
    problems = []
    value = (order.get("metadata") or {}).get("ordered_at")
    try:
        parsed = dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        if parsed.tzinfo is None:
            problems.append(f"metadata.ordered_at {value!r} has no time zone")
    except ValueError:
        problems.append(f"metadata.ordered_at {value!r} is not an ISO 8601 date-time")
    if "created_at" in order:
        problems.append("created_at is sent, but the import replaces it by the import time")
    return problems


@pytest.fixture
def sandbox():
    with VoucherifySandbox(port=0, limit=1000, window_seconds=1, async_delay=0.01) as sb:
        yield sb


@pytest.fixture
def wired(monkeypatch, state_store, warehouse, tmp_path, sandbox):
    monkeypatch.setenv("AIRFLOW_CONN_RETL_WAREHOUSE", conn_json("duckdb", host=str(warehouse)))
    monkeypatch.setenv("RETL_STAGING_URL", (tmp_path / "staging").as_uri())
    monkeypatch.setenv(
        f"AIRFLOW_CONN_{CONN.upper()}",
        conn_json(
            "http",
            host=sandbox.url,
            login=SANDBOX_APP_ID,
            password=SANDBOX_APP_TOKEN,
            extra={"requests_per_minute": 60_000, "rate_window_seconds": 1, "async_poll_seconds": 0.02},
        ),
    )
    return warehouse


class Wire:
    """The hook, with every request's bytes as they left the session."""

    def __init__(self) -> None:
        self.hook = VoucherifyHook(CONN)
        self.sent: list[tuple[str, str, bytes]] = []
        session = self.hook.get_conn()
        send = session.send

        def capture(prepared, **kwargs):
            body = prepared.body if isinstance(prepared.body, bytes) else (prepared.body or "").encode()
            self.sent.append((prepared.method, prepared.path_url, body))
            return send(prepared, **kwargs)

        session.send = capture

    def bodies(self, method: str, path: str) -> list[object]:
        return [json.loads(b) for m, p, b in self.sent if m == method and p == path]


def payloads(operator, entity: str, params: dict | None = None) -> list[dict]:
    """Rows of the sample window through the real SQL mapping, suite and operator's payload builder."""
    manifest = validate(
        extract_manifest=extract(
            destination="voucherify", entity=entity, window=WINDOW, dag_id="c", run_id=entity
        ),
        dag_id="c",
        run_id=entity,
        max_rejected_share=0.5,
    )
    context = {"params": params or {}}
    return [
        operator.build_payload(row, context)
        for batch in iter_valid(manifest, 1000)
        for row in batch.to_pylist()
        if not row["_deleted"]
    ]


def test_customers_and_products_bulk_bodies_follow_the_spec(wired):
    wire = Wire()
    customers = payloads(VoucherifyCustomersOperator(task_id="c", manifest=None), "customers")
    products = payloads(VoucherifyProductsOperator(task_id="p", manifest=None), "products")
    assert len(customers) > 100 and len(products) > 10
    wire.hook.wait_async_action(wire.hook.bulk_upsert("customers", customers))
    wire.hook.wait_async_action(wire.hook.bulk_upsert("products", products))
    (sent_customers,) = wire.bodies("POST", "/v1/customers/bulk/async")
    (sent_products,) = wire.bodies("POST", "/v1/products/bulk/async")
    assert (
        spec_errors(request_validator("customers", "post", "/v1/customers/bulk/async"), sent_customers) == []
    )
    assert spec_errors(request_validator("products", "post", "/v1/products/bulk/async"), sent_products) == []
    assert all(c["source_id"].strip() for c in sent_customers + sent_products)
    # The validator is live: it refuses what the spec refuses.
    bad = [{"name": "no source_id", "birthdate": "1 May 1990", "address": "Main St"}]
    assert len(spec_errors(request_validator("customers", "post", "/v1/customers/bulk/async"), bad)) == 3
    assert any("birthdate" in c for c in sent_customers)


def test_live_orders_follow_the_spec_with_created_at(wired, warehouse):
    wire = Wire()
    orders = payloads(VoucherifyOrdersOperator(task_id="o", manifest=None), "orders")
    assert len(orders) > 50
    validator = request_validator("orders", "post", "/v1/orders")
    ordered = dict(
        duckdb.connect(str(warehouse), read_only=True)
        .execute("SELECT order_id, ordered_at FROM orders")
        .fetchall()
    )
    for order in orders[:25]:
        wire.hook.upsert_order(order)
    for body in wire.bodies("POST", "/v1/orders"):
        assert spec_errors(validator, body) == []
        when = ordered[body["source_id"]].replace(tzinfo=dt.UTC)
        assert dt.datetime.fromisoformat(body["created_at"].replace("Z", "+00:00")) == when
        assert body["metadata"]["ordered_at"] == body["created_at"]


def test_historical_import_keeps_the_order_date_in_metadata(wired, warehouse, sandbox):
    wire = Wire()
    orders = payloads(
        VoucherifyOrdersOperator(task_id="o", manifest=None), "orders", {"historical_import": True}
    )
    started = dt.datetime.now(dt.UTC)
    action = wire.hook.wait_async_action(wire.hook.import_orders(orders))
    assert action["status"] == "DONE" and action["result"]["failed"] == []
    (body,) = wire.bodies("POST", "/v1/orders/import")
    assert spec_errors(request_validator("orders", "post", "/v1/orders/import"), body) == []
    assert [p for order in body for p in import_date_problems(order)] == []

    ordered = dict(
        duckdb.connect(str(warehouse), read_only=True)
        .execute("SELECT order_id, ordered_at FROM orders")
        .fetchall()
    )
    stored = sandbox.store["orders"]
    for order in body:
        kept = stored[order["source_id"]]
        real = dt.datetime.fromisoformat(kept["metadata"]["ordered_at"].replace("Z", "+00:00"))
        assert real == ordered[order["source_id"]].replace(tzinfo=dt.UTC)  # the real date reached metadata
        assert dt.datetime.fromisoformat(kept["created_at"].replace("Z", "+00:00")) >= started  # import time


def test_old_import_payload_is_flagged_and_its_created_at_is_not_kept(wired, sandbox):
    """Before issue 9 the import sent the order date as created_at only: the spec accepts the body (no
    additionalProperties: false), Voucherify replaces created_at by the import time, and the date is lost."""
    old = {
        "source_id": "ORD-OLD",
        "status": "PAID",
        "amount": 1000,
        "customer": {"source_id": "1"},
        "created_at": "2024-05-01T10:00:00Z",
        "items": [{"source_id": "P1", "related_object": "product", "quantity": 1, "price": 1000}],
    }
    assert import_date_problems(old) == [
        "metadata.ordered_at None is not an ISO 8601 date-time",
        "created_at is sent, but the import replaces it by the import time",
    ]
    wire = Wire()
    wire.hook.wait_async_action(wire.hook.import_orders([old]))
    kept = sandbox.store["orders"]["ORD-OLD"]
    assert not kept["created_at"].startswith("2024-05-01") and "ordered_at" not in kept["metadata"]
    fixed = {k: v for k, v in old.items() if k != "created_at"} | {
        "metadata": {"ordered_at": old["created_at"]}
    }
    assert import_date_problems(fixed) == []


def test_delete_goes_to_the_documented_path(wired, sandbox):
    wire = Wire()
    wire.hook.wait_async_action(wire.hook.bulk_upsert("customers", [{"source_id": "a/b 1", "name": "A"}]))
    wire.hook.delete_customer("a/b 1")
    spec = json.loads((SPECS / "customers.json").read_text(encoding="utf-8"))
    assert "delete" in spec["paths"]["/v1/customers/{customerId}"]
    method, path, body = wire.sent[-1]
    assert (method, path, body) == ("DELETE", "/v1/customers/a%2Fb%201", b"")
    assert "a/b 1" not in sandbox.store["customers"]


def test_sandbox_refuses_what_the_spec_refuses(wired, sandbox):
    """Bulk items without source_id (required by the item schemas) fail per item, or the whole request in
    the stricter mode; an order of more than 500 items is refused ('It can include up to 500 items')."""
    wire = Wire()
    action = wire.hook.wait_async_action(
        wire.hook.bulk_upsert("customers", [{"name": "no id"}, {"source_id": "ok"}])
    )
    (error,) = action["result"]["errors"]
    assert "source_id" in error["details"] and set(sandbox.store["customers"]) == {"ok"}
    item = {"source_id": "P1", "related_object": "product", "quantity": 1, "price": 1}
    big = {"source_id": "ORD-BIG", "status": "PAID", "items": [item] * 501}
    from reverse_etl.errors import VendorRejected

    with pytest.raises(VendorRejected, match="500"):
        wire.hook.upsert_order(big)
    action = wire.hook.wait_async_action(
        wire.hook.import_orders([big, {**big, "source_id": "ORD-OK", "items": [item]}])
    )
    assert [f["source_id"] for f in action["result"]["failed"]] == ["ORD-BIG"]
    assert "ORD-OK" in sandbox.store["orders"] and "ORD-BIG" not in sandbox.store["orders"]


def test_suites_quarantine_blank_ids_and_implausible_values(wired, tmp_path, monkeypatch):
    """The old payloads the spec cannot refuse (it sets no maxLength, accepts 0001-01-01 as a date) are
    stopped by the suites, each with its rule's name."""
    warehouse = tmp_path / "warehouse.duckdb"
    import shutil

    shutil.copy(wired, warehouse)
    monkeypatch.setenv("AIRFLOW_CONN_RETL_WAREHOUSE", conn_json("duckdb", host=str(warehouse)))
    con = duckdb.connect(str(warehouse))
    ids = [
        k
        for (k,) in con.execute(
            "SELECT customer_id FROM customers WHERE updated_at >= TIMESTAMP '2026-10-28' AND updated_at < "
            "TIMESTAMP '2026-11-01' AND deleted_at IS NULL ORDER BY customer_id LIMIT 4"
        ).fetchall()
    ]
    con.execute("UPDATE customers SET address_line2 = repeat('x', 10000) WHERE customer_id = ?", [ids[0]])
    con.execute("UPDATE customers SET birth_date = DATE '0001-01-01' WHERE customer_id = ?", [ids[1]])
    con.execute("UPDATE customers SET birth_date = DATE '9999-12-31' WHERE customer_id = ?", [ids[2]])
    con.execute("UPDATE customers SET birth_date = DATE '2026-11-02' WHERE customer_id = ?", [ids[3]])
    con.close()
    manifest = validate(
        extract_manifest=extract(
            destination="voucherify", entity="customers", window=WINDOW, dag_id="c", run_id="q"
        ),
        dag_id="c",
        run_id="q",
        max_rejected_share=0.5,
    )
    quarantine = Path(manifest["quarantine_path"].removeprefix("file://"))
    rules = {}
    for line in quarantine.read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        rules[str(record["record_key"])] = {f["rule"] for f in record["failures"]}
    assert any(r.startswith("address line_2 at most 255") for r in rules[str(ids[0])])
    for key in ids[1:]:
        assert "birthdate between 1900-01-01 and the window end (not in the future)" in rules[str(key)]
