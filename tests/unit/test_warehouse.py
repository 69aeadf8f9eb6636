"""The sample warehouse: deterministic, time-windowed, referentially sound, and dirty exactly where
dq_injected_defects says it is (the engine's data-quality tests rely on that list)."""

from __future__ import annotations

import os
import uuid
from datetime import date, datetime, timedelta
from pathlib import Path

import duckdb
import psycopg
import pytest
from psycopg import sql

from sandbox.warehouse import TABLES, build_duckdb, load_postgres, main

ANCHOR = datetime(2026, 11, 1)
KEYS = {
    "customers": "customer_id",
    "products": "product_id",
    "orders": "order_id",
    "referral_contacts": "referral_id",
}
VALID_EMAIL = r"[^@\s]+@[^@\s]+\.[^@\s]+"
# A SQL condition that is true exactly for rows with the defect; {key} is the table's key column.
DEFECTS = {
    "customers": {
        "invalid_email": f"email IS NOT NULL AND NOT regexp_full_match(email, '{VALID_EMAIL}')",
        "missing_email": "email IS NULL",
        "lowercase_enum": "email_marketing_consent <> upper(email_marketing_consent)"
        " OR email_transactional_consent <> upper(email_transactional_consent)"
        " OR sms_marketing_consent <> upper(sms_marketing_consent)"
        " OR sms_transactional_consent <> upper(sms_transactional_consent)"
        " OR country_code <> upper(country_code)",
        "duplicate_key": "{key} IN (SELECT {key} FROM {table} GROUP BY ALL HAVING count(*) > 1)",
        "overlong_field": "length(first_name) >= 300 OR length(last_name) >= 300",
        "embedded_newline": "contains(address_line1, chr(10))",
        "embedded_quote": "contains(last_name, '\"') AND contains(last_name, ';')",
        "blank_email": "email IS NOT NULL AND trim(email, ' ' || chr(9)) = ''",
        "implausible_birthdate": "birth_date < DATE '1900-01-01' OR birth_date > DATE '2026-11-01'",
        "overlong_address": "length(address_line2) >= 10000",
    },
    "products": {
        "negative_price": "price_cents < 0",
        "overlong_field": "length(name) > 120 OR length(product_id) > 32",
        "embedded_newline": "contains(description, chr(10))",
        "duplicate_key": "{key} IN (SELECT {key} FROM {table} GROUP BY ALL HAVING count(*) > 1)",
        "blank_required": "trim(description) = '' OR trim(brand) = ''",
    },
    "orders": {"lowercase_enum": "status <> upper(status)", "future_order_date": "ordered_at > updated_at"},
    "referral_contacts": {
        "invalid_email": f"email IS NOT NULL AND NOT regexp_full_match(email, '{VALID_EMAIL}')",
        "missing_email": "email IS NULL",
        "duplicate_key": "{key} IN (SELECT {key} FROM {table} GROUP BY ALL HAVING count(*) > 1)",
        "embedded_newline": "contains(last_name, chr(10))",
        "blank_name": "trim(first_name) = '' OR trim(last_name) = ''",
    },
}


def _query(path: Path, statement: str, *params) -> list[tuple]:
    with duckdb.connect(str(path), read_only=True) as con:
        return con.execute(statement, list(params)).fetchall()


def _scalar(path: Path, statement: str, *params):
    return _query(path, statement, *params)[0][0]


def _fingerprints(path: Path) -> dict[str, str]:
    """One hash per table over all rows, independent of row order."""
    tables = [row[0] for row in _query(path, "SELECT table_name FROM information_schema.tables")]
    return {
        table: _scalar(
            path, f"SELECT md5(string_agg(t::VARCHAR, chr(10) ORDER BY t::VARCHAR)) FROM {table} t"
        )
        for table in tables
    }


