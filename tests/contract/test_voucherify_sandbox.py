"""Contract tests for the Voucherify sandbox: real HTTP, responses checked against the official OpenAPI files.

Why: the pipeline's Voucherify client is tested against this sandbox, so the sandbox itself must keep
to the documented contract (shapes, statuses, headers, limits) or those client tests prove nothing.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from sandbox.voucherify import (
    CUSTOMERS_BULK_UPDATE,
    ORDERS_IMPORT,
    PRODUCTS_BULK_UPDATE,
    SPEC_ENV,
    SpecNotFoundError,
    VoucherifySandbox,
)

pytestmark = pytest.mark.serial  # clock-checked pacing: run alone (make test's second call)

REPO = Path(__file__).resolve().parents[2]
APP_ID, APP_TOKEN = "test-app", "test-token"
AUTH = {"X-App-Id": APP_ID, "X-App-Token": APP_TOKEN}
BIG_LIMIT = 100_000


@pytest.fixture(scope="module")
def sb():
    with VoucherifySandbox(port=0, app_id=APP_ID, app_token=APP_TOKEN, async_delay=0.02) as sandbox:
        yield sandbox


@pytest.fixture(autouse=True)
def fresh(sb):
    sb.reset(limit=BIG_LIMIT, window_seconds=60)
    sb.configure(async_delay=0.02, bulk_validation="item")
    yield


@pytest.fixture()
def http(sb):
    """A keep-alive session with credentials; ``http.url(path)`` builds absolute URLs."""
    session = requests.Session()
    session.headers.update(AUTH)
    session.url = lambda path: sb.url + path
    yield session
    session.close()


def assert_error(resp, status, key):
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert body["code"] == status and body["key"] == key
    assert isinstance(body["message"], str) and body["message"]
    assert isinstance(body["details"], str)
    assert body["request_id"].startswith("v-")
    return body


def assert_valid(validator, instance):
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(instance)]
    assert not errors, errors


def wait_action(http, aid, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        action = http.get(http.url(f"/v1/async-actions/{aid}")).json()
        if action["status"] in ("DONE", "FAILED"):
            return action
        time.sleep(0.01)
    raise AssertionError(f"async action {aid} did not finish: {action}")


# ------------------------------------------------------------------------------------------- startup
def test_missing_spec_dir_names_path_and_env(tmp_path, monkeypatch):
    missing = tmp_path / "nope"
    with pytest.raises(SpecNotFoundError) as exc:
        VoucherifySandbox(spec_dir=missing)
    assert str(missing) in str(exc.value) and SPEC_ENV in str(exc.value)
    monkeypatch.setenv(SPEC_ENV, str(missing))
    with pytest.raises(SpecNotFoundError, match="nope"):
        VoucherifySandbox()


def test_documented_request_examples_validate(sb):
    """The validators accept the spec's own request examples for every endpoint we serve."""
    served = {(r.method, r.template) for r in sb.router.routes}
    checked = 0
    for doc in sb.spec.docs.values():
        for template, ops in doc["paths"].items():
            for method, op in ops.items():
                if (method.upper(), template) not in served:
                    continue
                content = (op.get("requestBody") or {}).get("content", {}).get("application/json", {})
                for example in (content.get("examples") or {}).values():
                    assert_valid(sb.spec.request[(method.upper(), template)], example["value"])
                    checked += 1
    assert checked >= 8


# ---------------------------------------------------------------------------------------------- auth
def test_auth_refused(sb, http):
    resp = requests.post(http.url("/v1/customers"), json={"source_id": "x"})
    body = assert_error(resp, 401, "unauthorized")
    assert "X-Rate-Limit-Limit" in resp.headers
    bad = requests.get(http.url("/v1/customers/x"), headers={**AUTH, "X-App-Token": "wrong"})
    assert_error(bad, 401, "unauthorized")
    assert body["request_id"] != bad.json()["request_id"]
    assert sb.store["customers"] == {}
    assert sb.stats()["accepted_by_limiter"] == 0  # refused requests use no rate-limit slot


