"""Reading Voucherify back for reconcile, against the sandbox over real HTTP: the documented list endpoints
(limit/page checked against the spec), the cheaper of listing and per-key lookups, and orders' customers
resolved to source ids."""

from __future__ import annotations

import pytest
import requests

from reverse_etl.hooks.voucherify import VoucherifyHook
from reverse_etl.ledger import Ledger, record_history
from reverse_etl.operators.voucherify import VoucherifyCustomersOperator, VoucherifyOrdersOperator
from reverse_etl.reconcile import reconcile
from sandbox.env import SANDBOX_APP_ID, SANDBOX_APP_TOKEN, conn_json
from sandbox.voucherify import VoucherifySandbox

CONN = "voucherify_read_back"
HEADERS = {"X-App-Id": SANDBOX_APP_ID, "X-App-Token": SANDBOX_APP_TOKEN, "Content-Type": "application/json"}


@pytest.fixture
def sandbox():
    with VoucherifySandbox(port=0, limit=10_000, window_seconds=1) as sb:
        yield sb


@pytest.fixture
def hook(monkeypatch, state_store, sandbox):
    extra = {"requests_per_minute": 600_000, "rate_window_seconds": 1, "backoff_base_seconds": 0.05}
    monkeypatch.setenv(
        f"AIRFLOW_CONN_{CONN.upper()}",
        conn_json("http", host=sandbox.url, login=SANDBOX_APP_ID, password=SANDBOX_APP_TOKEN, extra=extra),
    )
    return VoucherifyHook(CONN)


def post(sandbox, path: str, body: dict) -> dict:
    answer = requests.post(sandbox.url + path, json=body, headers=HEADERS, timeout=10)
    assert answer.status_code == 200, answer.text
    return answer.json()


def gets(sandbox, prefix: str) -> list[dict]:
    return [r for r in sandbox.requests if r["method"] == "GET" and r["path"].startswith(prefix)]


def test_list_endpoints_page_as_documented_and_refuse_undocumented_values(sandbox):
    for i in range(25):
        post(sandbox, "/v1/customers", {"source_id": f"c{i:02}", "email": f"C{i}@Example.com"})
    page = requests.get(
        sandbox.url + "/v1/customers", params={"limit": 10, "page": 3}, headers=HEADERS, timeout=10
    ).json()
    assert page["object"] == "list" and page["data_ref"] == "customers" and page["total"] == 25
    # Newest first by default (the page's words): page 3 holds the five oldest.
    assert [c["source_id"] for c in page["customers"]] == [f"c{i:02}" for i in range(4, -1, -1)]
    assert page["has_more"] is False
    for bad in ({"limit": 101}, {"page": 100}, {"order": "email"}, {"limit": "ten"}):
        answer = requests.get(sandbox.url + "/v1/customers", params=bad, headers=HEADERS, timeout=10)
        assert answer.status_code == 400 and answer.json()["key"] == "invalid_query_params", bad
    # Orders may go past page 99 (their page parameter allows 100).
    assert requests.get(sandbox.url + "/v1/orders", params={"page": 100}, headers=HEADERS, timeout=10).ok


def test_read_objects_lists_when_cheaper_and_gets_by_source_id_otherwise(sandbox, hook):
    for i in range(250):
        post(sandbox, "/v1/customers", {"source_id": f"c{i}", "name": f"N{i}"})
    many = [f"c{i}" for i in range(0, 250, 2)] + ["absent"]
    found = hook.read_objects("customers", many)
    assert set(found) == set(many) - {"absent"} and found["c10"]["name"] == "N10"
    assert len(gets(sandbox, "/v1/customers")) == 3  # three pages of 100, no per-key lookups
    before = len(sandbox.requests)
    few = hook.read_objects("customers", ["c7", "gone"])
    assert set(few) == {"c7"}
    paths = [r["path"] for r in sandbox.requests[before:]]
    assert paths == ["/v1/customers", "/v1/customers/c7", "/v1/customers/gone"]


def test_reconcile_records_held_records_only_and_orders_compare_their_customer(sandbox, hook, state_store):
    post(sandbox, "/v1/customers", {"source_id": "1", "name": "Ann", "email": "ANN@example.com"})
    post(sandbox, "/v1/customers", {"source_id": "2", "name": "Bob old"})
    post(
        sandbox,
        "/v1/orders",
        {"source_id": "o1", "status": "PAID", "amount": 1250, "customer": {"source_id": "1"}},
    )
    post(
        sandbox,
        "/v1/orders",
        {"source_id": "o2", "status": "PAID", "amount": 900, "customer": {"source_id": "2"}},
    )
    url = f"sqlite:///{state_store}"
    context = {"params": {}}
    customers = [
        {"_key": "1", "_deleted": False, "source_id": "1", "name": "Ann", "email": "ann@example.com"},
        {"_key": "2", "_deleted": False, "source_id": "2", "name": "Bob new"},
        {"_key": "3", "_deleted": False, "source_id": "3", "name": "Cy"},
    ]
    operator = VoucherifyCustomersOperator(task_id="t", manifest=None, vendor_conn_id=CONN)
    writes_before = [r for r in sandbox.requests if r["method"] != "GET"]
    report = reconcile(
        operator, hook, Ledger("voucherify", "customers", "r1", url), lambda: [customers], context
    )
    assert (report.checked, report.held, report.stale, report.missing) == (3, 1, 1, 1)
    current = record_history("voucherify", "customers", "1", url=url)
    assert current["current"]["status"] == "delivered"
    assert current["events"][-1]["detail"] == "reconciled: Voucherify holds it"
    assert record_history("voucherify", "customers", "2", url=url)["current"] is None

    orders = [
        {"_key": "o1", "_deleted": False, "source_id": "o1", "status": "PAID", "amount": 1250.0,
         "customer__source_id": "1"},
        # Same amount, but Voucherify has this order under customer 2.
        {"_key": "o2", "_deleted": False, "source_id": "o2", "status": "PAID", "amount": 900,
         "customer__source_id": "1"},
    ]  # fmt: skip
    operator = VoucherifyOrdersOperator(task_id="t", manifest=None, vendor_conn_id=CONN)
    report = reconcile(operator, hook, Ledger("voucherify", "orders", "r1", url), lambda: [orders], context)
    assert (report.held, report.stale) == (1, 1)
    assert record_history("voucherify", "orders", "o1", url=url)["current"]["status"] == "delivered"
    # Reading back never writes to the vendor.
    assert [r for r in sandbox.requests if r["method"] != "GET"] == writes_before