def test_same_seed_gives_identical_tables_and_another_seed_does_not(tmp_path):
    first, second, other = tmp_path / "a.duckdb", tmp_path / "b.duckdb", tmp_path / "c.duckdb"
    build_duckdb(first, customers=1200, seed=3)
    build_duckdb(second, customers=1200, seed=3)
    build_duckdb(other, customers=1200, seed=4)

    assert _fingerprints(first) == _fingerprints(second)
    assert set(_fingerprints(first)) == set(TABLES)
    differing = {t for t, digest in _fingerprints(first).items() if _fingerprints(other)[t] != digest}
    assert differing == set(TABLES)


def test_only_customers_builds_the_same_customers_as_the_full_build(tmp_path, warehouse):
    path = tmp_path / "customers.duckdb"
    counts = build_duckdb(path, customers=2000, seed=7, only="customers")

    assert set(counts) == {"customers", "dq_injected_defects"}
    full = _fingerprints(warehouse)
    assert _fingerprints(path)["customers"] == full["customers"]


def test_row_counts_follow_the_size(warehouse):
    counts = {t: _scalar(warehouse, f"SELECT count(*) FROM {t}") for t in TABLES}
    dup = {t: _scalar(warehouse, f"SELECT count(*) - count(DISTINCT {k}) FROM {t}") for t, k in KEYS.items()}

    assert counts["customers"] - dup["customers"] == 2000
    assert counts["products"] - dup["products"] == 200  # the minimum catalogue
    assert counts["orders"] == 4000
    assert 4000 <= counts["order_items"] <= 16000
    assert counts["events"] == 10000
    assert counts["coupon_sets"] == 10
    assert counts["coupons"] == 2000
    assert counts["referral_contacts"] - dup["referral_contacts"] == 1000


def test_updated_at_spans_thirty_days_before_the_anchor(warehouse):
    start, day = ANCHOR - timedelta(days=30), ANCHOR - timedelta(days=1)
    for table in set(TABLES) - {"dq_injected_defects"}:
        columns = [row[0] for row in _query(warehouse, f"DESCRIBE {table}")]
        assert columns[-2:] == ["updated_at", "deleted_at"], table
        total, inside, last_day, bad_delete = _query(
            warehouse,
            f"SELECT count(*), count(*) FILTER (updated_at >= ? AND updated_at < ?),"
            f" count(*) FILTER (updated_at >= ?), count(*) FILTER (deleted_at <> updated_at) FROM {table}",
            start,
            ANCHOR,
            day,
        )[0]
        assert inside == total, table
        assert bad_delete == 0, table
        if total >= 1000:
            assert 0.6 / 30 < last_day / total < 1.4 / 30, table

    for table in ("customers", "products", "orders", "referral_contacts"):
        share = _scalar(warehouse, f"SELECT avg((deleted_at IS NOT NULL)::INT) FROM {table}")
        assert 0.005 < share < 0.02, table
    for table in ("customers", "products", "coupons", "referral_contacts", "orders"):
        assert _scalar(warehouse, f"SELECT count(*) FROM {table} WHERE created_at > updated_at") == 0, table
    future = "order_id IN (SELECT record_key FROM dq_injected_defects WHERE defect = 'future_order_date')"
    assert (
        _scalar(warehouse, f"SELECT count(*) FROM orders WHERE ordered_at > updated_at AND NOT {future}") == 0
    )
    assert _scalar(warehouse, "SELECT count(*) FROM events WHERE occurred_at > updated_at") == 0


def test_the_anchor_moves_the_window_and_nothing_else(tmp_path):
    path = tmp_path / "anchored.duckdb"
    build_duckdb(path, customers=300, seed=1, anchor=date(2025, 3, 15), only="customers")

    low, high = _query(path, "SELECT min(updated_at), max(updated_at) FROM customers")[0]
    assert datetime(2025, 2, 13) <= low and high < datetime(2025, 3, 15)


