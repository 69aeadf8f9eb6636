"""The state store is created only by ``init``, and a run refuses any store that would make it resend."""

from __future__ import annotations

import datetime as dt
import os
import sqlite3
import subprocess
import sys

import pytest
from sqlalchemy import create_engine, text

from reverse_etl.budget import add_request_minutes
from reverse_etl.errors import StateStoreError
from reverse_etl.ledger import UPSERT, Ledger, Planned
from reverse_etl.store import SCHEMA_VERSION, init_store, open_request_minutes, open_store


def url_of(path) -> str:
    return f"sqlite:///{path}"


def test_a_missing_store_is_refused_and_not_created(tmp_path):
    path = tmp_path / "state.db"
    with pytest.raises(StateStoreError, match="does not exist") as caught:
        Ledger("voucherify", "customers", "run", url=url_of(path))
    assert str(path) in str(caught.value) and "reverse_etl.cli init" in str(caught.value)
    assert not path.exists()


def test_a_store_deleted_after_it_was_opened_is_refused_by_the_next_open(tmp_path):
    path = tmp_path / "state.db"
    init_store(url_of(path))
    Ledger("voucherify", "customers", "run", url=url_of(path)).plan([Planned("1", UPSERT, "h", "{}")])
    path.unlink()
    with pytest.raises(StateStoreError, match="does not exist"):
        Ledger("voucherify", "customers", "run2", url=url_of(path))
    assert not path.exists()


@pytest.mark.parametrize(
    ("content", "message"),
    [(b"", "empty file"), (b"this is not sqlite" * 100, "not a readable database")],
)
def test_empty_and_corrupt_files_are_refused_with_their_path(tmp_path, content, message):
    path = tmp_path / "state.db"
    path.write_bytes(content)
    with pytest.raises(StateStoreError, match=message) as caught:
        open_store(url_of(path))
    assert str(path) in str(caught.value)


def test_a_database_without_our_tables_is_refused(tmp_path):
    path = tmp_path / "other.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE something_else (x INTEGER)")
    with pytest.raises(StateStoreError, match="no reverse-ETL tables"):
        open_store(url_of(path))


def test_another_deployments_store_is_refused(tmp_path, monkeypatch):
    path = tmp_path / "state.db"
    init_store(url_of(path), deployment="eu-prod")
    monkeypatch.setenv("RETL_DEPLOYMENT", "us-prod")
    with pytest.raises(StateStoreError, match="belongs to deployment 'eu-prod'") as caught:
        open_store(url_of(path))
    assert "'us-prod'" in str(caught.value)
    with pytest.raises(StateStoreError, match="belongs to deployment 'eu-prod'"):
        init_store(url_of(path))  # init does not take over another deployment's store either
    monkeypatch.setenv("RETL_DEPLOYMENT", "eu-prod")
    open_store(url_of(path))


def test_init_is_idempotent_and_keeps_the_identity(tmp_path):
    first = init_store(url_of(tmp_path / "state.db"))
    Ledger("v", "customers", "r", url=url_of(tmp_path / "state.db")).plan([Planned("1", UPSERT, "h", "{}")])
    again = init_store(url_of(tmp_path / "state.db"))
    assert first["action"] == "initialised" and again["action"] == "unchanged"
    assert again["store_id"] == first["store_id"] and again["records"] == 1


def test_init_adds_the_indexes_of_a_later_version_to_an_existing_store(tmp_path):
    path = tmp_path / "state.db"
    init_store(url_of(path))
    Ledger("v", "customers", "r", url=url_of(path)).plan([Planned("1", UPSERT, "h", "{}")])
    with sqlite3.connect(path) as conn:  # a store created before the Reverse ETL page's indexes
        conn.execute("DROP INDEX ix_sync_runs_sync")
        conn.execute("DROP INDEX ix_sync_runs_destination")
    assert init_store(url_of(path))["records"] == 1
    with sqlite3.connect(path) as conn:
        names = {n for (n,) in conn.execute("SELECT name FROM sqlite_master WHERE tbl_name = 'sync_runs'")}
    assert {"ix_sync_runs_sync", "ix_sync_runs_destination"} <= names


