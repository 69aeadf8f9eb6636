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

pytestmark = pytest.mark.serial  # clock-checked pacing: run alone (make test's second call)

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


def test_import_files_are_cut_on_their_csv_bytes_at_the_cap_and_one_byte_over_is_413(
    connect, sandbox, state_store, monkeypatch
):
    from reverse_etl.batching import Batcher, CsvSize
    from reverse_etl.errors import VendorRejected

    cap = 4_000
    sandbox.configure(max_import_bytes=cap)  # Connectif's 50 MB, scaled down
    hook = connect(bulk_threshold=10, max_jobs_in_flight=3)
    # At the cap to the byte, the sandbox takes the file; one byte more is Connectif's 413.
    head = b"_email;_name\na@example.com;"
    exact = head + b"x" * (cap - len(head) - 1) + b"\n"
    assert len(exact) == cap and hook.create_import("contacts", exact)["id"]
    with pytest.raises(VendorRejected) as refused:
        hook.create_import("contacts", exact + b"y")
    assert refused.value.status == 413

    op = ConnectifContactsOperator(task_id="load", manifest=None, vendor_conn_id=CONN)
    monkeypatch.setattr(ConnectifContactsOperator, "max_batch_bytes", cap)
    batch = [
        Planned(f"c{i:04d}@example.com", UPSERT, "h", json.dumps({"_name": f"Zoë {i}", "_points": i}))
        for i in range(400)
    ]
    files: list[int] = []
    create = hook.create_import
    monkeypatch.setattr(
        hook, "create_import", lambda kind, data, **kw: files.append(len(data)) or create(kind, data, **kw)
    )
    ledger = Ledger("connectif", "contacts", "run")
    ledger.plan(batch)
    counts = {"to_send": 400, "to_delete": 0, "sent": 0, "deleted": 0, "failed": 0}
    op._deliver(hook, ledger, counts, {"params": {}})
    batcher = Batcher(None, cap, lambda: CsvSize(op.csv_cells, hook.delimiter))
    expected = sum(1 for r in batch if batcher.add(r)) + len(list(batcher.rest()))
    assert len(files) == expected > 3 and max(files) <= cap and min(files[:-1]) > cap * 0.9
    assert counts["sent"] == 400 and len(sandbox.store["contacts"]) == 401  # and a@example.com
    imports = [r for r in sandbox.requests if r["method"] == "POST" and r["path"].startswith("/imports")]
    assert [r["status"] for r in imports] == [201, 413] + [201] * expected