def test_order_items_share_their_order_stamps_and_totals_add_up(warehouse):
    mismatched = _scalar(
        warehouse,
        "SELECT count(*) FROM order_items i JOIN orders o USING (order_id)"
        " WHERE i.updated_at <> o.updated_at OR i.deleted_at IS DISTINCT FROM o.deleted_at",
    )
    wrong_totals = _scalar(
        warehouse,
        "SELECT count(*) FROM orders o JOIN (SELECT order_id, sum(quantity * unit_price_cents) AS lines"
        " FROM order_items GROUP BY ALL) USING (order_id) WHERE o.total_cents <> lines - o.discount_cents",
    )
    line_numbers = _query(
        warehouse,
        "SELECT min(line_no), max(line_no), count(DISTINCT (order_id, line_no)) = count(*) FROM order_items",
    )[0]

    assert mismatched == 0
    assert wrong_totals == 0
    assert line_numbers == (1, 4, True)
    assert (
        _scalar(warehouse, "SELECT count(*) FROM orders WHERE discount_cents > 0 AND coupon_code IS NULL")
        == 0
    )


@pytest.mark.parametrize(
    ("child", "column", "parent", "parent_column"),
    [
        ("order_items", "product_id", "products", "product_id"),
        ("order_items", "order_id", "orders", "order_id"),
        ("orders", "customer_id", "customers", "customer_id"),
        ("events", "product_id", "products", "product_id"),
        ("events", "customer_id", "customers", "customer_id"),
        ("coupons", "customer_id", "customers", "customer_id"),
        ("coupons", "coupon_set_id", "coupon_sets", "coupon_set_id"),
        ("referral_contacts", "referred_by", "referral_contacts", "referrer_code"),
    ],
)
def test_foreign_keys_hold(warehouse, child, column, parent, parent_column):
    orphans = _scalar(
        warehouse,
        f"SELECT count(*) FROM {child} WHERE {column} IS NOT NULL"
        f" AND {column} NOT IN (SELECT {parent_column} FROM {parent})",
    )
    assert orphans == 0


def test_coupons_and_events_have_unique_codes_and_redeemed_coupons_match_orders(warehouse):
    unredeemed = _scalar(
        warehouse,
        "SELECT count(*) FROM orders o LEFT JOIN coupons c USING (coupon_code)"
        " WHERE o.coupon_code IS NOT NULL AND (c.status IS DISTINCT FROM 'REDEEMED'"
        " OR c.customer_id <> o.customer_id)",
    )
    assert unredeemed == 0
    assert _scalar(warehouse, "SELECT count(*) - count(DISTINCT coupon_code) FROM coupons") == 0
    assert _scalar(warehouse, "SELECT count(*) - count(DISTINCT event_id) FROM events") == 0


def test_every_defect_kind_is_listed_and_present(warehouse):
    listed = {
        (table, defect): count
        for table, defect, count in _query(
            warehouse, "SELECT table_name, defect, count(*) FROM dq_injected_defects GROUP BY ALL"
        )
    }
    expected = {(table, defect) for table, kinds in DEFECTS.items() for defect in kinds}

    assert set(listed) == expected
    assert min(listed.values()) >= 2
    customer_share = sum(c for (t, _), c in listed.items() if t == "customers") / 2000
    assert 0.03 <= customer_share <= 0.04
    assert (
        _scalar(
            warehouse, "SELECT count(*) - count(DISTINCT (table_name, record_key)) FROM dq_injected_defects"
        )
        == 0
    )


@pytest.mark.parametrize(
    ("table", "defect"), [(table, defect) for table, kinds in DEFECTS.items() for defect in kinds]
)
def test_listed_rows_have_the_defect_and_other_rows_do_not(warehouse, table, defect):
    key = KEYS[table]
    condition = DEFECTS[table][defect].format(key=key, table=table)
    listed = (
        f"SELECT record_key FROM dq_injected_defects WHERE table_name = '{table}' AND defect = '{defect}'"
    )
    all_listed = f"SELECT record_key FROM dq_injected_defects WHERE table_name = '{table}'"

    without = _scalar(
        warehouse,
        f"SELECT count(*) FROM ({listed}) d WHERE NOT EXISTS"
        f" (SELECT 1 FROM {table} WHERE {key}::VARCHAR = d.record_key AND ({condition}))",
    )
    unlisted = _scalar(
        warehouse,
        f"SELECT count(*) FROM {table} WHERE {key}::VARCHAR NOT IN ({all_listed}) AND ({condition})",
    )
    assert without == 0, "listed rows without the defect"
    assert unlisted == 0, "defective rows that are not listed"


