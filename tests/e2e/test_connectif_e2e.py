"""connectif_sync through Airflow against the sample warehouse and the Connectif sandbox."""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter

import duckdb
import pytest
import requests

from sandbox.connectif import ConnectifSandbox
from sandbox.env import CONNECTIF_KEY_ID, CONNECTIF_KEY_SECRET, conn_json
from tests.e2e.harness import LIMIT, WINDOW, WINDOW_SECONDS, Expected, Harness, run_env, wait_for
from tests.e2e.test_voucherify_e2e import EMAIL, PHONE, quarantined

pytestmark = [pytest.mark.e2e, pytest.mark.serial]  # clock-checked pacing: run alone
ALL_TIME = ("2026-10-01", "2026-11-01")


@pytest.fixture
def connectif(airflow_db, warehouse, tmp_path):
    with ConnectifSandbox(port=0, limit=LIMIT, window_seconds=WINDOW_SECONDS, async_delay=0.02) as sandbox:
        env = run_env(tmp_path, warehouse, connectif_url=sandbox.url)
        conn = env["AIRFLOW_CONN_CONNECTIF_DEFAULT"]
        env["AIRFLOW_CONN_CONNECTIF_DEFAULT"] = conn.replace(
            '"requests_per_minute"', '"bulk_threshold": 500, "requests_per_minute"'
        )
        yield Harness(sandbox, env, tmp_path, dag_id="connectif_sync")


def test_initial_import_then_daily_syncs_share_one_bucket_and_deliver_once(connectif, warehouse):
    # Initial load: every contact and product, far above bulk_threshold, so CSV imports.
    initial = connectif.run({"entities": ["contacts", "products"]}, window=ALL_TIME)
    contacts = initial["reports"]["contacts"]
    imports = [
        r for r in connectif.sandbox.requests if r["method"] == "POST" and r["path"].startswith("/imports")
    ]
    assert imports and contacts["to_send"] > 1000
    assert not [r for r in connectif.sandbox.requests if r["method"] == "PATCH" and "/contacts/" in r["path"]]
    assert contacts["sent"] + contacts["failed"] == contacts["to_send"]
    assert contacts["sent"] == len(connectif.sandbox.store["contacts"])
    # Blank descriptions or brands stay home, quarantined under the rule's name.
    blank = {k for k, d in Expected(warehouse).defects("products").items() if "blank_required" in d}
    q = quarantined(initial["reports"]["products"])
    assert blank and blank <= set(q) and not blank & set(connectif.sandbox.store["products"])
    named = {"description must not be blank when given", "brand must not be blank when given"}
    assert all(named & {f["rule"] for f in q[k]["failures"]} for k in blank)

    # The daily run: unchanged contacts are skipped; purchases find their contacts and products.
    daily = connectif.run()
    reports = daily["reports"]
    assert reports["contacts"]["sent"] == 0 and reports["contacts"]["unchanged_skipped"] > 100
    store = connectif.sandbox.store
    assert reports["purchases"]["sent"] == len(store["purchases"]) > 100
    assert all(p["triggerPurchaseEvent"] for p in store["purchases"].values())
    assert not store.get("purchase_duplicates")
    posts = Counter(
        r["body"]["purchaseId"]
        for r in connectif.sandbox.requests
        if r["method"] == "POST" and r["path"].startswith("/purchases") and r["status"] < 300
    )
    assert posts and max(posts.values()) == 1
    # Orders dated after the window never reach Connectif; those extracted name the rule.
    future = {k for k, d in Expected(warehouse).defects("orders").items() if "future_order_date" in d}
    q = quarantined(reports["purchases"])
    assert future and not future & set(store["purchases"]) and future & set(q)
    rule = "purchaseDate not after the window end (not in the future)"
    assert all(rule in {f["rule"] for f in q[k]["failures"]} for k in future & set(q))
    # Contacts, products and purchases drew on one bucket: the account's limit held throughout.
    assert connectif.sandbox.stats()["throttled_by_limiter"] == 0
    assert connectif.sandbox.max_in_window() <= LIMIT

    before = len(connectif.sandbox.requests)
    again = connectif.run()
    assert len(connectif.sandbox.requests) == before
    assert all(again["reports"][e]["sent"] == 0 for e in ("contacts", "products", "purchases"))


