"""voucherify_sync through Airflow against the sample warehouse and the Voucherify sandbox."""

from __future__ import annotations

import datetime as dt
import json
import re
from collections import Counter

import duckdb
import pytest

from reverse_etl.ledger import record_history
from reverse_etl.staging import _safe
from tests.e2e.harness import Expected, local, note_table

pytestmark = pytest.mark.e2e

EMAIL = re.compile(r"^[A-Za-z0-9._%+'-]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}$")
PHONE = re.compile(r"^\+[1-9][0-9]{6,14}$")
CONSENTS = {"GRANTED", "DENIED", "UNKNOWN"}
REJECTING_DEFECTS = {
    "invalid_email",
    "lowercase_enum",
    "overlong_field",
    "blank_email",
    "implausible_birthdate",
    "overlong_address",
}
WINDOW_END_DATE = dt.date(2026, 11, 1)  # the harness window's end


def customer_problems(c: dict) -> list[str]:
    """The documented rules, restated from the warehouse side, independently of the engine."""
    problems = []
    name = " ".join(p for p in (c["first_name"], c["last_name"]) if p)
    if c["email"] is not None and not EMAIL.match(c["email"]):
        problems.append("email")
    if c["phone"] is not None and not PHONE.match(c["phone"]):
        problems.append("phone")
    texts = ("address_line1", "address_line2", "city", "region", "postal_code")
    if len(name) > 255 or any(len(c[col] or "") > 255 for col in texts):
        problems.append("length")
    if c["birth_date"] is not None and not dt.date(1900, 1, 1) <= c["birth_date"] <= WINDOW_END_DATE:
        problems.append("birthdate")
    if c["country_code"] is not None and not re.match(r"^[A-Z]{2}$", c["country_code"]):
        problems.append("country")
    for col in (
        "email_marketing_consent",
        "email_transactional_consent",
        "sms_marketing_consent",
        "sms_transactional_consent",
    ):
        if c[col] is not None and c[col] not in CONSENTS:
            problems.append(col)
    return problems


def quarantined(report: dict) -> dict[str, dict]:
    """The quarantine file's lines by record key, wherever it is staged (a folder or a bucket)."""
    from reverse_etl.staging import as_path

    with as_path(report["quarantine"]).open("r", encoding="utf-8") as handle:
        return {str(line["record_key"]): line for line in map(json.loads, handle)}


def check_the_note_as_the_scheduler_writes_it(run_id: str, note: str) -> None:
    """The listener on a run attached to a session (the scheduler's case; dag.test() hands it a detached
    one) writes the same note, and leaves a note someone wrote by hand alone."""
    from airflow.models import DagRun
    from airflow.utils.session import create_session
    from sqlalchemy import select

    from reverse_etl.run_notes import write_note

    this_run = select(DagRun).where(DagRun.dag_id == "voucherify_sync", DagRun.run_id == run_id)

    def rewrite(start_with: str | None) -> str | None:
        with create_session() as session:
            session.scalar(this_run).note = start_with
        with create_session() as session:
            write_note(session.scalar(this_run))
        with create_session() as session:
            return session.scalar(this_run).note

    assert rewrite(None) == note
    assert rewrite("Checked with the CRM team.") == "Checked with the CRM team."
    assert rewrite(note) == note


