"""salesmanago_sync through Airflow against the sample warehouse and the Data Talks sandbox (SigV4)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections import Counter

import duckdb
import pytest

from reverse_etl.ledger import record_history
from sandbox.datatalks import DELETE_PATH, GROUP_KEY, PRODUCT_FIELDS, PRODUCT_REQUIRED, DataTalksSandbox
from tests.e2e.harness import LIMIT, WINDOW_SECONDS, Harness, run_env
from tests.e2e.test_voucherify_e2e import quarantined

pytestmark = pytest.mark.e2e
DAY = ("2026-10-31", "2026-11-01")
NEXT = ("2026-11-01", "2026-11-02")
MONTH = ("2026-10-01", "2026-11-01")


@pytest.fixture
def warehouse_copy(warehouse, tmp_path):
    """A copy the test may change (deletes, edits) without touching the session's warehouse."""
    path = tmp_path / "warehouse.duckdb"
    shutil.copy(warehouse, path)
    return path


def defects(warehouse, table: str, *kinds: str) -> dict[str, str]:
    """record_key -> defect, for the injected defects of these kinds (from dq_injected_defects)."""
    con = duckdb.connect(str(warehouse), read_only=True)
    rows = con.execute(
        "SELECT record_key, defect FROM dq_injected_defects WHERE table_name = ? AND defect IN "
        "(SELECT unnest(?::VARCHAR[]))",
        [table, list(kinds)],
    ).fetchall()
    con.close()
    return dict(rows)


def in_window(warehouse, sql: str, window: tuple[str, str]) -> set[str]:
    con = duckdb.connect(str(warehouse), read_only=True)
    keys = {str(r[0]) for r in con.execute(sql, list(window)).fetchall()}
    con.close()
    return keys


@pytest.fixture
def salesmanago(airflow_db, warehouse_copy, tmp_path):
    with DataTalksSandbox(port=0, limit=LIMIT, window_seconds=WINDOW_SECONDS) as sandbox:
        env = run_env(tmp_path, warehouse_copy, salesmanago_url=sandbox.url)
        yield Harness(sandbox, env, tmp_path, dag_id="salesmanago_sync")


