"""Reading SALESmanago contacts back through Data Talks for reconcile (``GET /v1/contact_by_email``, signed,
one per contact), against the sandbox over real HTTP; events cannot be read back and say so."""

from __future__ import annotations

import pytest

from reverse_etl.ledger import Ledger, record_history
from reverse_etl.operators.salesmanago import SalesmanagoContactsOperator, SalesmanagoEventsOperator
from reverse_etl.reconcile import CannotReadBack, reconcile
from sandbox.datatalks import DataTalksSandbox
from tests.contract.test_datatalks import wire


@pytest.fixture
def sandbox():
    with DataTalksSandbox(port=0, limit=1000, window_seconds=1.0) as sb:
        yield sb


def test_contacts_held_stale_and_missing_by_email_lookup(monkeypatch, tmp_path, sandbox, state_store):
    hook = wire(monkeypatch, tmp_path, sandbox)
    hook.upsert_contact({"email": "ann@example.com", "name": "Ann Lee", "city": "Lyon"})
    hook.upsert_contact({"email": "bob@example.com", "name": "Bob Old"})
    rows = [
        {"_key": "ann@example.com", "_deleted": False, "email": "ann@example.com", "name": "Ann Lee", "city": "Lyon"},
        {"_key": "bob@example.com", "_deleted": False, "email": "bob@example.com", "name": "Bob New"},
        {"_key": "cy@example.com", "_deleted": False, "email": "cy@example.com", "name": "Cy"},
    ]  # fmt: skip
    url = f"sqlite:///{state_store}"
    operator = SalesmanagoContactsOperator(task_id="t", manifest=None)
    before = len(sandbox.requests)
    report = reconcile(
        operator, hook, Ledger("salesmanago", "contacts", "r1", url), lambda: [rows], {"params": {}}
    )
    assert (report.checked, report.held, report.stale, report.missing) == (3, 1, 1, 1)
    lookups = sandbox.requests[before:]
    assert [(r["method"], r["path"]) for r in lookups] == [("GET", "/v1/contact_by_email")] * 3
    assert report.requests == 3
    history = record_history("salesmanago", "contacts", "ann@example.com", url=url)
    assert history["current"]["status"] == "delivered"
    assert history["events"][-1]["detail"] == "reconciled: SALESmanago holds it"
    assert record_history("salesmanago", "contacts", "bob@example.com", url=url)["current"] is None

    # Again: the ledger now knows Ann, so only Bob and Cy are looked up.
    before = len(sandbox.requests)
    again = reconcile(
        operator, hook, Ledger("salesmanago", "contacts", "r2", url), lambda: [rows], {"params": {}}
    )
    assert (again.already, again.held, again.checked) == (1, 0, 2)
    assert [r["query"]["email"] for r in sandbox.requests[before:]] == ["bob@example.com", "cy@example.com"]


def test_events_cannot_be_read_back_and_nothing_is_asked(monkeypatch, tmp_path, sandbox, state_store):
    hook = wire(monkeypatch, tmp_path, sandbox)
    operator = SalesmanagoEventsOperator(task_id="t", manifest=None)
    ledger = Ledger("salesmanago", "events", "r1", f"sqlite:///{state_store}")
    with pytest.raises(CannotReadBack, match=r"external events back.*dry_run"):
        reconcile(operator, hook, ledger, lambda: [[{"_key": "e1", "_deleted": False}]], {"params": {}})
    assert not sandbox.requests