# ---------------------------------------------------------------------------------------- validation
def test_schema_validation_error(sb, http):
    resp = http.post(http.url("/v1/customers"), json={"source_id": "c1", "address": "1 Main St"})
    body = assert_error(resp, 400, "invalid_payload")
    assert body["message"] == "Invalid payload"
    assert body["details"].startswith("Property .address:") and "object" in body["details"]
    resp = http.post(http.url("/v1/products"), json={"source_id": "p", "price": "12.50"})
    assert "Property .price" in assert_error(resp, 400, "invalid_payload")["details"]
    resp = http.post(http.url("/v1/customers"), json={"source_id": "c1", "birthdate": "31/12/1990"})
    assert "birthdate" in assert_error(resp, 400, "invalid_payload")["details"]  # OAS format: date
    assert sb.store["customers"] == {}


def test_transport_level_errors(http):
    assert_error(
        http.post(
            http.url("/v1/customers"),
            data="source_id=x",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        ),
        415,
        "unsupported_media_type",
    )
    malformed = http.post(http.url("/v1/customers"), data="{", headers={"Content-Type": "application/json"})
    assert_error(malformed, 400, "invalid_payload")
    assert_error(http.get(http.url("/v1/vouchers")), 404, "not_found")
    wrong = http.patch(http.url("/v1/customers/abc"), json={})
    body = assert_error(wrong, 405, "method_not_allowed")
    assert set(wrong.headers["Allow"].split(", ")) == {"GET", "PUT", "DELETE"}
    assert "PATCH is not supported" in body["details"]


# ------------------------------------------------------------------------------------------ customers
def test_customer_upsert_by_source_id(sb, http):
    url = http.url("/v1/customers")
    first = http.post(url, json={"source_id": "cust-1", "name": "Ann", "metadata": {"tier": "gold"}})
    assert first.status_code == 200
    assert_valid(sb.spec.response("customers", "POST", "/v1/customers", 200), first.json())
    second = http.post(url, json={"source_id": "cust-1", "email": "ann@example.com"})
    assert second.status_code == 200
    a, b = first.json(), second.json()
    assert a["id"] == b["id"] and a["id"].startswith("cust_") and b["object"] == "customer"
    assert b["name"] == "Ann" and b["email"] == "ann@example.com" and b["metadata"] == {"tier": "gold"}
    assert "updated_at" in b and b["created_at"] == a["created_at"]
    store = sb.store["customers"]
    assert list(store) == ["cust-1"] and store["cust-1"]["email"] == "ann@example.com"

    by_id = http.get(http.url(f"/v1/customers/{a['id']}"))
    by_source = http.get(http.url("/v1/customers/cust-1"))
    assert by_id.json() == by_source.json()
    upd = http.put(http.url("/v1/customers/cust-1"), json={"phone": "+44 1"})
    assert upd.status_code == 200 and upd.json()["phone"] == "+44 1" and upd.json()["name"] == "Ann"
    assert_valid(sb.spec.response("customers", "PUT", "/v1/customers/{customerId}", 200), upd.json())

    assert http.delete(http.url("/v1/customers/cust-1")).status_code == 204
    gone = assert_error(http.get(http.url("/v1/customers/cust-1")), 404, "not_found")
    assert gone["resource_type"] == "customer" and gone["resource_id"] == "cust-1"
    assert_error(http.delete(http.url("/v1/customers/cust-1")), 404, "not_found")
    assert_error(http.put(http.url("/v1/customers/cust-1"), json={}), 404, "not_found")
    assert_error(http.post(url, json={"id": "cust_unknown"}), 404, "not_found")


def test_customer_without_source_id_gets_generated_id(sb, http):
    resp = http.post(http.url("/v1/customers"), json={"email": "anon@example.com"})
    cid = resp.json()["id"]
    assert cid.startswith("cust_") and list(sb.store["customers"]) == [cid]


# ------------------------------------------------------------------------------------ products/orders
def test_product_crud(sb, http):
    resp = http.post(http.url("/v1/products"), json={"source_id": "sku-1", "name": "Tee", "price": 1999})
    assert resp.status_code == 200
    product = resp.json()
    assert_valid(sb.spec.response("products", "POST", "/v1/products", 200), product)
    assert product["id"].startswith("prod_") and product["object"] == "product"
    again = http.post(http.url("/v1/products"), json={"source_id": "sku-1", "price": 2499}).json()
    assert again["id"] == product["id"] and again["price"] == 2499 and again["name"] == "Tee"
    put = http.put(http.url("/v1/products/sku-1"), json={"metadata": {"color": "red"}}).json()
    assert put["metadata"] == {"color": "red"} and put["price"] == 2499
    assert http.get(http.url(f"/v1/products/{product['id']}")).json()["source_id"] == "sku-1"
    assert http.delete(http.url("/v1/products/sku-1")).status_code == 204
    assert_error(http.get(http.url("/v1/products/sku-1")), 404, "not_found")


