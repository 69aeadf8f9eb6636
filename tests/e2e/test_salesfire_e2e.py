"""salesfire_sync through Airflow against the sample warehouse and the Salesfire sandbox."""

from __future__ import annotations

import datetime as dt
import re

import pytest

from reverse_etl.ledger import record_history
from sandbox.env import SALESFIRE_LISTS, SALESFIRE_SITE
from sandbox.salesfire import SalesfireSandbox
from tests.e2e.harness import WINDOW, Expected, Harness, run_env
from tests.e2e.test_voucherify_e2e import EMAIL, quarantined

pytestmark = pytest.mark.e2e
CONSENTS = {"GRANTED", "DENIED", "UNKNOWN"}
OLDEST, NEWEST = dt.date(1900, 1, 1), dt.date.fromisoformat(WINDOW[1])


@pytest.fixture
def salesfire(airflow_db, warehouse, tmp_path):
    lists = {(SALESFIRE_SITE, name): secret for name, secret in SALESFIRE_LISTS.items()}
    with SalesfireSandbox(port=0, lists=lists) as sandbox:
        env = run_env(tmp_path, warehouse, salesfire_url=sandbox.url)
        yield Harness(sandbox, env, tmp_path, dag_id="salesfire_sync")


def problems(c: dict) -> list[str]:
    """Salesfire's documented rules and the generic checks, restated from the warehouse side."""
    found = []
    if not (c["email"] or "").strip() and not (c["phone"] or "").strip():
        found.append("no contact")
    if c["email"] is not None and not EMAIL.match(c["email"]):
        found.append("email")
    if c["phone"] is not None and not re.match(r"^\+?[0-9]{6,15}$", c["phone"]):
        found.append("phone")
    for col in (
        "email_marketing_consent",
        "email_transactional_consent",
        "sms_marketing_consent",
        "sms_transactional_consent",
    ):
        if c[col] is not None and c[col] not in CONSENTS:
            found.append(col)
    name = " ".join(p for p in (c["first_name"], c["last_name"]) if p is not None)
    if len(name) > 255 or (name and not name.strip()):
        found.append("name")
    if c["birth_date"] is not None and not OLDEST <= c["birth_date"] <= NEWEST:
        found.append("birth_date")
    return found


def test_signed_exactly_once_into_the_right_list_then_rerun_sends_nothing(salesfire, warehouse):
    expected = Expected(warehouse)
    live = {k: c for k, c in expected.customers().items() if c["deleted_at"] is None}
    bad = {k for k, c in live.items() if problems(c)}
    good = set(live) - bad
    assert len(good) > 100 and bad

    first = salesfire.run()
    report = first["reports"]["customers"]
    assert report["sent"] == len(good) and report["failed"] == 0
    statuses = salesfire.sandbox.stats()["status_counts"]
    assert set(statuses) == {"200"}, statuses  # every signature and body was accepted

    store = salesfire.sandbox.store
    for key in good:
        c = live[key]
        target = "customers-uk" if c["country_code"] == "GB" else "customers-eu"
        stored = salesfire.sandbox.customer(SALESFIRE_SITE, target, c["email"] or c["phone"])
        assert stored is not None, key
        assert stored["_posts"] == 1
        assert stored["attributes"]["name"] == " ".join(p for p in (c["first_name"], c["last_name"]) if p)
        granted = {col for col in ("email_marketing_consent", "sms_marketing_consent") if c[col] == "GRANTED"}
        assert ("MARKETING" in stored.get("types", [])) == bool(granted)
    assert sum(len(customers) for customers in store.values()) == len(good)

    q = quarantined(report)
    assert bad <= set(q)
    for key in bad:
        history = record_history("salesfire", "customers", key, url=salesfire.state_url)
        assert history["current"]["status"] == "rejected"
    # The new defects reach the quarantine under the rule's own name.
    rules = {k: {f["rule"] for f in q[k]["failures"]} for k in q}
    defects = expected.defects("customers")
    blank = {k for k, d in defects.items() if "blank_email" in d} & set(live)
    implausible = {k for k, d in defects.items() if "implausible_birthdate" in d} & set(live)
    assert blank and implausible
    for key in blank:
        assert "email must not be blank when given" in rules[key], rules[key]
        if live[key]["phone"] is None:
            assert "email or mobile_number is required and must not be blank" in rules[key]
    for key in implausible:
        assert (
            "attributes.date_of_birth between 1900-01-01 and the window end (not in the future)" in rules[key]
        ), rules[key]
    # Every customer delivered went with the connection's update_existing (false by default).
    assert {r["body"]["update_existing"] for r in salesfire.sandbox.requests} == {False}

    before = len(salesfire.sandbox.requests)
    second = salesfire.run()
    assert len(salesfire.sandbox.requests) == before
    assert second["reports"]["customers"]["sent"] == 0
    assert second["reports"]["customers"]["unchanged_skipped"] == len(good)


def test_dry_run_sends_nothing(salesfire):
    result = salesfire.run({"dry_run": True})
    assert salesfire.sandbox.requests == []
    assert result["reports"]["customers"]["to_send"] > 100