def test_historical_purchases_fire_no_automations_and_refusals_keep_the_vendor_code(connectif):
    result = connectif.run({"entities": ["purchases"], "historical_import": True}, window=WINDOW)
    report = result["reports"]["purchases"]
    # No contact or product was sent first: Connectif refuses every purchase, and says why.
    assert report["sent"] == 0 and report["failed"] == report["to_send"] > 100
    refused = [r for r in connectif.sandbox.requests if r["path"].startswith("/purchases")]
    assert refused and all(r["query"].get("triggerPurchaseEvent") in ("false", ["false"]) for r in refused)
    from reverse_etl.ledger import record_history

    key = next(iter(Counter(r["body"]["purchaseId"] for r in refused)))
    history = record_history("connectif", "purchases", key, url=connectif.state_url)
    assert history["current"]["status"] == "failed" and "E0101" in history["current"]["error"]


def _new_codes(warehouse, window) -> dict[str, str]:
    """Code -> coupon set of every NEW, not deleted coupon changed in the window (read independently)."""
    con = duckdb.connect(str(warehouse), read_only=True)
    try:
        rows = con.execute(
            "SELECT coupon_code, coupon_set_id FROM coupons WHERE status = 'NEW' AND deleted_at IS NULL "
            "AND updated_at >= ?::TIMESTAMP AND updated_at < ?::TIMESTAMP",
            list(window),
        ).fetchall()
    finally:
        con.close()
    return dict(rows)


def test_coupons_go_once_into_their_sets_one_import_per_set(connectif, warehouse):
    expected = _new_codes(warehouse, ALL_TIME)
    # Two codes already in Connectif (loaded by hand, or by an import whose answer was lost).
    preloaded = sorted(expected)[:2]
    form = {
        "type": (None, "coupons"),
        "overrideExisting": (None, "false"),
        "updateOnlyEmptyFields": (None, "false"),
        "delimiter": (None, ";"),
        "couponSetId": (None, expected[preloaded[0]]),
        "file": ("c.csv", f"code\n{preloaded[0]}\n".encode(), "text/csv"),
    }
    auth = {"Authorization": f"apiKey {CONNECTIF_KEY_ID}:{CONNECTIF_KEY_SECRET}"}
    assert requests.post(f"{connectif.sandbox.url}/imports/", files=form, headers=auth).status_code == 201
    wait_for(lambda: connectif.sandbox.store["coupons"].get(expected[preloaded[0]]))

    report = connectif.run({"entities": ["coupons"]}, window=ALL_TIME)["reports"]["coupons"]
    store = connectif.sandbox.store["coupons"]
    held = [(code, set_id) for set_id, codes in store.items() for code in codes]
    assert len(held) == len(set(held)) == len(expected) > 500  # every code once
    assert dict(held) == expected  # each in its own set
    assert report["sent"] == report["to_send"] == len(expected) and report["failed"] == 0
    imports = connectif.sent("POST", "/imports")
    assert len(imports) == 1 + len(set(expected.values()))  # the preload, then one import per set

    again = connectif.run({"entities": ["coupons"]}, window=ALL_TIME)["reports"]["coupons"]
    assert again["sent"] == 0 and again["unchanged_skipped"] == len(expected)
    assert len(connectif.sent("POST", "/imports")) == len(imports)