def test_a_store_of_an_earlier_version_is_refused_until_init_adopts_it_with_its_records(tmp_path):
    path = tmp_path / "state.db"
    init_store(url_of(path))
    Ledger("v", "customers", "r", url=url_of(path)).plan([Planned("42", UPSERT, "h", "{}")])
    with sqlite3.connect(path) as conn:
        conn.execute("DROP TABLE sync_store")  # what a store written before identities looks like
    with pytest.raises(StateStoreError, match="earlier version"):
        open_store(url_of(path))
    assert init_store(url_of(path))["action"] == "adopted"
    assert Ledger("v", "customers", "r2", url=url_of(path)).lookup(["42"])["42"]["status"] == "pending"
    add_request_minutes(url_of(path), "voucherify_default", 100, [(MINUTE, 3, 1)])  # the current tables


MINUTE = dt.datetime(2026, 11, 1, 10, 0)


def as_version_1(conn) -> None:
    """A store as version 1 left it: no rate budget per minute."""
    conn.execute(text("DROP TABLE sync_request_minutes"))
    conn.execute(text("UPDATE sync_store SET schema_version = 1"))


def test_a_version_1_store_is_refused_until_init_upgrades_it_with_its_records(tmp_path):
    path = tmp_path / "state.db"
    first = init_store(url_of(path))
    Ledger("v", "customers", "r", url=url_of(path)).plan([Planned("42", UPSERT, "h", "{}")])
    engine = create_engine(url_of(path))
    with engine.begin() as conn:
        as_version_1(conn)
    engine.dispose()
    for opening in (open_store, open_request_minutes):
        with pytest.raises(StateStoreError, match="needs an upgrade") as caught:
            opening(url_of(path))
        assert "python -m reverse_etl.cli init" in str(caught.value) and str(path) in str(caught.value)
    upgraded = init_store(url_of(path))
    assert upgraded["action"] == "upgraded" and upgraded["records"] == 1
    assert upgraded["store_id"] == first["store_id"]
    assert Ledger("v", "customers", "r2", url=url_of(path)).lookup(["42"])["42"]["status"] == "pending"
    add_request_minutes(url_of(path), "voucherify_default", 100, [(MINUTE, 3, 1)])
    assert init_store(url_of(path))["action"] == "unchanged"
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT requests, throttled FROM sync_request_minutes").fetchall() == [(3, 1)]
        assert conn.execute("SELECT schema_version FROM sync_store").fetchone() == (SCHEMA_VERSION,)


def test_the_cli_creates_the_store_and_refuses_a_mistyped_path(tmp_path, repo):
    def cli(*args):
        return subprocess.run(
            [sys.executable, "-m", "reverse_etl.cli", *args],
            capture_output=True,
            text=True,
            cwd=repo,
            env={**os.environ, "PYTHONPATH": f"{repo / 'plugins'}:{repo}"},
            timeout=120,
        )

    store = tmp_path / "state.db"
    typo = tmp_path / "stat.db"
    made = cli("--state", str(store), "init")
    assert made.returncode == 0 and "created a new, empty state store" in made.stdout
    asked = cli("--state", str(typo), "why", "voucherify", "customers", "42")
    assert asked.returncode == 2 and not typo.exists()
    assert f"State store {typo} " in asked.stderr and "does not exist" in asked.stderr
    assert "Traceback" not in asked.stderr
    store.write_bytes(b"garbage" * 1000)
    corrupt = cli("--state", str(store), "runs", "voucherify_sync")
    assert corrupt.returncode == 2 and "not a readable database" in corrupt.stderr
    assert "Traceback" not in corrupt.stderr


@pytest.mark.postgres
def test_postgresql_an_empty_database_is_refused_until_init(postgres_database):
    url = postgres_database.replace("postgresql://", "postgresql+psycopg2://", 1)
    with pytest.raises(StateStoreError, match="no reverse-ETL tables"):
        open_store(url)
    assert init_store(url)["action"] == "initialised"
    Ledger("v", "customers", "r", url=url).plan([Planned("1", UPSERT, "h", "{}")])
    from sqlalchemy import inspect

    engine = create_engine(url)
    with engine.begin() as conn:  # a version-1 store created before the Reverse ETL page's indexes
        conn.execute(text("DROP INDEX ix_sync_runs_sync"))
        as_version_1(conn)
    with pytest.raises(StateStoreError, match="needs an upgrade"):
        open_store(url)
    upgraded = init_store(url)
    assert (upgraded["action"], upgraded["records"]) == ("upgraded", 1)
    add_request_minutes(url, "voucherify_default", 100, [(MINUTE, 3, 1)])
    with engine.connect() as conn:
        assert "ix_sync_runs_sync" in {i["name"] for i in inspect(conn).get_indexes("sync_runs")}
        assert conn.execute(text("SELECT requests, throttled FROM sync_request_minutes")).all() == [(3, 1)]
    engine.dispose()
