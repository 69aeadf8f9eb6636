"""The Connectif hook and load adapter against the sandbox: auth, reset-based pacing, imports whose
per-row errors become per-record outcomes, and purchase refusals with the vendor's code."""

from __future__ import annotations

import json
import time

import pytest

from reverse_etl.errors import VendorAuthError
from reverse_etl.hooks.connectif import ConnectifHook
from reverse_etl.ledger import DELIVERED, FAILED, UPSERT, Ledger, Planned
from reverse_etl.operators.connectif import ConnectifContactsOperator, ConnectifPurchasesOperator
from sandbox.connectif import ConnectifSandbox
from sandbox.env import CONNECTIF_KEY_ID, CONNECTIF_KEY_SECRET, conn_json

CONN = "connectif_contract"


@pytest.fixture
def sandbox():
    with ConnectifSandbox(port=0, limit=1000, window_seconds=1, async_delay=0.01) as sb:
        yield sb


@pytest.fixture
def connect(monkeypatch, state_store, sandbox):
    def make(secret: str = CONNECTIF_KEY_SECRET, **extra) -> ConnectifHook:
        extra = {
            "requests_per_minute": 60_000,
            "rate_window_seconds": 1,
            "import_poll_seconds": 0.02,
            **extra,
        }
        monkeypatch.setenv(
            f"AIRFLOW_CONN_{CONN.upper()}",
            conn_json("http", host=sandbox.url, login=CONNECTIF_KEY_ID, password=secret, extra=extra),
        )
        return ConnectifHook(CONN)

    return make


def sent(op, hook, ledger, batch: list) -> dict:
    """The load's own send, then each job it started collected: record key -> outcome."""
    outcomes, started = op._send(hook, ledger, batch, {"params": {}})
    for ref, records in started:
        outcomes += op.collect(hook, ref, records)
    return {o.key: o for o in outcomes}


def test_wrong_secret_is_an_auth_error(connect):
    with pytest.raises(VendorAuthError, match=CONN):
        connect(secret="nope").patch_contact("a@example.com", {"_name": "A"})


def test_no_retry_after_so_the_hook_waits_for_the_reset(connect, sandbox):
    sandbox.reset(limit=3, window_seconds=1)
    hook = connect(max_transient_retries=0)  # an over-generous client: only the vendor's headers pace it
    started = time.monotonic()
    for i in range(7):
        hook.patch_contact(f"c{i}@example.com", {"_name": f"C{i}"})
    assert time.monotonic() - started >= 1.0
    assert sandbox.stats()["throttled_by_limiter"] == 0 and len(sandbox.store["contacts"]) == 7


def test_import_row_errors_become_per_record_failures(connect, sandbox, state_store):
    hook = connect()
    op = ConnectifContactsOperator(task_id="load", manifest=None)
    contacts = {f"c{i}@example.com": {"_name": f"C{i}", "_mobilePhone": "+48600100200"} for i in range(6)}
    contacts["c3@example.com"]["_mobilePhone"] = "0048 600"  # not international: Connectif refuses the row
    batch = [Planned(email, UPSERT, "h", json.dumps(body)) for email, body in contacts.items()]
    ledger = Ledger("connectif", "contacts", "run")
    ledger.plan(batch)
    outcomes = sent(op, hook, ledger, batch)
    assert outcomes["c3@example.com"].status == FAILED and "_mobilePhone" in outcomes["c3@example.com"].error
    assert {k for k, o in outcomes.items() if o.status == DELIVERED} == set(contacts) - {"c3@example.com"}
    assert set(sandbox.store["contacts"]) == set(contacts) - {"c3@example.com"}
    assert [r for r in sandbox.requests if r["path"].startswith("/imports")]


def test_purchase_before_its_contact_is_refused_with_the_code(connect, state_store):
    hook = connect()
    op = ConnectifPurchasesOperator(task_id="load", manifest=None)
    purchase = {
        "purchaseId": "p1",
        "cartId": "p1",
        "contactEmail": "nobody@example.com",
        "purchaseDate": "2026-10-30T10:00:00Z",
        "totalPrice": 10.0,
        "totalQuantity": 1,
        "products": [{"productId": "P1", "name": "x", "unitPrice": 10.0, "quantity": 1, "price": 10.0}],
    }
    [outcome] = op.send_upserts(hook, [Planned("p1", UPSERT, "h", json.dumps(purchase))], {"params": {}})
    assert outcome.status == FAILED and "E0101" in outcome.error