def test_clean_rows_are_well_formed_including_non_latin_text(warehouse):
    clean = (
        "customer_id::VARCHAR NOT IN"
        " (SELECT record_key FROM dq_injected_defects WHERE table_name = 'customers')"
    )
    bad = _query(
        warehouse,
        "SELECT count(*) FILTER (NOT regexp_full_match(email, '[a-z0-9._-]+@[a-z0-9.-]+\\.[a-z]+')),"
        " count(*) - count(DISTINCT email),"
        " count(*) FILTER (phone IS NOT NULL AND NOT regexp_full_match(phone, '\\+[1-9][0-9]{7,14}')),"
        " count(*) FILTER (NOT regexp_full_match(country_code, '[A-Z]{2}')),"
        " count(*) FILTER (NOT regexp_full_match(language, '[a-z]{2}')),"
        " count(*) FILTER (email_marketing_consent NOT IN ('GRANTED', 'DENIED', 'UNKNOWN'))"
        f" FROM customers WHERE {clean}",
    )[0]
    scripts = dict(
        _query(
            warehouse,
            "SELECT country_code, bool_and(regexp_matches(first_name || last_name, CASE country_code"
            " WHEN 'UA' THEN '[А-Яа-яІіЇїЄєҐґ]' WHEN 'GR' THEN '[Α-Ωα-ωά-ώ]'"
            " ELSE '[\\x{3040}-\\x{9FFF}]' END))"
            f" FROM customers WHERE country_code IN ('UA', 'GR', 'CN', 'JP') AND {clean} GROUP BY ALL",
        )
    )

    assert bad == (0, 0, 0, 0, 0, 0)
    assert scripts == {"UA": True, "GR": True, "CN": True, "JP": True}
    assert _scalar(warehouse, "SELECT count(DISTINCT country_code) FROM customers WHERE " + clean) == 11
    assert _scalar(warehouse, "SELECT max(length(description)) FROM products") > 600


def test_cli_rebuilds_an_existing_file(tmp_path, capsys):
    path = tmp_path / "cli" / "warehouse.duckdb"
    argv = ["--path", str(path), "--customers", "500", "--seed", "9", "--only", "customers"]
    assert main(argv) == 0
    first = _fingerprints(path)
    assert main([*argv, "--force"]) == 0

    assert _fingerprints(path) == first
    out = capsys.readouterr().out
    assert "customers" in out and "dq_injected_defects" in out


# The same text in both databases: tricky strings (newlines, quotes, non-Latin), NULLs and timestamps.
CUSTOMERS_DIGEST = (
    "SELECT md5(string_agg(concat_ws('|', customer_id, coalesce(email, '<null>'), last_name, address_line1,"
    " coalesce(address_line2, '<null>'), birth_date, {epoch}), chr(10) ORDER BY customer_id, updated_at))"
    " FROM {table}"
)


@pytest.mark.postgres
def test_load_postgres_copies_every_table(tmp_path):
    dsn = os.environ["RETL_TEST_POSTGRES_DSN"]
    path = tmp_path / "pg.duckdb"
    counts = build_duckdb(path, customers=1000, seed=5)
    schema = f"retl_wh_{uuid.uuid4().hex[:10]}"
    try:
        loaded = load_postgres(path, dsn, schema=schema, batch_rows=700)
        with psycopg.connect(dsn) as pg:
            in_pg = {
                table: pg.execute(
                    sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(schema, table))
                ).fetchone()[0]
                for table in counts
            }
            epoch = "(extract(epoch FROM updated_at) * 1000000)::bigint"
            pg_digest = pg.execute(
                sql.SQL(CUSTOMERS_DIGEST.format(epoch=epoch, table="{}")).format(
                    sql.Identifier(schema, "customers")
                )
            ).fetchone()[0]
    finally:
        with psycopg.connect(dsn) as pg:
            pg.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))

    assert loaded == counts
    assert in_pg == counts
    assert pg_digest == _scalar(
        path, CUSTOMERS_DIGEST.format(epoch="epoch_us(updated_at)", table="customers")
    )