def check_first_and_second_run(harness, expected: Expected) -> None:
    """Exactly once with the right fields, quarantine with reasons, then a rerun that sends nothing."""
    customers = expected.customers()
    live = {k: c for k, c in customers.items() if c["deleted_at"] is None}
    bad = {k for k, c in live.items() if customer_problems(c)}
    good = set(live) - bad
    assert len(good) > 100 and bad, "the sample window should hold valid and invalid customers"

    first = harness.run()
    report = first["reports"]["customers"]

    # Every valid customer arrived exactly once, with the right fields.
    store = harness.sandbox.store["customers"]
    sent_ids = Counter(
        item["source_id"] for r in harness.sent("POST", "/v1/customers/bulk/async") for item in r["body"]
    )
    assert set(sent_ids) == good
    assert max(sent_ids.values()) == 1
    assert good <= set(store)
    for key in sorted(good)[:25]:
        c, stored = live[key], store[key]
        assert stored.get("email") == c["email"]
        assert stored["name"] == " ".join(p for p in (c["first_name"], c["last_name"]) if p)
        assert (stored.get("address") or {}).get("city") == c["city"]
        assert stored["metadata"]["email_marketing_consent"] == c["email_marketing_consent"]
    assert report["sent"] == len(good) and report["failed"] == 0

    # Every invalid one is quarantined with its reason, and in the ledger as rejected.
    q = quarantined(report)
    assert bad <= set(q)
    for key in bad:
        assert q[key]["reason"] and q[key]["failures"][0]["rule"]
        assert (
            record_history("voucherify", "customers", key, url=harness.state_url)["current"]["status"]
            == "rejected"
        )
    defects = expected.defects("customers")
    injected_bad = {k for k in live if defects.get(k, set()) & REJECTING_DEFECTS}
    assert injected_bad and injected_bad <= set(q)

    # Orders: each valid one once, through POST /v1/orders.
    order_posts = Counter(r["body"]["source_id"] for r in harness.sent("POST", "/v1/orders"))
    orders_report = first["reports"]["orders"]
    assert orders_report["sent"] == len(order_posts) > 100
    assert max(order_posts.values()) == 1
    assert set(order_posts) <= set(harness.sandbox.store["orders"])
    assert orders_report["rejected"] >= 1  # lowercase statuses
    future = {k for k, kinds in expected.defects("orders").items() if "future_order_date" in kinds}
    in_window = {
        k
        for (k,) in expected.rows(
            "SELECT order_id FROM orders WHERE updated_at >= ?::TIMESTAMP AND updated_at < ?::TIMESTAMP "
            "AND deleted_at IS NULL"
        )
    }
    assert not future & set(order_posts), "an order dated after the window end was sent"
    q_orders = quarantined(orders_report)
    for key in future & in_window:
        rules = {f["rule"] for f in q_orders[key]["failures"]}
        assert "order date (ordered_at) not after the window end" in rules
    for body in (r["body"] for r in harness.sent("POST", "/v1/orders")):
        assert body["metadata"]["ordered_at"] == body["created_at"]  # live orders carry both

    # The DAG run's note (the grid's note box) holds the report's numbers and the quarantine files.
    table = note_table(first["note"])
    assert first["note"].startswith("**Run report:** sent ") and len(first["note"]) <= 1000
    for entity, r in first["reports"].items():
        deleted = r["deleted"] + r["erased"]
        cols = ("extracted", "valid", "rejected", "sent", "failed", "requests", "throttled", "seconds")
        assert table[entity] == {**{c: str(r[c]) for c in cols}, "deleted": str(deleted)}
    assert report["quarantine"] in first["note"] and orders_report["quarantine"] in first["note"]
    assert "Failed" not in first["note"]
    check_the_note_as_the_scheduler_writes_it(first["run_id"], first["note"])

    # A second run of the same window sends nothing.
    before = len(harness.sandbox.requests)
    second = harness.run()
    assert len(harness.sandbox.requests) == before
    for entity in ("customers", "products", "orders"):
        assert second["reports"][entity]["sent"] == 0
    assert second["reports"]["customers"]["unchanged_skipped"] == len(good)


def test_exactly_once_quarantine_and_rerun(harness, warehouse, state_store):
    check_first_and_second_run(harness, Expected(warehouse))


def test_same_guarantees_with_staging_on_s3(harness, warehouse, state_store, s3_endpoint, s3_staging):
    """RETL_STAGING_URL on an S3-compatible bucket: every task reads the files it is handed by URL."""
    from tests.unit.test_staging_s3 import _objects

    harness.env.update(s3_staging)  # the runs' tasks and this process (which reads the quarantine) alike
    check_first_and_second_run(harness, Expected(warehouse))
    prefix = s3_staging["RETL_STAGING_URL"].split("@retl-staging/", 1)[1]
    staged = _objects(s3_endpoint, f"{prefix}/voucherify_sync/")
    run_dir = _safe(harness.runs[0]["run_id"])
    for entity in ("customers", "orders"):
        assert f"{run_dir}/{entity}/extract.parquet" in staged
        assert f"{run_dir}/{entity}/quarantine.jsonl" in staged
    assert harness.runs[0]["reports"]["customers"]["quarantine"].startswith("s3://retl_staging@retl-staging/")
    assert not (harness.tmp / "staging").exists()


@pytest.mark.postgres
def test_same_guarantees_with_postgresql_warehouse_and_state_store(harness, warehouse, postgres_database):
    from sandbox.warehouse import load_postgres

    load_postgres(warehouse, postgres_database)
    harness.use_postgres(postgres_database)
    check_first_and_second_run(harness, Expected(warehouse))
    import psycopg2

    with psycopg2.connect(postgres_database) as pg, pg.cursor() as cur:
        cur.execute("SELECT status, count(*) FROM sync_ledger GROUP BY status")
        statuses = dict(cur.fetchall())
        cur.execute("SELECT count(*) FROM information_schema.tables WHERE table_name LIKE 'ratelimit%'")
        buckets = cur.fetchone()[0]
    assert statuses["delivered"] > 100 and statuses["rejected"] > 0
    assert buckets >= 1


