"""Connectif: the request bytes built by the real hook and operators, checked independently of our code.

Why: the sandbox and the client were written to the same reading, so each check here comes from outside
both. The bodies are validated with ``jsonschema`` against schemas transcribed here from Connectif's
reference pages (ContactPatch, PurchaseCreation: additional properties refused, the documented enums and
formats), the multipart import is parsed with ``python-multipart`` (not the sandbox's parser), and the
``Authorization`` header is compared with the documented ``apiKey <keyId>:<keySecret>``. The last tests
show the sandbox refusing payloads the pages forbid (blank required values, unknown fields).
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from urllib.parse import parse_qs, unquote, urlsplit

import jsonschema
import pytest
from python_multipart import MultipartParser
from python_multipart.multipart import parse_options_header

from reverse_etl.errors import VendorRejected
from reverse_etl.hooks.connectif import ConnectifHook
from reverse_etl.ledger import UPSERT, Planned
from reverse_etl.operators.connectif import (
    ConnectifContactsOperator,
    ConnectifCouponsOperator,
    ConnectifPurchasesOperator,
)
from sandbox.connectif import ConnectifSandbox
from sandbox.env import CONNECTIF_KEY_ID, CONNECTIF_KEY_SECRET, conn_json
from tests.contract.capture import capture_sent

CONN = "connectif_bytes"
ISO8601 = r"^\d{4}-\d{2}-\d{2}(?:T\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?)?$"
NONBLANK = r"\S"
STATUS = {"enum": ["subscribed", "unsubscribed", "none"]}

# ContactPatch (api-docs.connectif.cloud/connectif-api/resources/contactpatch): all optional; custom
# fields by id (string, boolean, number, integer or string[]); "_"-prefixed keys only the built-ins.
CONTACT_PATCH = {
    "type": "object",
    "properties": {
        "_name": {"type": "string"},
        "_surname": {"type": "string"},
        "_birthdate": {"type": "string", "pattern": ISO8601},
        "_emailStatus": {"enum": ["active", "bounced", "paused", "banned"]},
        "_mobilePhone": {"type": "string", "pattern": r"^\+[1-9][0-9]{6,14}$"},
        "_mobilePhoneStatus": {"enum": ["active", "bounced", "paused"]},
        "_newsletterSubscriptionStatus": STATUS,
        "_smsSubscriptionStatus": STATUS,
        "_points": {"type": "integer"},
    },
    "patternProperties": {
        "^[^_]": {
            "anyOf": [
                {"type": ["string", "boolean", "number"]},
                {"type": "array", "items": {"type": "string"}},
            ]
        }
    },
    "additionalProperties": False,
}
# PurchaseCreation (…/reference/purchases/post-purchase): only paymentMethod is marked Optional.
PURCHASE_ITEM = {
    "type": "object",
    "required": ["productId", "name", "unitPrice", "quantity", "price"],
    "properties": {
        "productId": {"type": "string", "pattern": NONBLANK},
        "name": {"type": "string", "pattern": NONBLANK},
        "unitPrice": {"type": "number"},
        "quantity": {"type": "integer"},
        "price": {"type": "number"},
        **{
            f: {"type": "string"}
            for f in ("brand", "description", "customField1", "customField2", "customField3")
        },
        **{
            f: {"type": "string", "pattern": "^https?://"}
            for f in ("imageUrl", "productDetailUrl", "thumbnailUrl")
        },
        **{f: {"type": "array", "items": {"type": "string"}} for f in ("categories", "tags")},
        **{
            f: {"type": "number"}
            for f in (
                "discountedAmount",
                "discountedPercentage",
                "rating",
                "unitPriceOriginal",
                "unitPriceWithoutVAT",
            )
        },
        **{f: {"type": "integer"} for f in ("ratingCount", "reviewCount")},
        "publishedAt": {"type": "string", "pattern": ISO8601},
    },
    "additionalProperties": False,
}
PURCHASE_CREATION = {
    "type": "object",
    "required": [
        "purchaseId",
        "cartId",
        "contactEmail",
        "purchaseDate",
        "totalPrice",
        "totalQuantity",
        "products",
    ],
    "properties": {
        "purchaseId": {"type": "string", "pattern": NONBLANK},
        "cartId": {"type": "string", "pattern": NONBLANK},
        "contactEmail": {"type": "string", "pattern": r"^[^@\s]+@[^@\s]+\.[^@\s]+$"},
        "purchaseDate": {"type": "string", "pattern": ISO8601},
        "totalPrice": {"type": "number"},
        "totalQuantity": {"type": "integer"},
        "paymentMethod": {"type": "string"},
        "products": {"type": "array", "minItems": 1, "items": PURCHASE_ITEM},
    },
    "additionalProperties": False,
}
# Import form (…/reference/imports/create-import).
IMPORT_FIELDS = {"type", "overrideExisting", "updateOnlyEmptyFields", "delimiter", "couponSetId", "file"}


@pytest.fixture
def sandbox():
    with ConnectifSandbox(port=0, limit=1000, window_seconds=1, async_delay=0.01) as sb:
        yield sb


@pytest.fixture
def hook(monkeypatch, state_store, sandbox):
    """A hook whose session hands every prepared request to ``sent`` before it goes out."""

    def make(**extra) -> tuple[ConnectifHook, list]:
        extra = {
            "requests_per_minute": 60_000,
            "rate_window_seconds": 1,
            "import_poll_seconds": 0.02,
            **extra,
        }
        monkeypatch.setenv(
            f"AIRFLOW_CONN_{CONN.upper()}",
            conn_json(
                "http", host=sandbox.url, login=CONNECTIF_KEY_ID, password=CONNECTIF_KEY_SECRET, extra=extra
            ),
        )
        h = ConnectifHook(CONN)
        return h, capture_sent(h.get_conn())

    return make


def contact_row() -> dict:
    """A contacts row as include/sql/connectif/contacts.sql selects it."""
    return {
        "_key": "zoe@example.com",
        "_deleted": False,
        "_email_marketing_consent": "GRANTED",
        "_sms_marketing_consent": "DENIED",
        "name": "Zoë",
        "surname": "Ünal",
        "birthdate": dt.date(1994, 9, 4),
        "mobilePhone": "+447700900123",
        "newsletterSubscriptionStatus": "subscribed",
        "smsSubscriptionStatus": "unsubscribed",
        "points": 120,
        "custom__language": "en",
        "custom__city": "Leeds",
    }


def purchase_row() -> dict:
    """A purchases row as include/sql/connectif/purchases.sql selects it."""
    return {
        "_key": "O1",
        "_deleted": False,
        "_status": "PAID",
        "purchaseId": "O1",
        "cartId": "O1",
        "contactEmail": "zoe@example.com",
        "purchaseDate": dt.datetime(2026, 10, 30, 10, 0),
        "totalPrice": 25.0,
        "totalQuantity": 2,
        "products__json": '[{"productId":"P1","name":"Mug","unitPrice":12.5,"quantity":2,"price":25.0}]',
    }


def body_of(request) -> bytes:
    return request.body if isinstance(request.body, bytes) else request.body.encode("utf-8")


def parse_form(request) -> dict[str, tuple[str | None, str | None, bytes]]:
    """name -> (filename, content type, bytes), parsed by python-multipart."""
    ctype, params = parse_options_header(request.headers["Content-Type"])
    assert ctype == b"multipart/form-data"
    parts: dict[str, tuple[str | None, str | None, bytes]] = {}
    current: dict = {}

    def on_part_begin():
        current.clear()
        current.update(headers={}, data=b"")

    def on_header_field(data, start, end):
        current["field"] = data[start:end].decode().lower()

    def on_header_value(data, start, end):
        current["headers"][current["field"]] = data[start:end].decode()

    def on_part_data(data, start, end):
        current["data"] += data[start:end]

    def on_part_end():
        _, disp = parse_options_header(current["headers"]["content-disposition"])
        name = disp[b"name"].decode()
        filename = disp.get(b"filename")
        parts[name] = (
            filename.decode() if filename else None,
            current["headers"].get("content-type"),
            current["data"],
        )

    parser = MultipartParser(
        params[b"boundary"],
        {
            "on_part_begin": on_part_begin,
            "on_header_field": on_header_field,
            "on_header_value": on_header_value,
            "on_part_data": on_part_data,
            "on_part_end": on_part_end,
        },
    )
    parser.write(body_of(request))
    parser.finalize()
    return parts


def test_auth_header_is_the_documented_api_key(hook):
    h, sent = hook()
    h.patch_contact("a@example.com", {"_name": "A"})
    assert sent[0].headers["Authorization"] == f"apiKey {CONNECTIF_KEY_ID}:{CONNECTIF_KEY_SECRET}"


def test_contact_patch_bytes_match_contactpatch(hook, sandbox):
    h, sent = hook()
    op = ConnectifContactsOperator(task_id="t", manifest=None)
    payload = op.build_payload(contact_row(), {})
    h.patch_contact("zoe+tag@example.com", payload)
    (request,) = sent
    url = urlsplit(request.url)
    assert request.method == "PATCH" and unquote(url.path) == "/contacts/zoe+tag@example.com"
    assert "%2B" in url.path  # '+' escaped: a raw '+' in a path can be read as a space
    assert request.headers["Content-Type"] == "application/json"
    body = json.loads(body_of(request))
    jsonschema.validate(body, CONTACT_PATCH)
    assert body["_birthdate"] == "1994-09-04" and body["_points"] == 120
    assert body["language"] == "en" and "custom" not in body and "_email" not in body
    assert sandbox.store["contacts"]["zoe+tag@example.com"]["_name"] == "Zoë"


def test_purchase_bytes_match_purchasecreation(hook, sandbox):
    h, sent = hook()
    h.patch_contact("zoe@example.com", {"_name": "Zoë"})
    h.patch_product("P1", {"name": "Mug", "unitPrice": 12.5})
    op = ConnectifPurchasesOperator(task_id="t", manifest=None)
    planned = Planned("O1", UPSERT, "h", json.dumps(op.build_payload(purchase_row(), {})))
    [outcome] = op.send_upserts(h, [planned], {"params": {}, "dag_run": None})
    assert outcome.status == "delivered", outcome
    request = sent[-1]
    url = urlsplit(request.url)
    assert request.method == "POST" and url.path == "/purchases/"
    assert parse_qs(url.query) == {"triggerPurchaseEvent": ["true"]}
    body = json.loads(body_of(request))
    jsonschema.validate(body, PURCHASE_CREATION)
    assert body["purchaseDate"] == "2026-10-30T10:00:00Z"


def test_import_multipart_matches_create_import(hook, sandbox):
    h, sent = hook()
    op = ConnectifContactsOperator(task_id="t", manifest=None)
    rows = []
    for i in range(3):
        row = {**contact_row(), "_key": f"c{i}@example.com"}
        rows.append(Planned(row["_key"], UPSERT, "h", json.dumps(op.build_payload(row, {}))))
    csv_bytes = op.to_csv(rows, h.delimiter)
    created = h.create_import("contacts", csv_bytes)
    assert h.wait_import(created["id"])["status"] == "finished"
    request = sent[0]
    assert request.method == "POST" and urlsplit(request.url).path == "/imports/"
    parts = parse_form(request)
    assert set(parts) <= IMPORT_FIELDS
    assert {k: v[2].decode() for k, v in parts.items() if k != "file"} == {
        "type": "contacts",
        "overrideExisting": "true",
        "updateOnlyEmptyFields": "false",
        "delimiter": ";",
    }
    filename, ctype, data = parts["file"]
    assert filename and ctype == "text/csv"
    table = list(csv.DictReader(io.StringIO(data.decode("utf-8")), delimiter=";"))
    assert [r["_email"] for r in table] == ["c0@example.com", "c1@example.com", "c2@example.com"]
    assert set(table[0]) - {"_email"} <= set(CONTACT_PATCH["properties"]) | {"language", "city"}
    assert table[0]["_birthdate"] == "1994-09-04" and table[0]["_mobilePhone"] == "+447700900123"
    assert len(sandbox.store["contacts"]) == 3


def test_coupon_import_names_its_set(hook, sandbox, state_store):
    h, sent = hook()
    op = ConnectifCouponsOperator(task_id="t", manifest=None, vendor_conn_id=CONN)
    batch = [Planned(code, UPSERT, "h", json.dumps({"couponSetId": "SET1"})) for code in ("A1", "B2")]
    ref = op.send_upserts(h, batch, {"params": {}})
    assert {o.status for o in op.collect(h, ref, batch)} == {"delivered"}
    parts = parse_form(sent[0])
    assert parts["type"][2] == b"coupons" and parts["couponSetId"][2] == b"SET1"
    assert parts["overrideExisting"][2] == b"false"
    assert parts["file"][2].decode().splitlines() == ["code", "A1", "B2"]


def test_the_independent_checks_catch_what_they_claim():
    """The schemas are not vacuous: each refuses a payload that breaks the page."""
    bad_contacts = [
        {"_email": "a@example.com"},
        {"_newsletterSubscriptionStatus": "SUBSCRIBED"},
        {"_mobilePhone": "0777 123"},
        {"_points": 1.5},
        {"_birthdate": "04/09/1994"},
    ]
    for body in bad_contacts:
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(body, CONTACT_PATCH)
    good = json.loads(
        json.dumps(ConnectifPurchasesOperator(task_id="t", manifest=None).build_payload(purchase_row(), {}))
    )
    for change in ({"purchaseId": "   "}, {"totalQuantity": 2.5}, {"product_id": "P1"}, {"products": []}):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate({**good, **change}, PURCHASE_CREATION)
    good["products"][0]["name"] = " "
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(good, PURCHASE_CREATION)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"purchaseId": "   "}, "purchaseId"),
        ({"cartId": ""}, "cartId"),
        ({"contactEmail": "  "}, "contactEmail"),
        (
            {"products": [{"productId": " ", "name": "Mug", "unitPrice": 1, "quantity": 1, "price": 1}]},
            "productId",
        ),
        (
            {"products": [{"productId": "P1", "name": "  ", "unitPrice": 1, "quantity": 1, "price": 1}]},
            "name",
        ),
        ({"totalQuantity": "2"}, "totalQuantity"),
        ({"order_id": "O1"}, "order_id"),
    ],
)
def test_sandbox_refuses_purchases_the_page_forbids(hook, sandbox, change, field):
    h, _ = hook()
    h.patch_contact("zoe@example.com", {"_name": "Zoë"})
    h.patch_product("P1", {"name": "Mug"})
    body = {
        **ConnectifPurchasesOperator(task_id="t", manifest=None).build_payload(purchase_row(), {}),
        **change,
    }
    with pytest.raises(VendorRejected, match=field):
        h.post_purchase(body, trigger_event=True)
    assert sandbox.store["purchases"] == {}


def test_sandbox_refuses_blank_keys_in_imports_and_paths(hook, sandbox):
    h, _ = hook()
    with pytest.raises(VendorRejected):
        h.patch_contact("   ", {"_name": "Blank"})
    with pytest.raises(VendorRejected, match="_newsletterSubscriptionStatus"):
        h.patch_contact("a@example.com", {"_newsletterSubscriptionStatus": "SUBSCRIBED"})
    created = h.create_import("coupons", b"code\nOK1\n   \n", override_existing=False, coupon_set_id="S")
    done = h.wait_import(created["id"])
    assert (done["success"], done["errors"]) == (1, 1)
    report = h.download(done["errorReportFileUrl"]).decode()
    assert "must not be blank" in report


def test_only_documented_delimiters_and_file_size(hook):
    from reverse_etl.errors import ConfigError

    h, sent = hook(import_delimiter="\t")
    with pytest.raises(ConfigError, match="import_delimiter"):
        h.create_import("contacts", b"_email\na@example.com\n")
    h, sent = hook()
    with pytest.raises(ValueError, match="50000000"):
        h.create_import("contacts", b"_email\n" + b"a" * 50_000_000)
    assert sent == []
