"""The demo's report: its check that the sandboxes hold what the runs and the ledger say (and that it
fails when they do not), what counts as landed, and the README's copy of a recorded run."""

from __future__ import annotations

import json
import sys

import pytest

from sandbox.env import REPO

sys.path.insert(0, str(REPO / "scripts"))

from demo_report import (
    SANDBOX_OF,
    check_landed,
    counts,
    landed,
    render,
    sent_per_entity,
    transcript,
)
from readme_demo import README, RECORDED, block, readme_block

RECORDED_RESULT = json.loads(RECORDED.read_text())


def test_the_check_passes_when_reports_ledger_and_sandbox_agree():
    three = {"voucherify": {"customers": 333, "orders": 647}}
    assert check_landed(three, three, three) == []


@pytest.mark.parametrize("which", ["reports", "ledger", "sandbox"])
def test_the_check_names_every_disagreement(which):
    """Any one of the three sources off by one record (or missing one) is a mismatch naming all three."""
    sources = ("reports", "ledger", "sandbox")
    agreed = {"voucherify": {"customers": 333, "orders": 647}, "salesfire": {"customers": 336}}
    three = {source: json.loads(json.dumps(agreed)) for source in sources}
    three[which]["voucherify"]["orders"] = 646
    del three[which]["salesfire"]["customers"]  # a missing count is 0
    orders = [646 if source == which else 647 for source in sources]
    customers = [0 if source == which else 336 for source in sources]
    assert check_landed(*three.values()) == [
        f"salesfire customers: the runs report {customers[0]} sent, the ledger records {customers[1]} "
        f"delivered, the salesfire sandbox holds {customers[2]}",
        f"voucherify orders: the runs report {orders[0]} sent, the ledger records {orders[1]} delivered, "
        f"the voucherify sandbox holds {orders[2]}",
    ]


def test_a_mismatch_is_printed_and_the_report_does_not_claim_agreement():
    result = json.loads(json.dumps(RECORDED_RESULT))
    result["mismatches"] = ["voucherify orders: the runs report 647 sent, ..."]
    text = render(result)
    assert "MISMATCH" in text and "voucherify orders: the runs report 647 sent" in text
    assert "= what the runs report sent" not in text


def test_landed_leaves_out_what_orders_and_events_created_and_refused_files():
    voucherify = {"customers": {"a": {}, "b": {}, "c": {}}, "products": {"p": {}}, "orders": {"o": {}}}
    assert landed("voucherify", voucherify, {"customers_upserted": 2}) == {
        "customers": 2,
        "products": 1,
        "orders": 1,
    }
    datatalks = {
        "contacts": {"a@x.io": {"_posts": 1}, "b@x.io": {"_posts": 0, "_from_event": True}},
        "products": {"p": {}},
        "events": [{"externalId": "1"}, {"externalId": "2"}],
    }
    assert landed("salesmanago", datatalks) == {"products": 1, "events": 2, "contacts": 1}
    connectif = {"contacts": {"a": {}}, "products": {}, "purchases": {"x": {}}, "coupons": {"s": ["A", "B"]}}
    assert landed("connectif", connectif) == {"contacts": 1, "products": 0, "purchases": 1, "coupons": 2}
    files = {"a.csv": {"status": "imported", "rows": 5}, "b.csv": {"status": "refused", "rows": 3}}
    assert landed("splio_referral", files) == {"referral_contacts": 5}


def test_the_recorded_run_covers_the_five_destinations_and_agrees_with_itself():
    runs = RECORDED_RESULT["runs"]
    assert {run["destination"] for run in runs} == set(SANDBOX_OF)
    assert all(run["state"] == "success" for run in runs)
    sent = sent_per_entity(runs)
    assert check_landed(sent, RECORDED_RESULT["ledger"], RECORDED_RESULT["landed"]) == []
    assert RECORDED_RESULT["mismatches"] == []
    assert counts(RECORDED_RESULT)["landed"] == RECORDED_RESULT["landed"]


def test_the_readme_block_is_what_the_recorded_run_renders_to():
    """Regenerate with `python scripts/readme_demo.py` (a fresh run) when the demo's output changes."""
    assert readme_block(README.read_text()) == block(RECORDED_RESULT)
    text = transcript(RECORDED_RESULT)
    for destination in SANDBOX_OF:
        assert f"\n{destination} " in text  # a table row per destination