def test_everything_once_with_its_fields_then_a_rerun_sends_nothing(salesmanago, warehouse_copy):
    result = salesmanago.run(window=DAY)
    reports = result["reports"]
    store = salesmanago.sandbox.store
    assert (
        reports["contacts"]["sent"]
        == len(store["contacts"]) - sum(1 for c in store["contacts"].values() if c.get("_from_event"))
        > 30
    )
    assert all(c["_posts"] == 1 for c in store["contacts"].values() if not c.get("_from_event"))
    # every body carried the group key and a valid signature (no 403 at all)
    assert "403" not in salesmanago.sandbox.stats()["status_counts"]
    assert all(
        r["body"]["group_key"] == GROUP_KEY for r in salesmanago.sandbox.requests if r["method"] == "POST"
    )

    con = duckdb.connect(str(warehouse_copy), read_only=True)
    sample = con.execute(
        "SELECT lower(email), first_name, last_name, city, country_code FROM customers "
        "WHERE updated_at >= ?::TIMESTAMP AND updated_at < ?::TIMESTAMP AND deleted_at IS NULL",
        list(DAY),
    ).fetchall()
    con.close()
    checked = 0
    for email, first, last, city, country in sample:
        stored = store["contacts"].get(email)
        if stored is None or stored.get("_from_event"):
            continue  # quarantined (bad email) or a duplicate key's older row
        assert stored.get("name") == " ".join(p for p in (first, last) if p) or None
        assert stored.get("city") == city and stored.get("country") == country
        checked += 1
    assert checked > 30

    # Customers whose email is blank or invalid are quarantined by rule, never sent (dq_injected_defects).
    bad = defects(warehouse_copy, "customers", "blank_email", "invalid_email")
    con = duckdb.connect(str(warehouse_copy), read_only=True)
    bad_emails = con.execute(
        "SELECT lower(email), CAST(customer_id AS VARCHAR) FROM customers WHERE updated_at >= ?::TIMESTAMP "
        "AND updated_at < ?::TIMESTAMP AND deleted_at IS NULL AND CAST(customer_id AS VARCHAR) IN "
        "(SELECT unnest(?::VARCHAR[]))",
        [*DAY, list(bad)],
    ).fetchall()
    con.close()
    contacts_q = quarantined(reports["contacts"]) if reports["contacts"]["rejected"] else {}
    for email, customer_id in bad_emails:
        assert email not in store["contacts"] and email in contacts_q
        rules = {f["rule"] for f in contacts_q[email]["failures"]}
        expected = (
            "email is required and must not be blank"
            if bad[customer_id] == "blank_email"
            else "email (the contact's key at SALESmanago) must be a valid address"
        )
        assert expected in rules or "superseded" in contacts_q[email]["reason"]
    assert all(" " not in e and e.count("@") == 1 for e in store["contacts"])

    events = reports["events"]
    ids = Counter(e["externalId"] for e in store["events"])
    assert events["sent"] == len(ids) == len(store["events"]) > 100 and store["event_duplicates"] == 0
    assert {e["contactExtEventType"] for e in store["events"]} >= {"VISIT", "CART", "PURCHASE"}

    before = len(salesmanago.sandbox.requests)
    again = salesmanago.run(window=DAY)
    assert len(salesmanago.sandbox.requests) == before
    assert all(again["reports"][e]["sent"] == 0 for e in ("contacts", "products", "events"))

    # Events of orders dated after the window end are quarantined with the plausibility rule.
    future = in_window(
        warehouse_copy,
        "SELECT o.order_id FROM orders o JOIN customers c ON c.customer_id = o.customer_id "
        "AND c.deleted_at IS NULL WHERE o.updated_at >= ?::TIMESTAMP AND o.updated_at < ?::TIMESTAMP "
        "AND o.ordered_at > ?::TIMESTAMP AND upper(o.status) IN ('PAID', 'FULFILLED', 'CANCELED')",
        (*DAY, DAY[1]),
    )
    events_q = quarantined(events) if future else {}
    for order_id in future:
        key = next(k for k in events_q if k.startswith(f"order-{order_id}-"))
        assert any("not after the window end" in (f["rule"] or "") for f in events_q[key]["failures"])
        assert not any(e["externalId"] == key for e in store["events"])

    # The whole month of products: documented items only, arrays, and bad rows quarantined by rule.
    products = salesmanago.run({"entities": ["products"]}, window=MONTH)["reports"]["products"]
    store = salesmanago.sandbox.store
    q = quarantined(products)
    assert products["rejected"] == len(q) > 0 and all(line["failures"][0]["rule"] for line in q.values())
    overlong = [line for line in q.values() if "at most" in line["reason"]]
    assert overlong and all(("name" in line["reason"] or "id" in line["reason"]) for line in overlong)
    refused = {k for k, line in q.items() if "superseded" not in line["reason"]}  # a newer row of a
    assert refused and not refused & set(store["products"])  # superseded key is sent, as it should
    assert len(store["products"]) == products["sent"] + products["unchanged_skipped"]
    for item in store["products"].values():  # only documented fields, required ones not blank, typed
        assert set(item) <= set(PRODUCT_FIELDS) and all(str(item[f]).strip() for f in PRODUCT_REQUIRED)
        assert isinstance(item["price"], float | int) and isinstance(item["stock_available"], int)
    month_products = in_window(
        warehouse_copy,
        "SELECT product_id FROM products WHERE updated_at >= ?::TIMESTAMP AND updated_at < ?::TIMESTAMP "
        "AND deleted_at IS NULL",
        MONTH,
    )
    bad = {
        k: d
        for k, d in defects(
            warehouse_copy, "products", "overlong_field", "negative_price", "blank_required"
        ).items()
        if k in month_products
    }
    assert bad and not set(bad) & set(store["products"])  # every bad product of the month was held back
    assert all(k in refused for k in bad)
    blank = [k for k, d in bad.items() if d == "blank_required"]
    assert all("is required and must not be blank" in q[k]["reason"] for k in blank)
    posts = salesmanago.sent("POST", "/v1/products")
    assert max(len(r["body"]["data"]) for r in posts) > 50  # arrays, not one by one


