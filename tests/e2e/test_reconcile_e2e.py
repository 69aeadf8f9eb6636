"""Recovering a lost state store with reconcile, through real Airflow runs against the sandboxes.

Each test: a live run of a window; the state store is deleted and a new one made; one record changes in
(a copy of) the warehouse; reconcile reads the vendor back (the CLI for Voucherify, the DAG param for
Connectif); the next run writes only the changed record, and the ledger says the others were reconciled.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import duckdb
import pytest

from reverse_etl.ledger import record_history
from sandbox.connectif import ConnectifSandbox
from sandbox.voucherify import VoucherifySandbox
from tests.e2e.harness import LIMIT, WINDOW, WINDOW_SECONDS, Harness, init_store, local, run_env

pytestmark = pytest.mark.e2e
RECONCILED = "reconciled: {} holds it"


@pytest.fixture
def warehouse_copy(warehouse, tmp_path) -> Path:
    """This test's own warehouse: the test changes a record in it."""
    path = tmp_path / "warehouse.duckdb"
    shutil.copy(warehouse, path)
    return path


def lose_and_renew_state_store(harness: Harness) -> None:
    """The state store is gone; the operator makes a new, empty one (``reverse_etl.cli init``)."""
    path = Path(harness.state_url.removeprefix("sqlite:///"))
    for leftover in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        leftover.unlink(missing_ok=True)
    init_store(harness.state_url)
    assert record_count(harness.state_url) == 0


def record_count(url: str) -> int:
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return conn.execute(text("SELECT COUNT(*) FROM sync_ledger")).scalar_one()
    finally:
        engine.dispose()


def change(warehouse: Path, sql: str, *args) -> None:
    con = duckdb.connect(str(warehouse))
    try:
        assert con.execute(sql + " RETURNING 1", list(args)).fetchall() == [(1,)]
    finally:
        con.close()


def writes(sandbox, since: int) -> list[dict]:
    return [r for r in sandbox.requests[since:] if r["method"] in ("POST", "PUT", "PATCH", "DELETE")]


def reconcile_cli(
    harness: Harness, destination: str, entity: str, *extra: str
) -> subprocess.CompletedProcess:
    state = harness.state_url.removeprefix("sqlite:///")
    command = [sys.executable, "-m", "reverse_etl.cli", "--state", state, "reconcile", destination, entity]
    command += ["--window-start", WINDOW[0], "--window-end", WINDOW[1], *extra]
    return subprocess.run(command, env=harness.env, capture_output=True, text=True, timeout=600)


@pytest.fixture
def voucherify(airflow_db, warehouse_copy, tmp_path):
    with VoucherifySandbox(port=0, limit=LIMIT, window_seconds=WINDOW_SECONDS, async_delay=0.02) as sandbox:
        yield Harness(sandbox, run_env(tmp_path, warehouse_copy, voucherify_url=sandbox.url), tmp_path)