def test_order_upserts_its_customer(sb, http):
    order = {
        "source_id": "ord-1",
        "status": "PAID",
        "customer": {"source_id": "buyer-1", "email": "b@example.com", "name": "Bea"},
        "items": [{"source_id": "sku-1", "related_object": "product", "quantity": 2, "price": 500}],
        "metadata": {"channel": "web"},
    }
    resp = http.post(http.url("/v1/orders"), json=order)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert_valid(sb.spec.response("orders", "POST", "/v1/orders", 200), body)
    cust = sb.store["customers"]["buyer-1"]
    assert body["customer_id"] == cust["id"] and body["customer"] == {"id": cust["id"], "object": "customer"}
    assert body["amount"] == 1000 and body["object"] == "order" and body["id"].startswith("ord_")
    again = http.post(http.url("/v1/orders"), json={"source_id": "ord-1", "status": "FULFILLED"}).json()
    assert again["id"] == body["id"] and again["status"] == "FULFILLED" and again["amount"] == 1000
    put = http.put(http.url("/v1/orders/ord-1"), json={"metadata": {"x": 1}}).json()
    assert put["metadata"] == {"x": 1} and put["status"] == "FULFILLED"
    assert http.get(http.url(f"/v1/orders/{body['id']}")).json()["source_id"] == "ord-1"
    assert_error(http.get(http.url("/v1/orders/ord-404")), 404, "not_found")
    assert_error(http.delete(http.url("/v1/orders/ord-1")), 405, "method_not_allowed")  # not in the spec
    assert list(sb.store["orders"]) == ["ord-1"] and len(sb.store["customers"]) == 1


# ---------------------------------------------------------------------------------------- bulk/async
def check_action(sb, action, type_, result_schema):
    assert action["type"] == type_ and action["object"] == "async_action" and action["id"].startswith("aa_")
    assert_valid(sb.spec.component("async-actions", "AsyncActionBase"), action)
    assert_valid(sb.spec.component("async-actions", result_schema), action["result"])


def test_customers_bulk_async_with_item_errors(sb, http):
    sb.inject(item_errors=["bad-email"])
    items = [
        {"source_id": "b-1", "name": "One"},
        {"name": "no source id"},
        {"source_id": "b-3", "address": "not an object"},
        {"source_id": "bad-email", "email": "nope"},
        {"source_id": "b-5", "metadata": {"k": 1}},
    ]
    resp = http.post(http.url("/v1/customers/bulk/async"), json=items)
    assert resp.status_code == 202 and set(resp.json()) == {"async_action_id"}
    action = wait_action(http, resp.json()["async_action_id"])
    check_action(sb, action, CUSTOMERS_BULK_UPDATE, "AsyncActionResultCustomersBulkUpdateResponseBody")
    assert (
        action["status"] == "DONE" and action["operation_status"] == "SUCCESS" and action["progress"] == 100
    )
    result = action["result"]
    assert result["done_count"] == 2 and result["failed_count"] == 3
    errors = {e["source_id"]: e for e in result["errors"]}
    assert set(errors) == {"", "b-3", "bad-email"}
    assert "source_id" in errors[""]["details"] and errors[""]["key"] == "invalid_payload"
    assert errors["b-3"]["details"].startswith("Property [2].address")
    assert errors["bad-email"]["key"] == "invalid_customer"
    assert errors["bad-email"]["message"] == "Customer email is invalid"
    assert set(sb.store["customers"]) == {"b-1", "b-5"}