def test_exports_land_in_the_warehouse_and_a_rerun_replaces_them(connectif, tmp_path):
    target = tmp_path / "exports.duckdb"  # a writable warehouse of its own (RETL_EXPORT_CONN_ID)
    connectif.env["AIRFLOW_CONN_RETL_EXPORTS"] = conn_json("duckdb", host=str(target))
    connectif.env["RETL_EXPORT_CONN_ID"] = "retl_exports"
    connectif.run({"entities": ["contacts", "products"]}, window=ALL_TIME)  # purchases need them
    conf = {"entities": ["purchases"], "exports": ["contacts", "activities"]}
    first = connectif.run(conf)
    export_task = first["tasks"]["export"]
    assert export_task == "success"

    store = connectif.sandbox.store
    start, end = (dt.datetime.fromisoformat(d).replace(tzinfo=dt.UTC) for d in WINDOW)
    in_window = {
        p["purchaseId"]
        for p in store["purchases"].values()
        if start <= dt.datetime.fromisoformat(p["purchaseDate"].replace("Z", "+00:00")) < end
    }
    con = duckdb.connect(str(target), read_only=True)
    emails = {r[0] for r in con.execute("SELECT _email FROM connectif_contacts").fetchall()}
    activities = con.execute(
        "SELECT purchaseId, _window_start, _window_end, _export_id FROM connectif_activities"
    ).fetchall()
    con.close()
    assert emails == set(store["contacts"]) and len(emails) > 100
    assert {a[0] for a in activities} == in_window and len(activities) == len(in_window) > 10
    assert {(a[1].isoformat(), a[2].isoformat()) for a in activities} == {
        (f"{WINDOW[0]}T00:00:00", f"{WINDOW[1]}T00:00:00")
    }
    exports = connectif.sent("POST", "/exports")
    assert [r["body"]["exportType"] for r in exports] == ["contacts", "activities"]

    # The same window again: new exports replace the window's rows; nothing doubles.
    connectif.run(conf)
    con = duckdb.connect(str(target), read_only=True)
    again = con.execute("SELECT purchaseId, _export_id FROM connectif_activities").fetchall()
    contacts = con.execute("SELECT count(*) FROM connectif_contacts").fetchone()[0]
    con.close()
    assert sorted(a[0] for a in again) == sorted(a[0] for a in activities)
    assert {a[1] for a in again}.isdisjoint({a[3] for a in activities})
    assert contacts == len(emails)


def test_a_failed_export_fails_the_run_and_says_so(connectif, tmp_path):
    connectif.env["AIRFLOW_CONN_RETL_EXPORTS"] = conn_json("duckdb", host=str(tmp_path / "exports.duckdb"))
    connectif.env["RETL_EXPORT_CONN_ID"] = "retl_exports"
    connectif.sandbox.fail_next_exports(1)
    result = connectif.run({"entities": ["products"], "exports": ["contacts"]}, expect_success=False)
    assert result["state"] == "failed" and result["tasks"]["export"] == "failed"
    assert result["tasks"]["products.load"] == "success"
    assert "ended error without a file" in result["log"].read_text()
    # The report ran before the export failed; the run's note still names it.
    assert result["note"].endswith("**Failed:** export: see its log.")


def test_dry_run_sends_nothing_and_skips_the_exports(connectif):
    dry = connectif.run({"dry_run": True, "exports": ["contacts"]}, window=ALL_TIME)
    assert connectif.sandbox.requests == []
    assert dry["reports"]["contacts"]["to_send"] > 1000 and dry["reports"]["contacts"]["sent"] == 0
    assert dry["tasks"]["export"] == "skipped"


