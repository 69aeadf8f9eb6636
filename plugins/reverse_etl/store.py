"""The state store: where it is, its tables, and its identity.

The store is never created by a delivery. ``init_store`` (``python -m reverse_etl.cli init``) creates it and
writes an identity row naming the deployment (``RETL_DEPLOYMENT``). Every task opens it through ``open_store``,
which refuses a store that is missing, empty, corrupt, from an earlier version or from another deployment:
against such a store the ledger would say "never sent" and every record would go out again.
"""

from __future__ import annotations

import datetime as dt
import os
import threading
import uuid
from typing import Any

from reverse_etl import settings
from reverse_etl.errors import ConfigError, StateStoreError, StateStoreUnavailable

SCHEMA_VERSION = 2  # 2: sync_request_minutes (the rate budget per account and minute)
INIT_COMMAND = "python -m reverse_etl.cli init"
_ENGINES: dict[str, Any] = {}
_ENGINES_LOCK = threading.Lock()
LOST_ADVICE = (
    "Nothing was sent. If this deployment is new, create the store with `{init}`. If the store was lost, "
    "create a new one with `{init}`, then run `python -m reverse_etl.cli reconcile DESTINATION ENTITY` "
    "for each sync before the next live run (docs/operations.md, 'Recovering a lost state store'): without "
    "it every record would be sent again."
)


def _tables(metadata):
    from sqlalchemy import Column, DateTime, Index, Integer, String, Table, Text

    ledger = Table(
        "sync_ledger",
        metadata,
        Column("destination", String(64), primary_key=True),
        Column("entity", String(64), primary_key=True),
        Column("record_key", String(255), primary_key=True),
        Column("operation", String(8), nullable=False),
        Column("status", String(16), nullable=False),
        Column("payload_hash", String(64)),
        Column("delivered_hash", String(64)),
        Column("payload", Text),
        Column("vendor_ref", String(128)),
        Column("error", Text),
        Column("attempts", Integer, nullable=False, default=0),
        Column("first_run_id", String(255)),
        Column("last_run_id", String(255)),
        Column("updated_at", DateTime, nullable=False),
        Index("ix_sync_ledger_status", "destination", "entity", "status", "record_key"),
    )
    events = Table(
        "sync_events",
        metadata,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("destination", String(64), nullable=False),
        Column("entity", String(64), nullable=False),
        Column("record_key", String(255), nullable=False),
        Column("run_id", String(255)),
        Column("status", String(16), nullable=False),
        Column("detail", Text),
        Column("at", DateTime, nullable=False),
        Index("ix_sync_events_key", "destination", "entity", "record_key"),
    )
    runs = Table(
        "sync_runs",
        metadata,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("dag_id", String(255), nullable=False),
        Column("run_id", String(255), nullable=False),
        Column("destination", String(64), nullable=False),
        Column("entity", String(64), nullable=False),
        Column("try_number", Integer),
        Column("window_start", String(40)),
        Column("window_end", String(40)),
        Column("dry_run", Integer, nullable=False, default=0),
        Column("status", String(16), nullable=False),
        Column("started_at", DateTime, nullable=False),
        Column("finished_at", DateTime),
        Column("report", Text),
        Index("ix_sync_runs_run", "dag_id", "run_id"),
        # the Reverse ETL page: the latest runs of a sync, and of a destination (reverse_etl.ui.queries)
        Index("ix_sync_runs_sync", "destination", "entity", "id"),
        Index("ix_sync_runs_destination", "destination", "id"),
    )
    leases = Table(
        "sync_leases",
        metadata,
        Column("destination", String(64), primary_key=True),
        Column("entity", String(64), primary_key=True),
        Column("holder", String(512), nullable=False),
        Column("expires_at", DateTime, nullable=False),
    )
    identity = Table(
        "sync_store",
        metadata,
        Column("id", Integer, primary_key=True),
        Column("store_id", String(36), nullable=False),
        Column("deployment", String(128), nullable=False),
        Column("schema_version", Integer, nullable=False),
        Column("created_at", DateTime, nullable=False),
    )
    # Requests and 429s per vendor account (the rate bucket, ``hook.limiter.account``) and UTC minute, added
    # to by every task that sends (reverse_etl.budget); the Reverse ETL page reads an account's latest
    # minutes through the primary key (account, minute).
    request_minutes = Table(
        "sync_request_minutes",
        metadata,
        Column("account", String(128), primary_key=True),
        Column("minute", DateTime, primary_key=True),
        Column("requests", Integer, nullable=False, default=0),
        Column("throttled", Integer, nullable=False, default=0),
        Column("limit_per_minute", Integer),
        sqlite_with_rowid=False,  # SQLite keeps the rows in key order: an account's minutes are one range
    )
    return ledger, events, runs, leases, request_minutes, identity