def test_bulk_request_level_errors(sb, http):
    assert_error(
        http.post(http.url("/v1/customers/bulk/async"), json={"source_id": "x"}), 400, "invalid_payload"
    )
    sb.configure(bulk_validation="request")
    strict = http.post(http.url("/v1/products/bulk/async"), json=[{"source_id": "p"}, {"name": "x"}])
    assert "[1]" in assert_error(strict, 400, "invalid_payload")["details"]
    huge = b'[{"source_id": "x"}' + b" " * 10_485_760 + b"]"  # valid JSON, just over 10 MB
    too_big = http.post(
        http.url("/v1/customers/bulk/async"), data=huge, headers={"Content-Type": "application/json"}
    )
    assert too_big.status_code == 413
    body = too_big.json()
    assert body["statusCode"] == 413 and body["error"] == "Request Entity Too Large"  # spec's shape
    assert body["code"] == 413 and body["key"] == "query_too_large"


def test_products_bulk_and_queue_order(sb, http):
    sb.configure(async_delay=0.25)
    first = http.post(
        http.url("/v1/products/bulk/async"), json=[{"source_id": "p1", "name": "A", "price": 1}]
    )
    second = http.post(http.url("/v1/products/bulk/async"), json=[{"source_id": "p2", "name": "B"}])
    a1, a2 = first.json()["async_action_id"], second.json()["async_action_id"]
    time.sleep(0.08)
    s1 = http.get(http.url(f"/v1/async-actions/{a1}")).json()
    s2 = http.get(http.url(f"/v1/async-actions/{a2}")).json()
    assert (s1["status"], s2["status"]) == ("IN_PROGRESS", "ENQUEUED")  # bulk jobs queue behind earlier ones
    done1, done2 = wait_action(http, a1), wait_action(http, a2)
    check_action(sb, done2, PRODUCTS_BULK_UPDATE, "AsyncActionResultProductsBulkUpdateResponseBody")
    assert done1["updated_at"] <= done2["updated_at"] and done2["processing_time"] >= 200
    assert set(sb.store["products"]) == {"p1", "p2"} and sb.store["products"]["p1"]["price"] == 1
    assert_error(http.get(http.url("/v1/async-actions/aa_missing")), 404, "not_found")


def test_orders_import(sb, http):
    sb.inject(item_errors=["imp-3"])
    orders = [
        {"source_id": "imp-1", "amount": 100, "customer": {"source_id": "imp-buyer"}},
        {"source_id": "imp-2", "status": "NOT_A_STATUS"},
        {"source_id": "imp-3", "amount": 5},
    ]
    resp = http.post(http.url("/v1/orders/import"), json=orders)
    assert resp.status_code == 200, resp.text  # the spec documents 200 here, not 202
    action = wait_action(http, resp.json()["async_action_id"])
    check_action(sb, action, ORDERS_IMPORT, "17_res_obj_get_async_action_result_orders_import")
    result = action["result"]
    assert result["done_count"] == 1 and result["failed_count"] == 2
    assert result["message"] == "1 order(s) imported successfully, 2 failed."
    assert {f["source_id"] for f in result["failed"]} == {"imp-2", "imp-3"}
    assert all(isinstance(f["reason"], str) and f["reason"] for f in result["failed"])
    assert set(sb.store["orders"]) == {"imp-1"} and "imp-buyer" in sb.store["customers"]


def test_orders_import_over_2000_is_rejected(sb, http):
    resp = http.post(http.url("/v1/orders/import"), json=[{"source_id": f"o{i}"} for i in range(2001)])
    assert "2000" in assert_error(resp, 400, "invalid_payload")["details"]
    ok = http.post(http.url("/v1/orders/import"), json=[{"source_id": f"o{i}"} for i in range(2000)])
    assert ok.status_code == 200
    assert wait_action(http, ok.json()["async_action_id"])["result"]["done_count"] == 2000


def test_async_action_failed(sb, http):
    sb.fail_next_async_actions(1)
    resp = http.post(http.url("/v1/customers/bulk/async"), json=[{"source_id": "f-1"}])
    action = wait_action(http, resp.json()["async_action_id"])
    assert action["status"] == "FAILED" and action["operation_status"] == "FAILED"
    assert action["result"]["failed_count"] == 1 and sb.store["customers"] == {}
    resp = http.post(http.url("/v1/customers/bulk/async"), json=[{"source_id": "f-2"}])
    assert wait_action(http, resp.json()["async_action_id"])["status"] == "DONE"


