"""Contract tests for the Connectif sandbox: real HTTP against Connectif's documented contract.

Why: the pipeline's Connectif client is tested against this sandbox, so the sandbox itself must keep to
what Connectif documents (apiKey auth, ``{status, title, detail, code}`` errors, the E0xxx codes,
``X-RateLimit-*`` without ``Retry-After``, upserts, purchases needing their contact and products,
multipart CSV imports, exports) and to the defaults we chose where the docs say nothing, or those
client tests prove nothing.  Source: docs/destinations/connectif.md and the Connectif reference.
"""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from sandbox.connectif import ConnectifSandbox, parse_multipart

pytestmark = pytest.mark.serial  # clock-checked pacing: run alone (make test's second call)

REPO = Path(__file__).resolve().parents[2]
KEY_ID, KEY_SECRET = "test-key", "test-secret"
AUTH = {"Authorization": f"apiKey {KEY_ID}:{KEY_SECRET}"}
BIG_LIMIT = 100_000
DELAY = 0.02


@pytest.fixture(scope="module")
def sb():
    with ConnectifSandbox(port=0, api_key_id=KEY_ID, api_key_secret=KEY_SECRET, async_delay=DELAY) as sandbox:
        yield sandbox


@pytest.fixture(autouse=True)
def fresh(sb):
    sb.reset(limit=BIG_LIMIT, window_seconds=60)
    sb.configure(
        async_delay=DELAY,
        allowed_domains=None,
        duplicate_purchase="accept",
        max_import_bytes=50_000_000,
        file_url_ttl=6000,
        export_contract="documented",
        scopes=None,
        unset_fields="omit",
    )
    yield


@pytest.fixture()
def http(sb):
    """A keep-alive session with the API key; ``http.url(path)`` builds absolute URLs."""
    session = requests.Session()
    session.headers.update(AUTH)
    session.url = lambda path: sb.url + path
    yield session
    session.close()


def assert_error(resp, status, code=None):
    """Connectif's error body: {status, title, detail, code?} - and the rate-limit headers on every answer."""
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert body["status"] == status
    assert isinstance(body["title"], str) and body["title"]
    assert isinstance(body["detail"], str) and body["detail"]
    assert body.get("code") == code
    assert "Retry-After" not in resp.headers
    return body


def contact(http, email, **fields):
    resp = http.patch(http.url(f"/contacts/{email}"), json=fields)
    assert resp.status_code == 200, resp.text
    return resp.json()


def product(http, pid, **fields):
    resp = http.patch(http.url(f"/products/product-id/{pid}"), json={"name": pid, **fields})
    assert resp.status_code == 200, resp.text
    return resp.json()


def purchase_body(pid="o-1", email="ann@example.com", products=("p1",), **extra):
    items = [{"productId": p, "name": p, "unitPrice": 10, "quantity": 1, "price": 10} for p in products]
    return {
        "purchaseId": pid,
        "cartId": f"cart-{pid}",
        "contactEmail": email,
        "purchaseDate": "2024-05-01T10:00:00Z",
        "totalPrice": 10.0 * len(items),
        "totalQuantity": len(items),
        "paymentMethod": "card",
        "products": items,
        **extra,
    }


def import_form(kind="contacts", text="_email\nann@example.com\n", **fields):
    """Multipart fields for POST /imports/ (all four documented required fields); None drops a field."""
    form = {
        "type": (None, kind),
        "overrideExisting": (None, "true"),
        "updateOnlyEmptyFields": (None, "false"),
        "delimiter": (None, ","),
        "file": (f"{kind}.csv", text.encode("utf-8"), "text/csv"),
    }
    for name, value in fields.items():
        if value is None:
            form.pop(name, None)
        else:
            form[name] = value if isinstance(value, tuple) else (None, value)
    return form