def utc_now() -> dt.datetime:
    """Now in UTC, naive: the store's timestamp columns hold UTC without a zone (SQLite has none)."""
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def state_store_url(conn_id: str | None = None) -> str:
    """SQLAlchemy URL of the state store from its Airflow connection (``sqlite`` or ``postgres``)."""
    from airflow.sdk import BaseHook

    conn_id = conn_id or settings.state_conn_id()
    try:
        conn = BaseHook.get_connection(conn_id)
    except Exception as exc:
        raise ConfigError(
            f"State store connection '{conn_id}' is not defined. Set AIRFLOW_CONN_{conn_id.upper()} "
            "(a SQLite file or a PostgreSQL database; see docs/configuration.md)."
        ) from exc
    if conn.conn_type == "sqlite":
        path = conn.host or conn.extra_dejson.get("path")
        if not path:
            raise ConfigError(f"State store connection '{conn_id}' needs the SQLite file path in 'host'.")
        return f"sqlite:///{path}"
    if conn.conn_type in ("postgres", "postgresql"):
        from sqlalchemy.engine import URL

        return URL.create(
            "postgresql+psycopg2",
            username=conn.login or "postgres",
            password=conn.password or None,
            host=conn.host or "127.0.0.1",
            port=conn.port or 5432,
            database=conn.schema or "postgres",
        ).render_as_string(hide_password=False)
    raise ConfigError(
        f"State store connection '{conn_id}' has type '{conn.conn_type}'; use sqlite or postgres."
    )


def describe(url: str) -> str:
    """The store as an operator knows it: the SQLite path, or the database URL without its password."""
    if url.startswith("sqlite:///"):
        return url.removeprefix("sqlite:///")
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def _sqlite_path(url: str) -> str | None:
    return url.removeprefix("sqlite:///") if url.startswith("sqlite") else None


# WAL lets parallel tasks read while one writes. synchronous=NORMAL in WAL: a commit is durable once the WAL
# is synced at the next checkpoint; a power cut (not a crash of the process) can lose the last commits, never
# corrupt the store, and a lost commit is a plan or answer the next run makes again (resume). The page cache
# (64 MB) keeps a million-record ledger's indexes in memory while a load rewrites them; checkpoints every
# 10,000 pages (40 MB of WAL instead of 4 MB) copy each hot page back once instead of ten times.
SQLITE_PRAGMAS = (
    "journal_mode=WAL",
    "synchronous=NORMAL",
    "cache_size=-65536",
    "wal_autocheckpoint=10000",
)


def _create_engine(url: str, *, create: bool):
    from sqlalchemy import create_engine, event

    path = _sqlite_path(url)
    if path is None:
        return create_engine(url, pool_pre_ping=True)
    if create:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    import sqlite3

    mode = "rwc" if create else "rw"  # "rw": a store deleted under a running deployment is not re-created

    def connect():
        return sqlite3.connect(f"file:{path}?mode={mode}", uri=True, timeout=60, check_same_thread=False)

    engine = create_engine(url, creator=connect)  # the file URL keeps SQLAlchemy's file-database pooling

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_conn, _record):
        cur = dbapi_conn.cursor()
        for pragma in SQLITE_PRAGMAS:
            cur.execute(f"PRAGMA {pragma}")
        cur.close()

    return engine


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _identity(engine, url: str) -> dict | None:
    """The store's identity row, None when the store has no reverse-ETL tables at all."""
    from sqlalchemy import inspect, text
    from sqlalchemy.exc import DatabaseError, OperationalError

    where = describe(url)
    try:
        with engine.connect() as conn:
            names = set(inspect(conn).get_table_names())
            if "sync_store" not in names:
                if "sync_ledger" in names:
                    raise StateStoreError(
                        f"State store {where} was created by an earlier version of this pipeline (it has no "
                        f"identity). Run `{INIT_COMMAND}` once to adopt it: every record in it is kept."
                    )
                return None
            row = conn.execute(
                text("SELECT store_id, deployment, schema_version, created_at FROM sync_store WHERE id = 1")
            ).first()
    except StateStoreError:
        raise
    except OperationalError as exc:
        if _sqlite_path(url) is None:
            raise StateStoreUnavailable(
                f"Cannot reach the state store {where} (connection '{settings.state_conn_id()}'): "
                f"{_first_line(exc)}. The task will retry; check that the database is up."
            ) from None
        raise StateStoreError(
            f"State store {where} cannot be opened: {_first_line(exc)}. Check the file's permissions."
        ) from None
    except DatabaseError as exc:
        raise StateStoreError(
            f"State store {where} is not a readable database ({_first_line(exc)}). Restore it from a "
            f"backup; or move it aside, create a new one with `{INIT_COMMAND}` and run `reconcile` for "
            "each sync before the next live run."
        ) from None
    return row._asdict() if row else None