def test_killed_while_imports_run_the_retry_collects_them_instead_of_importing_again(connectif):
    # Files of 500 rows: 3 imports wait at Connectif at once (max_jobs_in_flight) while more are to come.
    body = json.loads(connectif.env["AIRFLOW_CONN_CONNECTIF_DEFAULT"])
    body["extra"] = {**body["extra"], "import_rows": 500, "max_jobs_in_flight": 3}
    connectif.env["AIRFLOW_CONN_CONNECTIF_DEFAULT"] = json.dumps(body)
    # The imports stay queued until the delay is lowered: the run is killed while it polls, however slow
    # the machine (a fixed few seconds let a loaded machine finish an import before the kill).
    connectif.sandbox.configure(async_delay=3600.0)
    proc = connectif.start({"entities": ["contacts"]}, window=ALL_TIME)
    # A poll comes once the ledger recorded the three jobs in flight, each with its rows: kill then.
    wait_for(lambda: connectif.sent("GET", "/imports"), timeout=300)
    connectif.kill(proc)
    before = len(connectif.sent("POST", "/imports"))
    connectif.sandbox.configure(async_delay=0.02)
    retry = connectif.run({"entities": ["contacts"]}, window=ALL_TIME)["reports"]["contacts"]
    assert before == 3 and retry["resumed_jobs"] == 3  # polled, not imported twice
    # The rest went after them, in new files or one by one (few enough): each contact once.
    store = connectif.sandbox.store
    rows = sum(i["total"] for i in store["imports"].values()) + len(connectif.sent("PATCH", "/contacts/"))
    assert rows == len(store["contacts"]) + retry["failed"] and retry["sent"] == len(store["contacts"]) > 1000


CONSENTS = {"GRANTED", "DENIED", "UNKNOWN"}
STATUS = {"GRANTED": "subscribed", "DENIED": "unsubscribed", "UNKNOWN": "none"}
OLDEST, NEWEST = dt.date(1900, 1, 1), dt.date.fromisoformat(WINDOW[1])


def test_contacts_arrive_with_their_fields_and_bad_rows_are_quarantined_with_the_rule(connectif, warehouse):
    live = {
        c["email"].lower(): c
        for c in Expected(warehouse).customers().values()
        if c["deleted_at"] is None and c["email"] is not None
    }
    consents = ("email_marketing_consent", "sms_marketing_consent")
    bad = {
        email
        for email, c in live.items()
        if not EMAIL.match(email)
        or (c["phone"] is not None and not PHONE.match(c["phone"]))
        or any(c[col] is not None and c[col] not in CONSENTS for col in consents)
        or len(c["first_name"] or "") > 255
        or len(c["last_name"] or "") > 255
        or any(c[col] is not None and not c[col].strip() for col in ("first_name", "last_name"))
        or (c["birth_date"] is not None and not OLDEST <= c["birth_date"] <= NEWEST)
    }
    good = set(live) - bad
    assert len(good) > 100 and bad

    report = connectif.run({"entities": ["contacts"]})["reports"]["contacts"]
    stored = connectif.sandbox.store["contacts"]
    assert set(stored) == good and report["sent"] == len(good) and report["failed"] == 0
    for email in good:
        c, s = live[email], stored[email]
        assert s.get("_name") == c["first_name"] and s.get("_surname") == c["last_name"], email
        assert s.get("_mobilePhone") == c["phone"], email
        assert s["_newsletterSubscriptionStatus"] == STATUS.get(c["email_marketing_consent"], "none")
        assert s["_smsSubscriptionStatus"] == STATUS.get(c["sms_marketing_consent"], "none")
        assert s.get("language") == c["language"] and s.get("city") == c["city"], email
    q = quarantined(report)
    assert bad <= set(q)
    assert all(q[k]["failures"] and q[k]["failures"][0]["rule"] for k in bad)
    # The new defects reach the quarantine under the rule's own name.
    rules = {k: {f["rule"] for f in q[k]["failures"]} for k in q}
    defects = Expected(warehouse).defects("customers")
    customers = Expected(warehouse).customers()
    blank = {
        customers[k]["email"].lower() for k, d in defects.items() if "blank_email" in d and k in customers
    }
    implausible = {
        customers[k]["email"].lower()
        for k, d in defects.items()
        if "implausible_birthdate" in d and k in customers and customers[k]["email"]
    }
    assert blank and implausible and not (blank | implausible) & set(stored)
    assert all("_email is required and must not be blank" in rules[k] for k in blank), blank
    rule = "_birthdate between 1900-01-01 and the window end (not in the future)"
    assert all(rule in rules[k] for k in implausible), implausible
