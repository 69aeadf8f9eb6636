"""Hard deletes in the warehouse (erasures) through Airflow: Voucherify customers and SALESmanago contacts
that we delivered and that are gone from the source are deleted once; too many at once are refused."""

from __future__ import annotations

import shutil
from collections import Counter

import duckdb
import pytest

from reverse_etl.ledger import record_history
from sandbox.datatalks import DataTalksSandbox
from sandbox.env import conn_json
from tests.e2e.harness import LIMIT, WINDOW_SECONDS, Harness, run_env

pytestmark = pytest.mark.e2e
CUSTOMERS = {"entities": ["customers"]}


@pytest.fixture
def warehouse_copy(warehouse, tmp_path):
    path = tmp_path / "warehouse.duckdb"
    shutil.copy(warehouse, path)
    return path


def hard_delete(path, where: str, params: list) -> None:
    """What a GDPR erasure often is: the row is gone, no deleted_at left for a delta to see."""
    con = duckdb.connect(str(path))
    con.execute(f"DELETE FROM customers WHERE {where}", params)
    con.close()


def deletes(harness: Harness) -> list[dict]:
    """Successful DELETE requests, whatever the path (the Data Talks delete URL is configurable)."""
    return [r for r in harness.sandbox.requests if r["method"] == "DELETE" and (r["status"] or 999) < 300]