def test_voucherify_cli_reconcile_after_a_lost_store_resends_only_the_changed_records(
    voucherify, warehouse_copy
):
    conf = {"entities": ["customers", "orders"]}
    first = voucherify.run(conf)["reports"]
    assert first["customers"]["sent"] > 100 and first["orders"]["sent"] > 100
    assert first["customers"]["failed"] == first["orders"]["failed"] == 0
    store = voucherify.sandbox.store
    bulk_sent = {
        i["source_id"] for r in voucherify.sent("POST", "/v1/customers/bulk/async") for i in r["body"]
    }
    customer = sorted(bulk_sent)[0]
    posted = {r["body"]["source_id"] for r in voucherify.sent("POST", "/v1/orders")}
    order = sorted(k for k in posted if store["orders"][k]["status"] != "FULFILLED")[0]

    lose_and_renew_state_store(voucherify)
    change(
        warehouse_copy, "UPDATE customers SET first_name = 'Reconciled' WHERE customer_id = ?", int(customer)
    )
    change(warehouse_copy, "UPDATE orders SET status = 'FULFILLED' WHERE order_id = ?", order)

    # A dry run compares and writes nothing.
    dry = reconcile_cli(voucherify, "voucherify", "customers", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "1 stale" in dry.stdout and record_count(voucherify.state_url) == 0
    before = len(voucherify.sandbox.requests)
    for entity in ("customers", "orders"):
        done = reconcile_cli(voucherify, "voucherify", entity)
        assert done.returncode == 0, done.stderr
        held = first[entity]["sent"] - 1
        assert f"{held} held" in done.stdout and "1 stale and 0 missing" in done.stdout, done.stdout
    assert not writes(voucherify.sandbox, before), "reconcile wrote to Voucherify"
    reads = len(voucherify.sandbox.requests) - before
    assert reads < first["customers"]["sent"] / 10  # listed 100 a page, not fetched one by one

    before = len(voucherify.sandbox.requests)
    again = voucherify.run(conf)["reports"]
    sent = writes(voucherify.sandbox, before)
    bulk = [item["source_id"] for r in sent if r["path"] == "/v1/customers/bulk/async" for item in r["body"]]
    posted = [r["body"]["source_id"] for r in sent if r["path"] == "/v1/orders"]
    assert bulk == [customer] and posted == [order]
    assert len(sent) == 2, Counter(r["path"] for r in sent)
    assert voucherify.sandbox.store["customers"][customer]["name"].startswith("Reconciled")
    assert voucherify.sandbox.store["orders"][order]["status"] == "FULFILLED"
    assert again["customers"]["unchanged_skipped"] == first["customers"]["sent"] - 1

    other = sorted(bulk_sent - {customer})[0]
    history = record_history("voucherify", "customers", other, url=voucherify.state_url)
    assert history["current"]["status"] == "delivered"
    assert [e["detail"] for e in history["events"]] == [RECONCILED.format("Voucherify")]


@pytest.fixture
def connectif(airflow_db, warehouse_copy, tmp_path):
    with ConnectifSandbox(port=0, limit=LIMIT, window_seconds=WINDOW_SECONDS, async_delay=0.02) as sandbox:
        yield Harness(
            sandbox, run_env(tmp_path, warehouse_copy, connectif_url=sandbox.url), tmp_path, "connectif_sync"
        )


def test_connectif_reconcile_param_after_a_lost_store_resends_only_the_changed_contact(
    connectif, warehouse_copy
):
    first = connectif.run({"entities": ["contacts"]})["reports"]["contacts"]
    assert first["sent"] > 100 and first["failed"] == 0
    email = sorted(connectif.sandbox.store["contacts"])[0]

    lose_and_renew_state_store(connectif)
    change(warehouse_copy, "UPDATE customers SET first_name = 'Reconciled' WHERE LOWER(email) = ?", email)

    # A dry run with reconcile previews only the changed contact and records nothing.
    dry = connectif.run({"entities": ["contacts"], "reconcile": True, "dry_run": True})["reports"]["contacts"]
    assert dry["reconciled"]["held"] == first["sent"] - 1 and dry["to_send"] == 1
    with open(local(dry["dry_run_payloads"]), encoding="utf-8") as preview:
        assert [json.loads(line)["key"] for line in preview] == [email]
    assert record_count(connectif.state_url) == 0

    # One run: contacts reconcile (one export) and send the changed one; purchases cannot be read back, so
    # their load refuses before sending anything, and says what to do.
    before = len(connectif.sandbox.requests)
    run = connectif.run({"entities": ["contacts", "purchases"], "reconcile": True}, expect_success=False)
    contacts, purchases = run["reports"]["contacts"], run["reports"]["purchases"]
    assert contacts["status"] == "success"
    assert contacts["reconciled"]["held"] == first["sent"] - 1
    assert (contacts["reconciled"]["stale"], contacts["reconciled"]["missing"]) == (1, 0)
    assert contacts["sent"] == 1 and contacts["unchanged_skipped"] == first["sent"] - 1
    sent = writes(connectif.sandbox, before)
    patched = [r["path"] for r in sent if r["method"] == "PATCH"]
    assert patched == [f"/contacts/{email}"]
    assert [r["path"] for r in sent if r["method"] == "POST"] == ["/exports/"], "only the export was posted"
    assert purchases["status"] == "failed" and "cannot be reconciled" in purchases["error"]
    assert "dry_run" in purchases["error"] and run["tasks"]["purchases.load"] == "failed"
    assert connectif.sandbox.store["contacts"][email]["_name"] == "Reconciled"

    other = sorted(connectif.sandbox.store["contacts"])[1]
    history = record_history("connectif", "contacts", other, url=connectif.state_url)
    assert history["current"]["status"] == "delivered"
    assert [e["detail"] for e in history["events"]] == [RECONCILED.format("Connectif")]

    before = len(connectif.sandbox.requests)
    again = connectif.run({"entities": ["contacts"]})["reports"]["contacts"]
    assert again["sent"] == 0 and not writes(connectif.sandbox, before)
