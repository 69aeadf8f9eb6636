"""Every SQL mapping runs on DuckDB and on PostgreSQL and selects the same records with the same columns."""

from __future__ import annotations

import datetime as dt
from urllib.parse import urlsplit

import pytest

from reverse_etl.extract import render_sql
from reverse_etl.settings import include_dir
from reverse_etl.warehouse import WarehouseHook
from reverse_etl.window import Window
from sandbox.env import conn_json

MAPPINGS = sorted(
    (p.parent.name, p.stem) for p in (include_dir() / "sql").glob("*/*.sql") if not p.stem.endswith(".keys")
)
# Keys files of the erasure sweep: every key present in the source, no window.
KEYS = sorted(
    (p.parent.name, p.name.removesuffix(".keys.sql")) for p in (include_dir() / "sql").glob("*/*.keys.sql")
)
MONTH = Window(dt.datetime(2026, 10, 1, tzinfo=dt.UTC), dt.datetime(2026, 11, 1, tzinfo=dt.UTC))
FOUR_DAYS = Window(dt.datetime(2026, 10, 28, tzinfo=dt.UTC), dt.datetime(2026, 11, 1, tzinfo=dt.UTC))


def _select(
    hook: WarehouseHook, destination: str, entity: str, window: Window = MONTH
) -> tuple[list[str], list[str]]:
    sql = render_sql(destination, entity, window, hook.dialect)
    columns: list[str] = []
    keys: list[str] = []
    for batch in hook.stream(sql, 5000):
        columns = batch.schema.names
        keys += [str(k) for k in batch.column("_key").to_pylist()]
    return columns, keys


def _source_keys(hook: WarehouseHook, destination: str, entity: str) -> tuple[list[str], list[str]]:
    from reverse_etl.erasures import render_keys_sql

    columns: list[str] = []
    keys: list[str] = []
    for batch in hook.stream(render_keys_sql(destination, entity, hook.dialect), 5000):
        columns = batch.schema.names
        keys += [str(k) for k in batch.column("_key").to_pylist()]
    return columns, keys


def test_keys_files_select_every_key_of_their_sync_in_the_same_form(warehouse, monkeypatch):
    """A key the sync delivers but the keys file spells differently would be deleted as 'erased'."""
    from reverse_etl.operators.salesmanago import SalesmanagoContactsOperator
    from reverse_etl.operators.voucherify import VoucherifyCustomersOperator

    assert {("voucherify", "customers"), ("salesmanago", "contacts")} <= set(KEYS)
    deletable = {
        (op.destination, op.entity) for op in (VoucherifyCustomersOperator, SalesmanagoContactsOperator)
    }
    assert set(KEYS) <= deletable, "a keys file only makes sense for a sync that can delete"
    monkeypatch.setenv("AIRFLOW_CONN_DUCK", conn_json("duckdb", host=str(warehouse)))
    duck = WarehouseHook("duck")
    for destination, entity in KEYS:
        columns, keys = _source_keys(duck, destination, entity)
        assert columns == ["_key"], f"{destination}.{entity}.keys.sql"
        assert len(keys) == len(set(keys)), f"{destination}.{entity}.keys.sql repeats keys"
        _, delta = _select(duck, destination, entity)
        assert delta and set(delta) <= set(keys), f"{destination}.{entity}: keys differ from the sync's _key"
        _, days = _select(duck, destination, entity, FOUR_DAYS)
        assert len(keys) > len(set(days)) > 0, "the keys file must not be window-bound"


def test_every_destination_has_its_mappings():
    assert {d for d, _ in MAPPINGS} == {
        "voucherify",
        "salesfire",
        "connectif",
        "salesmanago",
        "splio_referral",
    }


def test_every_suite_names_its_personal_fields_among_the_mappings_columns(warehouse, monkeypatch):
    """The page masks the fields a suite calls personal: a misspelt or stale name would leave the real
    column unmasked, and a suite that names none has everything masked (no mapping may rely on that)."""
    from reverse_etl.validate import personal_fields

    monkeypatch.setenv("AIRFLOW_CONN_DUCK", conn_json("duckdb", host=str(warehouse)))
    duck = WarehouseHook("duck")
    for destination, entity in MAPPINGS:
        declared = personal_fields(destination, entity)
        assert declared is not None, f"{destination}.{entity}: the suite's meta.personal_fields is missing"
        columns, _ = _select(duck, destination, entity)
        assert declared <= set(columns), f"{destination}.{entity}: not columns: {declared - set(columns)}"
        emails = {c for c in columns if "email" in c.lower() and "consent" not in c.lower()}
        assert emails <= declared, f"{destination}.{entity}: email columns not declared personal: {emails}"


@pytest.mark.postgres
def test_each_mapping_selects_the_same_records_on_duckdb_and_postgresql(
    warehouse, postgres_database, monkeypatch
):
    from sandbox.warehouse import load_postgres

    load_postgres(warehouse, postgres_database)
    dsn = urlsplit(postgres_database)
    monkeypatch.setenv("AIRFLOW_CONN_DUCK", conn_json("duckdb", host=str(warehouse)))
    monkeypatch.setenv(
        "AIRFLOW_CONN_PG",
        conn_json(
            "postgres", host=dsn.hostname, port=dsn.port, login=dsn.username, schema=dsn.path.lstrip("/")
        ),
    )
    duck, pg = WarehouseHook("duck"), WarehouseHook("pg")
    for destination, entity in MAPPINGS:
        duck_columns, duck_keys = _select(duck, destination, entity)
        pg_columns, pg_keys = _select(pg, destination, entity)
        assert duck_keys, f"{destination}.{entity} selects nothing over the sample month"
        assert pg_columns == duck_columns, f"{destination}.{entity}"
        assert sorted(pg_keys) == sorted(duck_keys), f"{destination}.{entity}"
    for destination, entity in KEYS:
        duck_columns, duck_keys = _source_keys(duck, destination, entity)
        pg_columns, pg_keys = _source_keys(pg, destination, entity)
        assert duck_keys and pg_columns == duck_columns, f"{destination}.{entity}.keys.sql"
        assert sorted(pg_keys) == sorted(duck_keys), f"{destination}.{entity}.keys.sql"