def test_changed_events_are_not_sent_again_and_deletes_touch_only_our_contacts(salesmanago, warehouse_copy):
    salesmanago.run({"entities": ["contacts", "events"]}, window=DAY)
    ours = sorted(c for c, v in salesmanago.sandbox.store["contacts"].items() if not v.get("_from_event"))[:3]
    # A contact someone else created at SALESmanago, whose customer the warehouse soft-deletes: not ours.
    con = duckdb.connect(str(warehouse_copy))
    stranger = con.execute(
        "SELECT lower(email) FROM customers WHERE updated_at < ?::TIMESTAMP AND deleted_at IS NULL "
        "AND email LIKE '%@%.%' AND email NOT LIKE '% %' LIMIT 1",
        [DAY[0]],
    ).fetchone()[0]
    con.execute(
        "UPDATE customers SET deleted_at = TIMESTAMP '2026-11-01 12:00:00', updated_at = TIMESTAMP "
        "'2026-11-01 12:00:00' WHERE lower(email) IN (SELECT unnest(?::VARCHAR[]))",
        [[*ours, stranger]],
    )
    # Every event of the day changes (its value): already delivered, so not sent again.
    con.execute(
        "UPDATE events SET value_cents = value_cents + 1, updated_at = TIMESTAMP '2026-11-01 13:00:00' "
        "WHERE updated_at >= ?::TIMESTAMP AND updated_at < ?::TIMESTAMP",
        list(DAY),
    )
    con.close()
    salesmanago.sandbox.configure()  # nothing to change; the stranger is put straight into the store
    with salesmanago.sandbox._lock:
        salesmanago.sandbox._contacts[stranger] = {"email": stranger, "_posts": 0}
    events_before = len(salesmanago.sandbox.store["events"])

    result = salesmanago.run({"entities": ["contacts", "events"]}, window=NEXT)
    deletes = [r["body"]["data"]["email"] for r in salesmanago.sent("DELETE", DELETE_PATH)]
    assert sorted(deletes) == ours and result["reports"]["contacts"]["deleted"] == 3
    assert stranger in salesmanago.sandbox.store["contacts"]  # never sent by us: left alone
    assert result["reports"]["contacts"]["deletes_skipped"] >= 1
    assert len(salesmanago.sandbox.store["events"]) == events_before  # no second event
    assert result["reports"]["events"]["unchanged_skipped"] > 100
    history = record_history("salesmanago", "contacts", ours[0], url=salesmanago.state_url)
    assert history["current"]["status"] == "deleted"


def test_dry_run_sends_nothing_then_the_contact_lookup_finds_what_a_run_sent(salesmanago):
    dry = salesmanago.run({"dry_run": True}, window=DAY)
    assert salesmanago.sandbox.requests == [] and dry["reports"]["events"]["to_send"] > 100

    salesmanago.run({"entities": ["contacts"]}, window=DAY)
    email = next(c for c, v in salesmanago.sandbox.store["contacts"].items() if not v.get("_from_event"))
    cli = [sys.executable, "-m", "reverse_etl.cli", "--state", salesmanago.state_url, "salesmanago-contact"]
    done = subprocess.run([*cli, email], env=salesmanago.env, capture_output=True, text=True, timeout=120)
    answer = json.loads(done.stdout.strip().splitlines()[-1])
    assert done.returncode == 0 and answer["at_salesmanago"]["contact"]["email"] == email
    assert answer["ledger"]["status"] == "delivered"
    missing = subprocess.run(
        [*cli, "nobody@example.com"], env=salesmanago.env, capture_output=True, text=True, timeout=120
    )
    assert missing.returncode == 1 and '"at_salesmanago": null' in missing.stdout
    sm_id = answer["at_salesmanago"]["contact"]["sm_id"]
    by_id = subprocess.run(
        [*cli, "--sm-id", sm_id], env=salesmanago.env, capture_output=True, text=True, timeout=120
    )
    found = json.loads(by_id.stdout.strip().splitlines()[-1])
    assert by_id.returncode == 0 and found["email"] == email and found["ledger"]["status"] == "delivered"