def wait_job(http, path, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = http.get(http.url(path)).json()
        if job["status"] in ("finished", "error", "cancelled"):
            return job
        time.sleep(0.01)
    raise AssertionError(f"{path} did not finish: {job}")


def run_import(http, **kwargs):
    resp = http.post(http.url("/imports/"), files=import_form(**kwargs))
    assert resp.status_code == 201, resp.text
    created = resp.json()
    assert created["status"] == "queued"
    return created, wait_job(http, f"/imports/{created['id']}")


# ---------------------------------------------------------------------------------------------- auth
def test_auth_refused_without_using_a_slot(sb, http):
    url = http.url("/contacts/ann@example.com")
    for headers in (
        {},
        {"Authorization": f"apiKey {KEY_ID}:wrong"},
        {"Authorization": f"apiKey other:{KEY_SECRET}"},
        {"Authorization": f"Bearer {KEY_ID}:{KEY_SECRET}"},
        {"Authorization": f"apikey {KEY_ID}:{KEY_SECRET}"},  # the scheme is exactly "apiKey"
        {"Authorization": f"apiKey {KEY_ID}{KEY_SECRET}"},
    ):
        resp = requests.get(url, headers=headers)
        body = assert_error(resp, 401)
        assert body["title"] == "Unauthorized"
        assert {"X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset"} <= set(resp.headers)
    assert sb.stats()["accepted_by_limiter"] == 0
    assert http.get(url).status_code == 404  # the right key gets through


def test_scopes_and_extra_keys(sb, http):
    sb.configure(scopes=["contacts:read"], api_keys={"second": "s2"})
    assert http.get(http.url("/contacts/ann@example.com")).status_code == 404
    denied = http.patch(http.url("/contacts/ann@example.com"), json={})
    assert "contacts:write" in assert_error(denied, 403)["detail"]
    other = requests.get(http.url("/contacts/x@example.com"), headers={"Authorization": "apiKey second:s2"})
    assert other.status_code == 404 and sb.stats()["accepted_by_limiter"] == 3  # one account, one limit
    sb.configure(api_keys={})


# ------------------------------------------------------------------------------------------ contacts
def test_contact_upsert_twice_is_one_contact(sb, http):
    first = contact(http, "Ann@Example.com", _name="Ann", _points=3, favColor="blue")
    assert first == {"_email": "ann@example.com", "_name": "Ann", "_points": 3, "favColor": "blue"}
    second = contact(http, "ann@example.com", _surname="Lee", _points=4, _birthdate="1990-05-17T00:00:00Z")
    assert second["_name"] == "Ann" and second["_surname"] == "Lee" and second["_points"] == 4
    assert list(sb.store["contacts"]) == ["ann@example.com"]
    assert sb.store["contacts"]["ann@example.com"] == second
    got = http.get(http.url("/contacts/ann@example.com"))
    assert got.status_code == 200 and got.json() == second
    assert_error(http.get(http.url("/contacts/nobody@example.com")), 404)
    encoded = http.patch(http.url("/contacts/a%2Bb%40example.com"), json={"_name": "Plus"})
    assert encoded.json()["_email"] == "a+b@example.com"  # URL-encoded path email


def test_contact_validation_error_shape(sb, http):
    resp = http.patch(
        http.url("/contacts/ann@example.com"),
        json={
            "_emailStatus": "gone",
            "_points": 1.5,
            "_mobilePhone": "600 000 000",
            "_birthdate": "17/05/1990",
            "_nope": "x",
            "tags": {"a": 1},
        },
    )
    body = assert_error(resp, 422)
    assert body["title"] == "Unprocessable Entity"
    for field in ("_emailStatus", "_points", "_mobilePhone", "_birthdate", "_nope", "tags"):
        assert f"{field}:" in body["detail"], body["detail"]
    assert "active, bounced, paused, banned" in body["detail"]
    assert sb.store["contacts"] == {}
    assert_error(http.patch(http.url("/contacts/not-an-email"), json={}), 400)
    assert_error(
        http.patch(
            http.url("/contacts/ann@example.com"), data="{", headers={"Content-Type": "application/json"}
        ),
        400,
    )
    wrong_type = http.patch(
        http.url("/contacts/ann@example.com"), data="x=1", headers={"Content-Type": "text/plain"}
    )
    assert_error(wrong_type, 415)
    assert_error(http.patch(http.url("/contacts/ann@example.com"), json=["x"]), 400)
    assert (
        "_externalId"
        in assert_error(http.patch(http.url("/contacts/ann@example.com"), json={"_externalId": "x1"}), 422)[
            "detail"
        ]
    )


def test_patch_contact_by_email_accepts_external_id(sb, http):
    resp = http.patch(
        http.url("/contacts/email/bob@example.com"), json={"_externalId": "crm-1", "_name": "Bob"}
    )
    assert resp.status_code == 200 and resp.json()["_externalId"] == "crm-1"
    custom = http.patch(http.url("/contacts/email/bob@example.com"), json={"favColor": "red"})
    assert "custom fields" in assert_error(custom, 422)["detail"]  # ContactPatchByEmail has no <key>
    sb.configure(custom_fields={"favColor": "text", "vip": "boolean", "kids": "integer"})
    assert contact(http, "bob@example.com", favColor="red", vip=True, kids=2.0)["kids"] == 2.0
    typed = http.patch(http.url("/contacts/bob@example.com"), json={"vip": "yes", "unknown": 1})
    detail = assert_error(typed, 422)["detail"]
    assert "vip: must be a boolean" in detail and "unknown: is not a known custom contact field" in detail
    sb.configure(custom_fields=None)


# ------------------------------------------------------------------------------------------ products
def test_product_upsert_and_validation(sb, http):
    created = product(http, "sku 1", unitPrice=9.5, categories=["Tops/Tees"])
    assert (
        created["productId"] == "sku 1" and created["availability"] == "instock" and len(created["id"]) == 24
    )
    updated = product(http, "sku 1", availability="outofstock")
    assert updated["id"] == created["id"] and updated["unitPrice"] == 9.5
    assert http.get(http.url("/products/product-id/sku%201")).json() == updated
    assert http.get(http.url(f"/products/{created['id']}")).json() == updated
    assert_error(http.get(http.url("/products/product-id/none")), 404)
    bad = http.patch(
        http.url("/products/product-id/p2"),
        json={"availability": "maybe", "tags": "a", "inStockUnits": 1.5, "url": "https://x.com"},
    )
    detail = assert_error(bad, 422)["detail"]
    assert "availability: must be one of instock, outofstock" in detail
    assert "tags:" in detail and "inStockUnits:" in detail and "url: is not a known field" in detail
    assert list(sb.store["products"]) == ["sku 1"]


def test_product_url_on_unauthorised_domain_is_e0201(sb, http):
    sb.configure(allowed_domains=["https://shop.example.com"])
    product(http, "ok", productDetailUrl="https://shop.example.com/ok")
    resp = http.patch(http.url("/products/product-id/bad"), json={"productDetailUrl": "https://evil.com/x"})
    assert assert_error(resp, 400, "E0201")["allowedDomains"] == ["https://shop.example.com"]


# ----------------------------------------------------------------------------------------- purchases
def test_purchase_needs_contact_then_products(sb, http):
    url = http.url("/purchases/")
    assert "ann@example.com" in assert_error(http.post(url, json=purchase_body()), 400, "E0101")["detail"]
    contact(http, "ann@example.com")
    product(http, "p1")
    missing = assert_error(http.post(url, json=purchase_body(products=("p1", "p2", "p3"))), 400, "E0102")
    assert missing["productIds"] == ["p2", "p3"]
    assert sb.store["purchases"] == {}
    created = http.post(url, json=purchase_body())
    assert created.status_code == 201 and created.json()["purchaseId"] == "o-1"
    sb.configure(product_ids_key="productsId")  # the spelling of the docs' JSON example
    assert "productsId" in http.post(url, json=purchase_body("o-2", products=("zz",))).json()
    sb.configure(product_ids_key="productIds")


def test_purchase_validation(sb, http):
    contact(http, "ann@example.com")
    product(http, "p1")
    body = purchase_body(totalQuantity=1.5, source_type="x")
    del body["cartId"]
    body["products"][0]["quantity"] = "1"
    detail = assert_error(http.post(http.url("/purchases/"), json=body), 422)["detail"]
    for part in (
        "cartId: is required",
        "totalQuantity:",
        "source_type: is not a known field",
        "products[0].quantity:",
    ):
        assert part in detail, detail
    empty = http.post(http.url("/purchases/"), json=purchase_body(products=()))
    assert "at least one product" in assert_error(empty, 422)["detail"]
    flag = http.post(http.url("/purchases/?triggerPurchaseEvent=yes"), json=purchase_body())
    assert_error(flag, 400)
    by_external = purchase_body("o-ext", email=None)
    del by_external["contactEmail"]
    by_external["contactExternalId"] = "crm-9"
    assert_error(http.post(http.url("/purchases/"), json=by_external), 400, "E0101")
    http.patch(http.url("/contacts/email/ann@example.com"), json={"_externalId": "crm-9"})
    assert http.post(http.url("/purchases/"), json=by_external).status_code == 201


def test_trigger_purchase_event_is_recorded(sb, http):
    contact(http, "ann@example.com")
    product(http, "p1")
    assert http.post(http.url("/purchases/"), json=purchase_body("live")).status_code == 201
    backfill = http.post(
        http.url("/purchases/"), params={"triggerPurchaseEvent": "false"}, json=purchase_body("old")
    )
    assert backfill.status_code == 201
    explicit = http.post(http.url("/purchases/?triggerPurchaseEvent=true"), json=purchase_body("new"))
    assert explicit.status_code == 201
    purchases = sb.store["purchases"]
    assert {pid: p["triggerPurchaseEvent"] for pid, p in purchases.items()} == {
        "live": True,
        "old": False,
        "new": True,
    }
    assert "triggerPurchaseEvent" not in backfill.json()


def test_duplicate_purchase_accept_and_reject(sb, http):
    contact(http, "ann@example.com")
    product(http, "p1")
    url = http.url("/purchases/")
    assert http.post(url, json=purchase_body("dup", paymentMethod="card")).status_code == 201
    again = http.post(url + "?triggerPurchaseEvent=false", json=purchase_body("dup", paymentMethod="cash"))
    assert again.status_code == 201 and again.json()["paymentMethod"] == "card"  # stored once: the first
    store = sb.store
    assert store["purchase_duplicates"] == {"dup": 1}
    assert store["purchases"]["dup"]["triggerPurchaseEvent"] is True
    sb.configure(duplicate_purchase="reject")
    assert_error(http.post(url, json=purchase_body("dup")), 409)


def test_purchase_url_on_unauthorised_domain_is_e0103(sb, http):
    contact(http, "ann@example.com")
    product(http, "p1")
    product(http, "p2", productDetailUrl="https://evil.com/p2")  # stored before the check was switched on
    sb.configure(allowed_domains=["http://www.mysite.com", "shop.example.com"])
    body = purchase_body(products=("p1", "p2"))
    body["products"][0]["productDetailUrl"] = "https://shop.example.com/p1"
    err = assert_error(http.post(http.url("/purchases/"), json=body), 400, "E0103")
    assert err["productIds"] == ["p2"] and err["allowedDomains"] == [
        "http://www.mysite.com",
        "shop.example.com",
    ]
    body["products"][1]["productDetailUrl"] = "http://www.mysite.com/p2"
    assert http.post(http.url("/purchases/"), json=body).status_code == 201


# ---------------------------------------------------------------------------------------- rate limit
def test_rate_limit_429_has_reset_and_no_retry_after(sb, http):
    sb.reset(limit=2, window_seconds=1)
    url = http.url("/contacts/nobody@example.com")
    first, second = http.get(url), http.get(url)
    assert first.headers["X-RateLimit-Limit"] == "2"
    assert (first.headers["X-RateLimit-Remaining"], second.headers["X-RateLimit-Remaining"]) == ("1", "0")
    throttled = http.get(url)
    body = assert_error(throttled, 429)
    assert body["title"] == "Too Many Requests"
    assert throttled.headers["X-RateLimit-Remaining"] == "0"
    reset = int(throttled.headers["X-RateLimit-Reset"])
    assert time.time() < reset <= time.time() + 2
    stats = sb.stats()
    assert stats["throttled_by_limiter"] == 1 and stats["accepted_by_limiter"] == 2  # no slot used
    time.sleep(max(0.0, reset - time.time()) + 0.02)
    assert http.get(url).status_code == 404
    assert sb.max_in_window() <= 2


# ------------------------------------------------------------------------------------------- imports
def test_contacts_import_with_a_bad_row(sb, http):
    contact(http, "keep@example.com", _name="Kept")
    text = (
        "_email,_name,_points,_newsletterSubscriptionStatus\n"
        "ann@example.com,Ann,3,subscribed\n"
        "not-an-email,Bad,1,none\n"
        "\n"
        "bob@example.com,Bob,x,maybe\n"
        "keep@example.com,Overridden,,\n"
    )
    created, done = run_import(http, text=text)
    for key in ("startedAt", "finishedAt", "cancelledAt", "errorReportFileUrl"):
        assert key not in created  # unset optional fields are omitted
    assert created["origin"] == "api" and created["type"] == "contacts"
    assert created["options"] == {"delimiter": ",", "overrideExisting": True, "updateOnlyEmptyFields": False}
    assert done["status"] == "finished"
    assert (done["total"], done["success"], done["errors"]) == (4, 2, 2)
    assert done["startedAt"] <= done["finishedAt"] and "cancelledAt" not in done
    contacts = sb.store["contacts"]
    assert contacts["ann@example.com"] == {
        "_email": "ann@example.com",
        "_name": "Ann",
        "_points": 3,
        "_newsletterSubscriptionStatus": "subscribed",
    }
    assert contacts["keep@example.com"]["_name"] == "Overridden" and "bob@example.com" not in contacts

    report = requests.get(done["errorReportFileUrl"])  # pre-signed style: no Authorization header
    assert report.status_code == 200 and report.headers["Content-Type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(report.text)))
    assert rows[0] == {
        "row": "3",
        "key": "not-an-email",
        "field": "_email",
        "message": "must be a valid email address (got 'not-an-email')",
    }
    assert {(r["row"], r["field"]) for r in rows[1:]} == {
        ("5", "_points"),
        ("5", "_newsletterSubscriptionStatus"),
    }
    as_json = requests.get(done["errorReportFileUrl"].replace("errors.csv", "errors.json")).json()
    assert as_json["importId"] == done["id"] and len(as_json["errors"]) == 3
    assert_error(requests.get(done["errorReportFileUrl"], headers=AUTH), 400)  # second auth mechanism
    assert_error(requests.get(done["errorReportFileUrl"].split("?")[0]), 403)  # no token


def test_import_override_and_only_empty_fields(sb, http):
    contact(http, "ann@example.com", _name="Ann")
    _, done = run_import(
        http,
        text="_email;_name;_surname\nann@example.com;Other;Lee\n",
        delimiter=";",
        overrideExisting="false",
    )
    assert done["success"] == 1 and sb.store["contacts"]["ann@example.com"] == {
        "_email": "ann@example.com",
        "_name": "Ann",
    }
    _, done = run_import(
        http, text="_email,_name,_surname\nann@example.com,Other,Lee\n", updateOnlyEmptyFields="true"
    )
    assert sb.store["contacts"]["ann@example.com"] == {
        "_email": "ann@example.com",
        "_name": "Ann",
        "_surname": "Lee",
    }
    _, done = run_import(
        http,
        kind="products",
        text="productId,name,unitPrice,categories,isBlacklisted\np1,Tee,9.5,A|A/B,false\np2,Cap,cheap,,\n",
    )
    assert (done["success"], done["errors"]) == (1, 1)
    p1 = sb.store["products"]["p1"]
    assert p1["unitPrice"] == 9.5 and p1["categories"] == ["A", "A/B"] and p1["isBlacklisted"] is False


def test_import_request_validation(sb, http):
    url = http.url("/imports/")
    assert_error(http.post(url, json={"type": "contacts"}), 415)
    cases = {
        "file: is required": import_form(file=None),
        "delimiter: must be": import_form(delimiter="|"),
        "type: must be one of": import_form(kind="orders"),
        "updateOnlyEmptyFields: is required": import_form(updateOnlyEmptyFields=None),
        "overrideExisting: must be true or false": import_form(overrideExisting="yes"),
        "can only be true if overrideExisting": import_form(
            overrideExisting="false", updateOnlyEmptyFields="true"
        ),
        "couponSetId: is required": import_form(kind="coupons", text="code\nA\n"),
        "content-type text/csv": import_form(file=("c.csv", b"_email\n", "application/octet-stream")),
        "must contain the _email column": import_form(text="email\nann@example.com\n"),
        "unknown field id(s)": import_form(text="_email,_nope\nann@example.com,1\n"),
        "must be UTF-8": import_form(
            file=("c.csv", "_email,_name\na@b.co,Jos\u00e9\n".encode("latin-1"), "text/csv")
        ),
        "extra: is not a known import field": import_form(extra="1"),
    }
    for expected, form in cases.items():
        assert expected in assert_error(http.post(url, files=form), 422)["detail"]
    assert sb.store["imports"] == {}
    sb.configure(header_errors="import")
    _, done = run_import(http, text="email\nann@example.com\n")
    assert done["status"] == "error"
    sb.configure(header_errors="request")


def test_oversize_import_file_is_413(sb, http):
    sb.configure(max_import_bytes=64)
    big = "_email\n" + "".join(f"user{i}@example.com\n" for i in range(10))
    assert_error(http.post(http.url("/imports/"), files=import_form(text=big)), 413)
    assert http.post(http.url("/imports/"), files=import_form(text="_email\na@b.co\n")).status_code == 201


def test_eleventh_queued_import_is_e0401(sb, http):
    sb.configure(async_delay=30)  # nothing finishes during the test; reset() releases the worker
    ids = []
    for _ in range(10):
        resp = http.post(http.url("/imports/"), files=import_form())
        assert resp.status_code == 201
        ids.append(resp.json()["id"])
    refused = http.post(http.url("/imports/"), files=import_form())
    assert "limit of 10 queued imports" in assert_error(refused, 400, "E0401")["detail"]
    assert sb.cancel_import(ids[-1])["status"] == "cancelled"
    assert http.post(http.url("/imports/"), files=import_form()).status_code == 201


def test_import_list_paging(sb, http):
    sb.configure(async_delay=30)
    ids = [http.post(http.url("/imports/"), files=import_form()).json()["id"] for _ in range(3)]
    first = http.get(http.url("/imports/?limit=2")).json()
    assert [i["id"] for i in first["results"]] == ids[::-1][:2]  # newest first
    assert "prev" not in first["links"]
    second = http.get(first["links"]["next"]).json()
    assert [i["id"] for i in second["results"]] == [ids[0]] and "next" not in second["links"]
    assert http.get(second["links"]["prev"]).json() == first
    assert_error(http.get(http.url("/imports/?limit=0")), 400)
    assert_error(http.get(http.url("/imports/none")), 404)


def test_coupon_import_adds_codes_once(sb, http):
    _, done = run_import(http, kind="coupons", text="code\nA1\nB2\nA1\n", couponSetId="set-1")
    assert (done["total"], done["success"], done["errors"]) == (3, 2, 1)
    assert done["options"]["couponSetId"] == "set-1"
    _, again = run_import(http, kind="coupons", text="code\nB2\nC3\n", couponSetId="set-1")
    assert (again["success"], again["errors"]) == (1, 1)
    assert sb.store["coupons"] == {"set-1": ["A1", "B2", "C3"]}
    report = sb.store["imports"][again["id"]]["_report"]
    assert report == [
        {"row": 2, "key": "B2", "field": "code", "message": "coupon code B2 already exists in the coupon set"}
    ]
    sb.configure(coupon_sets=["set-1"])
    unknown = http.post(
        http.url("/imports/"), files=import_form(kind="coupons", text="code\nZ\n", couponSetId="x")
    )
    assert "coupon set x does not exist" in assert_error(unknown, 422)["detail"]
    sb.configure(coupon_sets=None)


def test_failed_import_ends_in_error(sb, http):
    sb.fail_next_imports(1)
    _, done = run_import(http)
    assert done["status"] == "error" and sb.store["contacts"] == {}
    _, ok = run_import(http)
    assert ok["status"] == "finished" and "errorReportFileUrl" not in ok


# ------------------------------------------------------------------------------------------- exports
def test_contacts_export_csv(sb, http):
    contact(http, "ann@example.com", _name="Ann", _birthdate="1990-05-17T00:00:00Z", kids=["a", "b"])
    contact(http, "bob@example.com", _points=2)
    resp = http.post(
        http.url("/exports/"), json={"exportType": "contacts", "delimiter": ",", "dateFormat": "ISO"}
    )
    assert resp.status_code == 201
    created = resp.json()
    assert created["status"] == "queued" and created["exportType"] == "contacts" and "fileUrl" not in created
    done = wait_job(http, f"/exports/{created['id']}")
    assert done["status"] == "finished" and done["total"] == 2 and done["progress"] == 100
    again = http.get(http.url(f"/exports/{created['id']}")).json()
    assert again["fileUrl"] != done["fileUrl"]  # a new URL on every GET
    rows = list(csv.DictReader(io.StringIO(requests.get(done["fileUrl"]).text)))
    by_email = {r["_email"]: r for r in rows}
    assert set(by_email) == {"ann@example.com", "bob@example.com"}
    assert by_email["ann@example.com"]["_name"] == "Ann" and by_email["ann@example.com"]["kids"] == "a|b"
    assert by_email["ann@example.com"]["_birthdate"] == "1990-05-17T00:00:00.000Z"
    assert by_email["bob@example.com"]["_points"] == "2"
    assert_error(requests.get(done["fileUrl"], headers=AUTH), 400)
    sb.configure(file_url_ttl=0)
    expired = http.get(http.url(f"/exports/{created['id']}")).json()["fileUrl"]
    time.sleep(0.01)
    assert "expired" in assert_error(requests.get(expired), 403)["detail"]


def test_export_validation_and_e0301(sb, http):
    url = http.url("/exports/")
    bad = http.post(url, json={"type": "products", "delimiter": "|", "dateFormat": "X"})
    detail = assert_error(bad, 422)["detail"]
    for part in ("type: is not a known field", "exportType: is required", "delimiter:", "dateFormat:"):
        assert part in detail, detail
    no_range = http.post(url, json={"exportType": "activities", "delimiter": ",", "dateFormat": "L"})
    assert "fromDate and toDate are required" in assert_error(no_range, 422)["detail"]
    too_long = {"fromDate": "2024-01-01T00:00:00Z", "toDate": "2024-03-01T00:00:00Z"}
    wide = http.post(
        url, json={"exportType": "activities", "delimiter": ",", "dateFormat": "L", "filters": too_long}
    )
    assert "31 days" in assert_error(wide, 422)["detail"]
    sb.configure(async_delay=30)
    body = {"exportType": "contacts", "delimiter": ";", "dateFormat": "LL"}
    for _ in range(5):
        assert http.post(url, json=body).status_code == 201
    assert "limit of 5 queued exports" in assert_error(http.post(url, json=body), 400, "E0301")["detail"]


def test_activities_and_simple_contract_exports(sb, http):
    contact(http, "ann@example.com")
    product(http, "p1", publishedAt="2024-01-02T03:04:00Z")
    http.post(http.url("/purchases/"), json=purchase_body("o-1"))
    window = {"fromDate": "2024-04-20T00:00:00Z", "toDate": "2024-05-10T00:00:00Z"}
    created = http.post(
        http.url("/exports/"),
        json={"exportType": "activities", "delimiter": ";", "dateFormat": "LLL", "filters": window},
    ).json()
    done = wait_job(http, f"/exports/{created['id']}")
    rows = list(csv.DictReader(io.StringIO(requests.get(done["fileUrl"]).text), delimiter=";"))
    assert rows == [
        {
            "_email": "ann@example.com",
            "activityType": "purchase",
            "date": "May 1, 2024 10:00 AM",
            "purchaseId": "o-1",
            "cartId": "cart-o-1",
            "totalPrice": "10.0",
            "totalQuantity": "1",
            "paymentMethod": "card",
            "productIds": "p1",
        }
    ]
    sb.configure(export_contract="simple")
    for kind, key, value in (("products", "productId", "p1"), ("purchases", "purchaseId", "o-1")):
        exp = http.post(http.url("/exports/"), json={"type": kind}).json()
        assert exp["type"] == kind and exp["delimiter"] == ","
        done = wait_job(http, f"/exports/{exp['id']}")
        rows = list(csv.DictReader(io.StringIO(requests.get(done["fileUrl"]).text)))
        assert [r[key] for r in rows] == [value]
    assert rows[0]["triggerPurchaseEvent"] == "true"


def test_export_path_is_configurable():
    with ConnectifSandbox(port=0, export_path="/v9/exports/", async_delay=DELAY) as other:
        auth = {"Authorization": "apiKey sandbox-key:sandbox-secret"}
        body = {"exportType": "contacts", "delimiter": ",", "dateFormat": "ISO"}
        created = requests.post(other.url + "/v9/exports/", json=body, headers=auth)
        assert created.status_code == 201
        assert requests.post(other.url + "/exports/", json=body, headers=auth).status_code == 404
        listed = requests.get(other.url + "/v9/exports/", headers=auth).json()
        assert [e["id"] for e in listed["results"]] == [created.json()["id"]]


# -------------------------------------------------------------------------------------------- faults
def test_fault_status_and_slow(sb, http):
    sb.inject("status", status=503, path_prefix="/contacts/")
    resp = http.get(http.url("/contacts/ann@example.com"))
    assert assert_error(resp, 503)["title"] == "Service Unavailable"
    assert "X-RateLimit-Reset" in resp.headers
    sb.inject("slow", delay=0.3)
    started = time.monotonic()
    assert http.get(http.url("/contacts/ann@example.com")).status_code == 404
    assert time.monotonic() - started >= 0.3
    assert sb.stats()["faults_fired"] == {"status": 1, "slow": 1}


def test_fault_drop(sb, http):
    sb.inject("drop", method="PATCH")
    with pytest.raises(requests.ConnectionError):
        requests.patch(http.url("/contacts/ann@example.com"), json={}, headers=AUTH)
    assert sb.store["contacts"] == {}
    assert contact(http, "ann@example.com")["_email"] == "ann@example.com"


def test_fault_throttle_has_reset_and_no_retry_after(sb, http):
    resp = requests.post(sb.url + "/_sandbox/faults", json={"kind": "throttle", "retry_after": 3})
    assert resp.status_code == 200
    throttled = http.get(http.url("/contacts/ann@example.com"))
    assert_error(throttled, 429)
    assert throttled.headers["X-RateLimit-Remaining"] == "0"
    assert 2 <= int(throttled.headers["X-RateLimit-Reset"]) - time.time() <= 4
    assert sb.stats()["throttled_by_fault"] == 1 and sb.stats()["accepted_by_limiter"] == 0


def test_faults_reach_file_urls(sb, http):
    _, done = run_import(http, text="_email\nbad\n")
    slots = sb.stats()["accepted_by_limiter"]
    sb.inject("status", status=500, path_prefix="/files/")
    assert_error(requests.get(done["errorReportFileUrl"]), 500)
    assert requests.get(done["errorReportFileUrl"]).status_code == 200
    assert sb.stats()["accepted_by_limiter"] == slots  # downloads use no rate-limit slot
    assert [r["status"] for r in sb.requests if r["path"].startswith("/files/")] == [500, 200]


# ------------------------------------------------------------------------------- control / plumbing
def test_control_endpoints_and_config(sb, http):
    contact(http, "ann@example.com")
    store = requests.get(sb.url + "/_sandbox/store").json()
    assert set(store) == {
        "contacts",
        "products",
        "purchases",
        "purchase_duplicates",
        "coupons",
        "imports",
        "exports",
    }
    config = requests.post(sb.url + "/_sandbox/config", json={"duplicate_purchase": "reject"}).json()
    assert config["duplicate_purchase"] == "reject" and config["export_path"] == "/exports/"
    assert "api_keys" not in config
    bad = requests.post(sb.url + "/_sandbox/config", json={"export_path": "/x/"})
    assert bad.status_code == 400
    assert requests.post(sb.url + "/_sandbox/reset", json={}).json()["reset"] is True
    assert sb.store["contacts"] == {} and sb.requests == []


def test_multipart_parser_exact_bytes():
    body = (
        b'--XyZ\r\nContent-Disposition: form-data; name="type"\r\n\r\ncontacts\r\n'
        b'--XyZ\r\nContent-Disposition: form-data; name="file"; filename="a.csv"\r\n'
        b"Content-Type: text/csv\r\n\r\n_email\r\na@b.co\r\n\r\n--XyZ--\r\n"
    )
    parts = parse_multipart(body, "multipart/form-data; boundary=XyZ")
    assert [(p.name, p.filename, p.content_type) for p in parts] == [
        ("type", None, None),
        ("file", "a.csv", "text/csv"),
    ]
    assert parts[1].data == b"_email\r\na@b.co\r\n"
    with pytest.raises(ValueError):
        parse_multipart(body[:-9], "multipart/form-data; boundary=XyZ")


def test_cli_runs_until_sigterm():
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "sandbox.connectif", "--port", "0", "--limit", "3", "--window", "1"]
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert "apiKey sandbox-key:sandbox-secret" in line
        url = next(tok for tok in line.split() if tok.startswith("http://"))
        resp = requests.get(
            url + "/contacts/a@b.co", headers={"Authorization": "apiKey sandbox-key:sandbox-secret"}
        )
        assert resp.status_code == 404 and resp.headers["X-RateLimit-Limit"] == "3"
        assert json.loads(requests.get(url + "/_sandbox/stats").text)["limit"] == 3
    finally:
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    assert err == ""