def test_voucherify_customers_erased_in_the_warehouse_are_deleted_once(harness, warehouse_copy):
    harness.env["AIRFLOW_CONN_RETL_WAREHOUSE"] = conn_json("duckdb", host=str(warehouse_copy))
    first = harness.run(CUSTOMERS)["reports"]["customers"]
    delivered = sorted(harness.sandbox.store["customers"], key=int)
    assert first["sent"] == len(delivered) > 100 and first["erased"] == 0
    assert first["erasures"]["delivered"] == len(delivered)

    # Three of ours and two customers we never sent (outside the window) are erased outright.
    ours = delivered[:3]
    con = duckdb.connect(str(warehouse_copy), read_only=True)
    strangers = [
        str(k)
        for (k,) in con.execute(
            "SELECT customer_id FROM customers WHERE updated_at < TIMESTAMP '2026-10-20' ORDER BY customer_id "
            "LIMIT 2"
        ).fetchall()
    ]
    con.close()
    assert not set(strangers) & set(delivered)
    hard_delete(
        warehouse_copy, "CAST(customer_id AS VARCHAR) IN (SELECT unnest(?::VARCHAR[]))", [ours + strangers]
    )

    second = harness.run(CUSTOMERS)["reports"]["customers"]
    deleted = Counter(r["path"].rsplit("/", 1)[-1] for r in deletes(harness))
    assert sorted(deleted) == sorted(ours) and max(deleted.values()) == 1
    assert all(r["path"].startswith("/v1/customers/") for r in deletes(harness))
    assert not set(ours) & set(harness.sandbox.store["customers"])
    assert set(harness.sandbox.store["customers"]) == set(delivered) - set(ours)
    assert second["erased"] == second["deleted"] == 3 and second["sent"] == 0
    for key in ours:
        current = record_history("voucherify", "customers", key, url=harness.state_url)["current"]
        assert current["status"] == "deleted" and "gone from the source" in current["error"]

    # A rerun deletes nothing more: the ledger knows they are gone.
    third = harness.run(CUSTOMERS)["reports"]["customers"]
    assert third["erased"] == third["deleted"] == 0 and len(deletes(harness)) == 3

    # Over the limit: refused with the numbers and the param to raise, nothing deleted.
    remaining = sorted(harness.sandbox.store["customers"], key=int)
    mass = remaining[: len(remaining) // 10 + 1]  # just over 10%
    hard_delete(warehouse_copy, "CAST(customer_id AS VARCHAR) IN (SELECT unnest(?::VARCHAR[]))", [mass])
    refused = harness.run(CUSTOMERS, expect_success=False)
    report = refused["reports"]["customers"]
    assert refused["state"] == "failed" and report["status"] == "failed"
    assert f"{len(mass)} of {len(remaining)} delivered records" in report["error"]
    assert (
        "max_erasure_share" in report["error"] and min(mass) in report["error"]
    )  # a few keys, in text order
    assert "max_erasure_share" in refused["log"].read_text()
    assert "**Failed:** customers.load: see its log." in refused["note"]
    assert len(deletes(harness)) == 3 and set(mass) <= set(harness.sandbox.store["customers"])

    # The dry run says what a raised limit would do, and does none of it.
    dry = harness.run({**CUSTOMERS, "dry_run": True, "max_erasure_share": 0.2})["reports"]["customers"]
    assert dry["erased"] == len(mass) and dry["deleted"] == 0 and len(deletes(harness)) == 3
    assert record_history("voucherify", "customers", mass[0], url=harness.state_url)["current"]["status"] == (
        "delivered"
    )

    # A person raises the limit for one run: exactly those customers go, once.
    raised = harness.run({**CUSTOMERS, "max_erasure_share": 0.2})["reports"]["customers"]
    assert raised["erased"] == raised["deleted"] == len(mass)
    deleted = Counter(r["path"].rsplit("/", 1)[-1] for r in deletes(harness))
    assert sorted(deleted) == sorted(ours + mass) and max(deleted.values()) == 1


@pytest.fixture
def salesmanago(airflow_db, warehouse_copy, tmp_path):
    with DataTalksSandbox(port=0, limit=LIMIT, window_seconds=WINDOW_SECONDS) as sandbox:
        env = run_env(tmp_path, warehouse_copy, salesmanago_url=sandbox.url)
        yield Harness(sandbox, env, tmp_path, dag_id="salesmanago_sync")


def test_salesmanago_contacts_erased_in_the_warehouse_are_deleted_once(salesmanago, warehouse_copy):
    contacts = {"entities": ["contacts"]}
    window = ("2026-10-31", "2026-11-01")
    first = salesmanago.run(contacts, window=window)["reports"]["contacts"]
    ours = sorted(c for c, v in salesmanago.sandbox.store["contacts"].items() if not v.get("_from_event"))
    assert first["sent"] == len(ours) > 30 and first["erased"] == 0
    erased = ours[:2]
    hard_delete(warehouse_copy, "lower(email) IN (SELECT unnest(?::VARCHAR[]))", [erased])

    second = salesmanago.run(contacts, window=window)["reports"]["contacts"]
    emails = Counter(r["body"]["data"]["email"] for r in deletes(salesmanago))
    assert sorted(emails) == erased and max(emails.values()) == 1
    assert not set(erased) & set(salesmanago.sandbox.store["contacts"])
    assert second["erased"] == second["deleted"] == 2
    current = record_history("salesmanago", "contacts", erased[0], url=salesmanago.state_url)["current"]
    assert current["status"] == "deleted" and "gone from the source" in current["error"]

    third = salesmanago.run(contacts, window=window)["reports"]["contacts"]
    assert third["erased"] == 0 and len(deletes(salesmanago)) == 2

    # A truncated source must never empty the vendor.
    con = duckdb.connect(str(warehouse_copy))
    con.execute("DELETE FROM customers")
    con.close()
    refused = salesmanago.run(contacts, window=window, expect_success=False)
    assert "returned no keys at all" in refused["reports"]["contacts"]["error"]
    assert len(deletes(salesmanago)) == 2


@pytest.mark.postgres
def test_voucherify_erasures_with_postgresql_warehouse_and_state_store(harness, warehouse, postgres_database):
    """Source keys through a server-side cursor, delivered keys paged from the PostgreSQL ledger."""
    import psycopg2

    from sandbox.warehouse import load_postgres

    load_postgres(warehouse, postgres_database)
    harness.use_postgres(postgres_database)
    harness.env["RETL_CHUNK_ROWS"] = "97"  # several chunks of keys on both sides
    first = harness.run(CUSTOMERS)["reports"]["customers"]
    delivered = sorted(harness.sandbox.store["customers"], key=int)
    assert first["sent"] == len(delivered) > 100 and first["erasures"]["delivered"] == len(delivered)
    erased = delivered[-3:]
    with psycopg2.connect(postgres_database) as pg, pg.cursor() as cur:
        cur.execute("DELETE FROM customers WHERE CAST(customer_id AS TEXT) = ANY(%s)", (erased,))
    second = harness.run(CUSTOMERS)["reports"]["customers"]
    deleted = Counter(r["path"].rsplit("/", 1)[-1] for r in deletes(harness))
    assert sorted(deleted) == sorted(erased) and max(deleted.values()) == 1
    assert second["erased"] == second["deleted"] == 3
    assert harness.run(CUSTOMERS)["reports"]["customers"]["deleted"] == 0 and len(deletes(harness)) == 3