def open_store(url: str, *, check_deployment: bool = True):
    """``(engine, ledger, events, runs, leases)`` of an initialised store; ``StateStoreError`` otherwise.

    Checked on every open (one small query): a store deleted or swapped under a running deployment is
    refused by the next task, not only by the next process.
    """
    return _open(url, check_deployment)[:5]


def open_request_minutes(url: str):
    """``(engine, sync_request_minutes)`` of an initialised store, checked as ``open_store`` checks it."""
    entry = _open(url, True)
    return entry[0], entry[5]


def _open(url: str, check_deployment: bool) -> tuple:
    from sqlalchemy import MetaData

    where = describe(url)
    path = _sqlite_path(url)
    if path is not None:
        if not os.path.exists(path):
            raise StateStoreError(
                f"State store {where} (connection '{settings.state_conn_id()}') does not exist. "
                + LOST_ADVICE.format(init=INIT_COMMAND)
            )
        if os.path.getsize(path) == 0:
            raise StateStoreError(
                f"State store {where} is an empty file. " + LOST_ADVICE.format(init=INIT_COMMAND)
            )
    with _ENGINES_LOCK:
        if url not in _ENGINES:
            metadata = MetaData()
            _ENGINES[url] = (_create_engine(url, create=False), *_tables(metadata)[:-1])
        entry = _ENGINES[url]
    identity = _identity(entry[0], url)
    if identity is None:
        raise StateStoreError(
            f"State store {where} has no reverse-ETL tables (an empty database, or the wrong one). "
            + LOST_ADVICE.format(init=INIT_COMMAND)
        )
    if identity["schema_version"] > SCHEMA_VERSION:
        raise StateStoreError(
            f"State store {where} has schema version {identity['schema_version']}, newer than this pipeline's "
            f"({SCHEMA_VERSION}): upgrade the pipeline, or point connection '{settings.state_conn_id()}' "
            "at the right store."
        )
    if identity["schema_version"] < SCHEMA_VERSION:
        raise StateStoreError(
            f"State store {where} needs an upgrade: run `{INIT_COMMAND}` (it keeps every record)."
        )
    ours = settings.deployment()
    if check_deployment and identity["deployment"] != ours:
        raise StateStoreError(
            f"State store {where} belongs to deployment '{identity['deployment']}', but this one runs as "
            f"'{ours}' (RETL_DEPLOYMENT). Point connection '{settings.state_conn_id()}' at this deployment's "
            f"store; if it is the same deployment renamed, set RETL_DEPLOYMENT='{identity['deployment']}'."
        )
    return entry


def init_store(url: str | None = None, deployment: str | None = None) -> dict:
    """Create the store (tables and identity), or adopt/upgrade an existing one; idempotent.

    Refuses a store that belongs to another deployment. Returns what it found and did.
    """
    from sqlalchemy import MetaData

    url = url or state_store_url()
    deployment = deployment or settings.deployment()
    where = describe(url)
    engine = _create_engine(url, create=True)
    try:
        metadata = MetaData()
        tables = _tables(metadata)
        identity_table = tables[-1]
        try:
            current = _identity(engine, url)
        except StateStoreError as exc:
            if "earlier version" not in str(exc):
                raise
            current, adopted = None, True
        else:
            adopted = False
        if current and current["deployment"] != deployment:
            raise StateStoreError(
                f"State store {where} belongs to deployment '{current['deployment']}', not '{deployment}'. "
                "Use another store for this deployment, or set RETL_DEPLOYMENT to the store's deployment."
            )
        from sqlalchemy import func, select

        metadata.create_all(engine)
        # create_all skips the indexes of tables that exist: an index added in a later version (e.g. the
        # Reverse ETL page's) reaches an existing store here
        for table in tables:
            for index in table.indexes:
                index.create(engine, checkfirst=True)
        with engine.begin() as conn:
            records = conn.execute(select(func.count()).select_from(tables[0])).scalar_one()
            if current is None:
                store_id = str(uuid.uuid4())
                conn.execute(
                    identity_table.insert().values(
                        id=1,
                        store_id=store_id,
                        deployment=deployment,
                        schema_version=SCHEMA_VERSION,
                        created_at=utc_now(),
                    )
                )
                action = "adopted" if adopted else "initialised"
            else:
                store_id = current["store_id"]
                action = "unchanged"
                if current["schema_version"] < SCHEMA_VERSION:
                    conn.execute(identity_table.update().values(schema_version=SCHEMA_VERSION))
                    action = "upgraded"
    finally:
        engine.dispose()
    with _ENGINES_LOCK:
        _ENGINES.pop(url, None)
    return {
        "store": where,
        "action": action,
        "deployment": deployment,
        "store_id": store_id,
        "records": records,
    }