# ----------------------------------------------------------------------------------------- rate limit
def test_rate_limit_sliding_window(sb, http):
    sb.reset(limit=5, window_seconds=1)
    remaining = []
    for i in range(5):
        resp = http.post(http.url("/v1/customers"), json={"source_id": f"r{i}"})
        assert resp.status_code == 200
        assert resp.headers["X-Rate-Limit-Limit"] == "5"
        remaining.append(int(resp.headers["X-Rate-Limit-Remaining"]))
    assert remaining == [4, 3, 2, 1, 0]
    throttled = http.post(http.url("/v1/customers"), json={"source_id": "r5"})
    body = assert_error(throttled, 429, "too_many_requests")
    assert body["message"] == "Too many requests hit the API too quickly."
    retry_after = int(throttled.headers["Retry-After"])
    assert retry_after == 1 and throttled.headers["X-Rate-Limit-Type"] == "api_calls"
    retry_epoch = int(throttled.headers["X-Rate-Limit-Retry"])
    assert time.time() - 1 <= retry_epoch <= math.ceil(time.time()) + 1
    assert throttled.headers["X-Rate-Limit-Remaining"] == "0"
    assert "r5" not in sb.store["customers"]  # a throttled request is not processed
    time.sleep(retry_after)
    resp = http.post(http.url("/v1/customers"), json={"source_id": "r5"})
    assert resp.status_code == 200 and "r5" in sb.store["customers"]
    stats = sb.stats()
    assert stats["throttled_by_limiter"] == 1 and stats["requests_total"] == 7
    assert sb.max_in_window() <= 5 and stats["max_in_window"] <= 5


def test_rate_limit_under_concurrency(sb):
    sb.reset(limit=20, window_seconds=0.5)
    stop = time.monotonic() + 1.2
    statuses: list[int] = []
    lock = threading.Lock()

    def client(n):
        with requests.Session() as s:
            s.headers.update(AUTH)
            while time.monotonic() < stop:
                code = s.get(f"{sb.url}/v1/customers/nobody").status_code
                with lock:
                    statuses.append(code)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(client, range(8)))
    accepted = statuses.count(404)
    assert statuses.count(429) > 0 and accepted >= 30  # up to 20 per 0.5 s for 1.2 s
    assert set(statuses) == {404, 429}
    assert sb.max_in_window() <= 20
    assert sb.stats()["throttled_by_limiter"] == statuses.count(429)


# --------------------------------------------------------------------------------------------- faults
def test_fault_status_with_skip_and_filters(sb, http):
    sb.inject("status", status=503, count=2, skip=1, path_prefix="/v1/customers", method="POST")
    codes = [http.post(http.url("/v1/customers"), json={"source_id": f"s{i}"}).status_code for i in range(4)]
    assert codes == [200, 503, 503, 200]
    assert http.get(http.url("/v1/customers/s0")).status_code == 200  # other method not matched
    faulted = [r for r in sb.requests if r["fault"]]
    assert [r["fault"] for r in faulted] == ["status", "status"]
    assert set(sb.store["customers"]) == {"s0", "s3"}  # faulted requests were not processed


def test_fault_status_body_shape(sb, http):
    sb.inject("status", status=500)
    body = assert_error(http.get(http.url("/v1/customers/x")), 500, "internal_error")
    assert body["message"] == "Internal Server Error"


def test_fault_drop(sb, http):
    sb.inject("drop", path_prefix="/v1/customers/bulk")
    with pytest.raises(requests.ConnectionError):
        http.post(http.url("/v1/customers/bulk/async"), json=[{"source_id": "d1"}])
    assert http.post(http.url("/v1/customers/bulk/async"), json=[{"source_id": "d1"}]).status_code == 202
    dropped = sb.requests[0]
    assert (
        dropped["fault"] == "drop" and dropped["status"] is None and dropped["body"] == [{"source_id": "d1"}]
    )


def test_fault_slow(sb, http):
    sb.inject("slow", delay=0.3)
    t0 = time.monotonic()
    resp = http.post(http.url("/v1/customers"), json={"source_id": "slow"})
    assert resp.status_code == 200 and time.monotonic() - t0 >= 0.3 and "slow" in sb.store["customers"]
    sb.inject("slow", delay=0.5)
    with pytest.raises(requests.Timeout):
        http.get(http.url("/v1/customers/slow"), timeout=0.1)