def test_deletes_only_customers_this_pipeline_created(harness, warehouse, tmp_path):
    import shutil

    from sandbox.env import conn_json

    copy = tmp_path / "warehouse.duckdb"
    shutil.copy(warehouse, copy)
    harness.env["AIRFLOW_CONN_RETL_WAREHOUSE"] = conn_json("duckdb", host=str(copy))
    first = harness.run({"entities": ["customers"]})
    assert first["reports"]["customers"]["sent"] > 100
    ours = sorted(harness.sandbox.store["customers"])[:3]
    con = duckdb.connect(str(copy))
    not_ours = [
        str(k)
        for (k,) in con.execute(
            "SELECT customer_id FROM customers WHERE updated_at < TIMESTAMP '2026-10-20' AND deleted_at IS NULL "
            "ORDER BY customer_id LIMIT 2"
        ).fetchall()
    ]
    con.execute(
        "UPDATE customers SET deleted_at = TIMESTAMP '2026-11-01 06:00', updated_at = TIMESTAMP '2026-11-01 06:00' "
        f"WHERE CAST(customer_id AS VARCHAR) IN ({', '.join('?' * 5)})",
        [*ours, *not_ours],
    )
    con.close()

    second = harness.run({"entities": ["customers"]}, window=("2026-11-01", "2026-11-02"))
    deletes = [r["path"].rsplit("/", 1)[-1] for r in harness.sent("DELETE", "/v1/customers/")]
    assert sorted(deletes) == ours
    assert not set(ours) & set(harness.sandbox.store["customers"])
    report = second["reports"]["customers"]
    assert report["deleted"] == 3 and report["deletes_skipped"] == 2
    for key in ours:
        assert (
            record_history("voucherify", "customers", key, url=harness.state_url)["current"]["status"]
            == "deleted"
        )
    # Deleting again is a no-op: the ledger knows they are gone.
    third = harness.run({"entities": ["customers"]}, window=("2026-11-01", "2026-11-02"))
    assert third["reports"]["customers"]["deleted"] == 0
    assert len(harness.sent("DELETE", "/v1/customers/")) == 3


def test_dry_run_sends_nothing_and_says_what_it_would_send(harness, state_store):
    result = harness.run({"dry_run": True})
    assert harness.sandbox.requests == []
    report = result["reports"]["customers"]
    assert report["dry_run"] and report["to_send"] > 100 and report["sent"] == 0
    with open(local(report["dry_run_payloads"]), encoding="utf-8") as handle:
        previews = [json.loads(line) for line in handle]
    assert len(previews) == report["to_send"]
    assert all(p["payload"]["source_id"] == p["key"] for p in previews)
    assert result["note"].startswith("**Dry run report:** would send ")
    assert note_table(result["note"])["customers"]["sent"] == f"would send {report['to_send']}"
    # Nothing was planned either: a live run afterwards sends everything.
    live = harness.run({"entities": ["customers"]})
    assert live["reports"]["customers"]["sent"] == report["to_send"]


def test_historical_import_keeps_the_real_order_date_in_metadata(harness, warehouse, state_store):
    """POST /v1/orders/import stamps created_at with the import time; the page says to keep the order date
    in order metadata (ISO 8601): metadata.ordered_at, and no created_at in the import."""
    started = dt.datetime.now(dt.UTC)
    result = harness.run({"entities": ["orders"], "historical_import": True})
    report = result["reports"]["orders"]
    imported = [order for r in harness.sent("POST", "/v1/orders/import") for order in r["body"]]
    assert report["sent"] == len(imported) > 100 and report["failed"] == 0
    assert not [r for r in harness.sandbox.requests if r["path"] == "/v1/orders"]  # no live order calls
    con = duckdb.connect(str(warehouse), read_only=True)
    ordered = dict(con.execute("SELECT order_id, ordered_at FROM orders").fetchall())
    con.close()
    stored = harness.sandbox.store["orders"]
    for order in imported:
        assert "created_at" not in order
        real = dt.datetime.fromisoformat(order["metadata"]["ordered_at"].replace("Z", "+00:00"))
        assert real == ordered[order["source_id"]].replace(tzinfo=dt.UTC)
        kept = stored[order["source_id"]]
        assert kept["metadata"]["ordered_at"] == order["metadata"]["ordered_at"]
        assert dt.datetime.fromisoformat(kept["created_at"].replace("Z", "+00:00")) >= started
