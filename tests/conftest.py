"""Shared fixtures. Airflow reads its settings at import, so the environment is set before anything
imports it: every test session gets its own AIRFLOW_HOME, metadata database and staging folder.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from sandbox.env import REPO, airflow_env, connections_env

_HOME = Path(tempfile.mkdtemp(prefix="retl-tests-"))
os.environ.update(airflow_env(_HOME))
POSTGRES_DSN = os.environ.get("RETL_TEST_POSTGRES_DSN")
REDIS_URL = os.environ.get("RETL_TEST_REDIS_URL")


# marker -> (the variable naming its server, what it is); in CI a missing one is an error, not a skip
SERVICES = {
    "postgres": ("RETL_TEST_POSTGRES_DSN", "PostgreSQL"),
    "stack": ("RETL_TEST_REDIS_URL", "Redis (the make stack test)"),
}


def pytest_collection_modifyitems(config, items):
    """Tests that need PostgreSQL or Redis run when the variable naming the server is set (always in CI,
    where its absence is an error)."""
    for marker, (variable, what) in SERVICES.items():
        if os.environ.get(variable):
            continue
        marked = [item for item in items if item.get_closest_marker(marker)]
        if not marked:
            continue
        if os.environ.get("CI"):
            raise pytest.UsageError(f"CI must run the {what} tests: set {variable} (see .ci/run).")
        items[:] = [item for item in items if not item.get_closest_marker(marker)]
        config.hook.pytest_deselected(items=marked)
        print(f"\n{len(marked)} {what} tests not selected: set {variable} to run them.")


@pytest.fixture(scope="session")
def airflow_db() -> Path:
    """A migrated Airflow metadata database for this session (SQLite under the session's AIRFLOW_HOME)."""
    subprocess.run(
        [sys.executable, "-m", "airflow", "db", "migrate"],
        check=True,
        env=os.environ.copy(),
        stdout=subprocess.DEVNULL,
    )
    return _HOME


@pytest.fixture(scope="session")
def warehouse(tmp_path_factory) -> Path:
    """The sample warehouse at test size (2,000 customers), built once per session."""
    from sandbox.warehouse import build_duckdb

    path = tmp_path_factory.mktemp("warehouse") / "warehouse.duckdb"
    build_duckdb(path, customers=2000, seed=7)
    return path


@pytest.fixture(scope="session")
def s3_endpoint():
    """An S3-compatible server on 127.0.0.1 (``python -m sandbox.s3``, moto) for the whole session; each test
    stages under a prefix of its own (``s3_staging``)."""
    import json

    proc = subprocess.Popen(
        [sys.executable, "-m", "sandbox.s3", "--port", "0"], cwd=REPO, stdout=subprocess.PIPE, text=True
    )
    try:
        line = proc.stdout.readline()
        assert line, "python -m sandbox.s3 did not start"
        yield json.loads(line)["endpoint_url"]
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.fixture
def s3_staging(s3_endpoint, request, monkeypatch) -> dict[str, str]:
    """``RETL_STAGING_URL`` on the S3 server under this test's own prefix, and its ``aws`` connection."""
    from sandbox.s3 import staging_env

    env = staging_env(s3_endpoint, prefix=f"staging/{request.node.name}")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


@pytest.fixture
def state_store(tmp_path, monkeypatch) -> Path:
    """A fresh SQLite state store and rate-limit bucket file for one test."""
    path = tmp_path / "state.db"
    monkeypatch.setenv(
        "AIRFLOW_CONN_RETL_STATE", connections_env(warehouse="", state=str(path))["AIRFLOW_CONN_RETL_STATE"]
    )
    monkeypatch.setenv("RETL_RATE_LIMIT_URL", f"sqlite:///{tmp_path / 'ratelimit.sqlite'}")
    from reverse_etl.store import init_store

    init_store(f"sqlite:///{path}")
    return path


@pytest.fixture
def repo() -> Path:
    return REPO


@pytest.fixture
def postgres_database():
    """A throwaway database on the PostgreSQL server of RETL_TEST_POSTGRES_DSN; its DSN."""
    import uuid
    from urllib.parse import urlsplit, urlunsplit

    import psycopg2

    name = f"retl_test_{uuid.uuid4().hex[:10]}"
    admin = psycopg2.connect(POSTGRES_DSN)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    parts = urlsplit(POSTGRES_DSN)
    try:
        yield urlunsplit(parts._replace(path=f"/{name}"))
    finally:
        with admin.cursor() as cur:
            cur.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))
            cur.execute(f'DROP DATABASE IF EXISTS "{name}"')
        admin.close()


PROGRESS_INTERVAL = 0.2


@pytest.fixture
def progress_log(monkeypatch, caplog):
    """Progress lines every PROGRESS_INTERVAL seconds, captured: ``lines(prefix)`` returns the messages
    logged so far that start with ``prefix``. Airflow replaces the root handlers when it configures its
    logging, so that happens first and caplog's handler goes back on the root logger."""
    import logging

    import airflow.sdk  # noqa: F401

    monkeypatch.setenv("RETL_PROGRESS_LOG_SECONDS", str(PROGRESS_INTERVAL))
    root = logging.getLogger()
    root.addHandler(caplog.handler)
    caplog.set_level(logging.INFO)

    def lines(prefix: str) -> list[str]:
        return [r.getMessage() for r in caplog.records if r.getMessage().startswith(prefix)]

    yield lines
    root.removeHandler(caplog.handler)


@pytest.fixture(autouse=True)
def _no_heartbeat_outlives_its_test():
    """A test that leaves a lease held (a crashed holder) must not leave its renewal beating in the next
    test's waits (one pytest process; in Airflow a load always releases its lease)."""
    yield
    progress = sys.modules.get("reverse_etl.progress")
    if progress is not None:
        progress._heartbeats.clear()