def test_fault_throttle_counted_separately(sb, http):
    resp = http.post(sb.url + "/_sandbox/faults", json={"kind": "throttle", "retry_after": 7, "count": 1})
    assert resp.status_code == 200 and resp.json()["rules"][0]["kind"] == "throttle"
    throttled = http.get(http.url("/v1/customers/x"))
    assert_error(throttled, 429, "too_many_requests")
    assert throttled.headers["Retry-After"] == "7" and throttled.headers["X-Rate-Limit-Type"] == "api_calls"
    assert http.get(http.url("/v1/customers/x")).status_code == 404
    stats = sb.stats()
    assert stats["throttled_by_fault"] == 1 and stats["throttled_by_limiter"] == 0
    assert stats["accepted_by_limiter"] == 1 and stats["faults_fired"] == {"throttle": 1}
    assert [r["throttled"] for r in sb.requests] == [True, False]


def test_faults_over_http(sb, http):
    ctl = sb.url + "/_sandbox/faults"
    rules = [{"kind": "status", "status": 502, "path_prefix": "/v1/products"}]
    resp = requests.post(ctl, json={"rules": rules, "item_errors": ["p-bad"]})
    assert resp.json()["item_errors"] == ["p-bad"] and len(resp.json()["rules"]) == 1
    assert http.get(http.url("/v1/products/x")).status_code == 502
    assert requests.get(ctl).json()["rules"] == []  # exhausted rules are removed
    assert_error(requests.post(ctl, json={"kind": "explode"}), 400, "invalid_payload")
    requests.delete(ctl)
    assert requests.get(ctl).json() == {"rules": [], "item_errors": []}


# -------------------------------------------------------------------------------------------- readback
def test_readback_endpoints(sb, http):
    http.post(http.url("/v1/customers?x=1"), json={"source_id": "rb-1"})
    requests.post(http.url("/v1/customers"), json={"source_id": "rb-2"})  # 401
    store = requests.get(sb.url + "/_sandbox/store").json()
    assert set(store) == {"customers", "products", "orders"} and list(store["customers"]) == ["rb-1"]
    recorded = requests.get(sb.url + "/_sandbox/requests").json()
    assert [r["status"] for r in recorded] == [200, 401]
    first = recorded[0]
    fields = {"t", "answered", "method", "path", "query", "status", "body", "bytes", "throttled", "fault"}
    assert set(first) == fields and first["bytes"] == len(b'{"source_id": "rb-1"}')
    assert first["t"] <= first["answered"]
    assert first["method"] == "POST" and first["path"] == "/v1/customers" and first["query"] == {"x": "1"}
    assert first["body"] == {"source_id": "rb-1"} and first["throttled"] is False and first["fault"] is None
    assert abs(first["t"] - time.time()) < 10
    stats = requests.get(sb.url + "/_sandbox/stats").json()
    assert stats["requests_total"] == 2 and stats["status_counts"] == {"200": 1, "401": 1}
    cfg = requests.post(sb.url + "/_sandbox/config", json={"limit": 3, "window_seconds": 2, "async_delay": 0})
    assert cfg.json()["limit"] == 3 and cfg.json()["window_seconds"] == 2 and sb.async_delay == 0
    assert_error(requests.post(sb.url + "/_sandbox/config", json={"bogus": 1}), 400, "invalid_payload")
    reset = requests.post(sb.url + "/_sandbox/reset", json={"limit": 7, "window_seconds": 3})
    assert reset.json()["limit"] == 7 and sb.limiter.window == 3
    assert sb.requests == [] and sb.store["customers"] == {}
    assert len(sb.requests) == 0  # control endpoints are not recorded


# ------------------------------------------------------------------------------------------------- CLI
def test_cli_runs_until_sigterm():
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "sandbox.voucherify", "--port", "0", "--limit", "3", "--window", "1"]
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert "sandbox-app-id" in line and "sandbox-app-token" in line
        url = next(tok for tok in line.split() if tok.startswith("http://"))
        resp = requests.get(
            url + "/v1/customers/none",
            headers={"X-App-Id": "sandbox-app-id", "X-App-Token": "sandbox-app-token"},
        )
        assert resp.status_code == 404 and resp.headers["X-Rate-Limit-Limit"] == "3"
        assert json.loads(requests.get(url + "/_sandbox/stats").text)["limit"] == 3
    finally:
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    assert err == ""  # no per-request logging without --verbose
