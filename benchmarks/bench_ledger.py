"""Benchmark: plan + record a million records in the ledger, on SQLite and on PostgreSQL (goal ≤ 30 s each).

What runs
    ``--records`` synthetic validated customers (a Parquet file as the validate task stages it, written before
    the clock starts) go through the load operator's own ledger steps: ``SyncLoadOperator._plan`` (read the
    chunk, ``Ledger.lookup``, build and hash each payload, skip the unchanged, ``Ledger.plan``) and
    ``SyncLoadOperator._deliver`` (pending pages, batches, ``mark_in_flight`` for the batches sent as vendor
    jobs, ``apply`` with the answers) against a vendor stub that answers at once: every other batch of
    ``--batch`` records is an async job (in flight, then delivered), the others are delivered at once. So the
    time is the engine's and the store's, not a vendor's.

    Three loads in a fresh store: the first (every record planned and delivered), a rerun with the same rows
    (every record looked up, hashed and skipped), and a rerun with 10 % of the rows changed (those planned
    and delivered again). On SQLite (a temporary file) and, when ``--postgres-dsn`` or
    RETL_TEST_POSTGRES_DSN is given, on PostgreSQL (a scratch database created and dropped here).

Baseline
    The same number of rows inserted into a table like ``sync_ledger`` (same columns, primary key and status
    index) with the driver's fastest path, in the same run: one ``executemany`` in one transaction on
    SQLite, one ``COPY`` on PostgreSQL. The ratio says how far the ledger is from writing its rows once.

Floor
    The row writes and reads a first load requires, through the ledger's own statements and nothing else, in
    a fresh store of its own: per chunk a lookup and the plan (``pending`` with a payload of the same size),
    then the pending pages read back and, per batch, ``mark_in_flight`` (every other batch) and ``apply``
    with its events, each in its own transaction as delivery commits them. No rows read from Parquet, no
    payload built or hashed, no batching: what is left when the operator's own work costs nothing.

Floor without the status index (PostgreSQL only)
    The same floor in a store whose ``sync_ledger`` has no ``ix_sync_ledger_status`` and a fillfactor of
    50, so the record phase's updates (``status`` changes) are HOT: PostgreSQL rewrites the row on its own
    page and touches no index. It is not the engine's schema: without that index the Reverse ETL page's
    failing records, each load's in-flight and pending pages and ``count_status`` read every row of the
    sync. It measures what the status index costs the floor.

Writes ``benchmarks/results/ledger.json``.

    .venv/bin/python benchmarks/bench_ledger.py [--records 1000000 --batch 1000 --postgres-dsn DSN]
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import os
import sqlite3
import sys
import tempfile
import time
import uuid
from pathlib import Path
from types import SimpleNamespace

REPO = Path(__file__).resolve().parents[1]
for _path in (str(REPO / "plugins"), str(REPO), str(REPO / "benchmarks")):
    if _path not in sys.path:
        sys.path.insert(0, _path)

GOAL_SECONDS = 30.0
SCENARIOS = ("first", "rerun_unchanged", "rerun_10pct_changed")
LABELS = {
    "first": "first load",
    "rerun_unchanged": "rerun, unchanged",
    "rerun_10pct_changed": "rerun, 10 % changed",
}
BASELINE_DDL = """
CREATE TABLE baseline_ledger (
    destination VARCHAR(64) NOT NULL, entity VARCHAR(64) NOT NULL, record_key VARCHAR(255) NOT NULL,
    operation VARCHAR(8) NOT NULL, status VARCHAR(16) NOT NULL, payload_hash VARCHAR(64),
    delivered_hash VARCHAR(64), payload TEXT, vendor_ref VARCHAR(128), error TEXT,
    attempts INTEGER NOT NULL, first_run_id VARCHAR(255), last_run_id VARCHAR(255),
    updated_at TIMESTAMP NOT NULL, PRIMARY KEY (destination, entity, record_key))
"""
BASELINE_INDEX = (
    "CREATE INDEX ix_baseline_status ON baseline_ledger (destination, entity, status, record_key)"
)


def _say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def write_rows(path: Path, records: int, changed_every: int = 0) -> Path:
    """Validated customers as the validate task stages them; every ``changed_every``-th one changed."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    keys = [f"cust-{i:08d}" for i in range(records)]
    points = [i % 997 + (1 if changed_every and i % changed_every == 0 else 0) for i in range(records)]
    created = dt.datetime(2026, 1, 1)
    table = pa.table(
        {
            "_key": keys,
            "source_id": keys,
            "email": [f"{k}@example.com" for k in keys],
            "name": [f"Customer {i}" for i in range(records)],
            "address__city": [("Paris", "Lyon", "Nantes", "Lille")[i % 4] for i in range(records)],
            "address__country": ["FR"] * records,
            "metadata__loyalty_points": points,
            "metadata__segment": [("new", "regular", "vip")[i % 3] for i in range(records)],
            "created_at": [created + dt.timedelta(minutes=i) for i in range(records)],
        }
    )
    pq.write_table(table, path)
    return path


def _operator(batch: int):
    from reverse_etl.ledger import DELIVERED, Outcome
    from reverse_etl.operators.load import SyncLoadOperator

    class StubVendor:
        stats = SimpleNamespace(requests=0, throttled=0)

        def __init__(self, _conn_id=None):
            self.sent = 0

    class BenchLoad(SyncLoadOperator):
        destination, entity, hook_class = "bench", "customers", StubVendor
        batch_size = batch

        def send_upserts(self, hook, records, context):
            hook.sent += 1
            if hook.sent % 2:  # an async job: recorded in flight, answered by collect
                return f"job-{hook.sent}"
            return [Outcome(p.key, DELIVERED) for p in records]

        def collect(self, hook, job_ref, records):
            return [Outcome(p.key, DELIVERED) for p in records]

    return BenchLoad(task_id="bench_load", manifest={}), StubVendor()


def load(url: str, rows: Path, run_id: str, batch: int) -> dict:
    """One load's ledger work, timed: plan (lookup, hash, plan) then record (in flight, apply)."""
    from reverse_etl.ledger import Ledger

    op, hook = _operator(batch)
    op._dry_run_held = set()
    ledger = Ledger(op.destination, op.entity, run_id, url=url)
    context = {"params": {}, "run_id": run_id}
    counts = {k: 0 for k in ("unchanged_skipped", "to_send", "to_delete", "deletes_skipped", "sent")}
    counts.update(deleted=0, failed=0, previously_failed=0)
    manifest = {"valid_path": str(rows)}
    cpu = time.process_time()
    started = time.perf_counter()
    op._plan(ledger, manifest, counts, context, dry_run=False, full_resync=False)
    planned = time.perf_counter()
    answered = op._deliver(hook, ledger, counts, context)
    done = time.perf_counter()
    return {
        "seconds": round(done - started, 2),
        # this process's CPU (on SQLite all the work; on PostgreSQL the client's): steadier than the seconds
        # on a machine shared with other work
        "cpu_seconds": round(time.process_time() - cpu, 2),
        "plan_seconds": round(planned - started, 2),
        "record_seconds": round(done - planned, 2),
        "to_send": counts["to_send"],
        "unchanged": counts["unchanged_skipped"],
        "answered": answered,
        "sent": counts["sent"],
    }


HOT_DDL = ("DROP INDEX ix_sync_ledger_status", "ALTER TABLE sync_ledger SET (fillfactor = 50)")


def floor(url: str, records: int, batch: int, *, hot: bool = False) -> dict:
    """The store's share of a first load alone (see the module's docstring), timed; ``hot``: in a
    PostgreSQL store changed by ``HOT_DDL`` (the floor without the status index)."""
    from sqlalchemy import text

    from reverse_etl import settings
    from reverse_etl.ledger import DELIVERED, UPSERT, Ledger, Outcome, Planned
    from reverse_etl.store import init_store, open_store

    init_store(url)
    if hot:
        with open_store(url)[0].begin() as conn:
            for statement in HOT_DDL:
                conn.execute(text(statement))
    ledger = Ledger("bench", "floor", "floor-1", url=url)
    chunk = settings.chunk_rows()
    keys = [f"cust-{i:08d}" for i in range(records)]
    payload = (
        '{"address":{"city":"Paris","country":"FR"},"created_at":"2026-01-01T00:00:00Z",'
        '"email":"cust-00000000@example.com","metadata":{"loyalty_points":1,"segment":"new"},'
        '"name":"Customer 0","source_id":"cust-00000000"}'
    )
    digest = "0" * 64
    started = time.perf_counter()
    for i in range(0, records, chunk):
        part = keys[i : i + chunk]
        ledger.lookup(part)
        ledger.plan([Planned(key, UPSERT, digest, payload) for key in part])
    planned = time.perf_counter()
    n = 0
    for page in ledger.iter_status("pending", chunk):
        for j in range(0, len(page), batch):
            part = [p.key for p in page[j : j + batch]]
            n += 1
            if n % 2:
                ledger.mark_in_flight(part, f"job-{n}")
            ledger.apply([Outcome(key, DELIVERED) for key in part])
    done = time.perf_counter()
    return {
        "seconds": round(done - started, 2),
        "plan_seconds": round(planned - started, 2),
        "record_seconds": round(done - planned, 2),
    }


def check(url: str, records: int, expected_events: int) -> None:
    """Nothing lost, nothing doubled: every record delivered once per send, one event per answer."""
    from sqlalchemy import func, select

    from reverse_etl.store import open_store

    engine, ledger, events, _, _ = open_store(url)
    with engine.connect() as conn:
        by_status = dict(conn.execute(select(ledger.c.status, func.count()).group_by(ledger.c.status)).all())
        n_events = conn.execute(select(func.count()).select_from(events)).scalar_one()
    if by_status != {"delivered": records} or n_events != expected_events:
        raise SystemExit(f"ledger check failed: {by_status}, {n_events} events (expected {expected_events})")


def _baseline_rows(records: int):
    now = dt.datetime(2026, 12, 1)
    payload = '{"address":{"city":"Paris","country":"FR"},"email":"cust-00000000@example.com"}'
    digest = "0" * 64
    for i in range(records):
        key = f"cust-{i:08d}"
        yield (
            "bench",
            "customers",
            key,
            "upsert",
            "delivered",
            digest,
            digest,
            payload,
            None,
            None,
            1,
            "r",
            "r",
            now,
        )


def baseline_sqlite(folder: Path, records: int) -> float:
    db = sqlite3.connect(folder / "baseline.db")
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute(BASELINE_DDL)
    db.execute(BASELINE_INDEX)
    started = time.perf_counter()
    with db:
        db.executemany(f"INSERT INTO baseline_ledger VALUES ({', '.join('?' * 14)})", _baseline_rows(records))
    seconds = time.perf_counter() - started
    db.close()
    return round(seconds, 2)


def baseline_postgres(dsn: str, records: int) -> float:
    import psycopg2

    conn = psycopg2.connect(dsn)
    with conn, conn.cursor() as cur:
        cur.execute(BASELINE_DDL)
        cur.execute(BASELINE_INDEX)
    started = time.perf_counter()
    with conn, conn.cursor() as cur:
        buffer = io.StringIO()
        for row in _baseline_rows(records):
            buffer.write("\t".join(r"\N" if v is None else str(v) for v in row) + "\n")
        buffer.seek(0)
        cur.copy_expert("COPY baseline_ledger FROM STDIN", buffer)
    seconds = time.perf_counter() - started
    conn.close()
    return round(seconds, 2)


def scratch_postgres(dsn: str):
    """A fresh database on the server of ``dsn``: ``(psycopg2 DSN, SQLAlchemy URL, drop)``."""
    from urllib.parse import urlsplit, urlunsplit

    import psycopg2

    name = f"retl_bench_ledger_{uuid.uuid4().hex[:8]}"
    admin = psycopg2.connect(dsn)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    parts = urlsplit(dsn)
    scratch = urlunsplit(parts._replace(path=f"/{name}"))

    def drop() -> None:
        from reverse_etl.store import _ENGINES

        for url in [u for u in _ENGINES if name in u]:
            _ENGINES.pop(url)[0].dispose()
        with admin.cursor() as cur:
            cur.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))
            cur.execute(f'DROP DATABASE IF EXISTS "{name}"')
        admin.close()

    return scratch, scratch.replace("postgresql://", "postgresql+psycopg2://", 1), drop


def run_store(store: str, url: str, runs: list[tuple[Path, str]], records: int, batch: int) -> dict:
    from reverse_etl.store import init_store

    init_store(url)
    results = {}
    events = 0
    for scenario, (path, run_id) in zip(SCENARIOS, runs, strict=True):
        _say(f"{store}: {scenario} ...")
        results[scenario] = load(url, path, run_id, batch)
        events += results[scenario]["sent"]
        _say(f"{store}: {scenario} {results[scenario]}")
    check(url, records, events)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=1000, help="records per vendor batch (apply)")
    parser.add_argument("--postgres-dsn", default=os.environ.get("RETL_TEST_POSTGRES_DSN"))
    parser.add_argument("--stores", default="sqlite,postgres", help="comma-separated: sqlite, postgres")
    from results import add_results_option

    add_results_option(parser)
    args = parser.parse_args()
    os.environ.setdefault("RETL_PROGRESS_LOG_SECONDS", "3600")

    from results import exit_status, figure, write_results

    stores = [s for s in args.stores.split(",") if s and (s != "postgres" or args.postgres_dsn)]
    figures, details = [], {}
    with tempfile.TemporaryDirectory(prefix="bench-ledger-") as tmp:
        folder = Path(tmp)
        _say(f"writing {args.records:,} rows (and 10 % changed) ...")
        first = write_rows(folder / "rows.parquet", args.records)
        changed = write_rows(folder / "rows-changed.parquet", args.records, changed_every=10)
        runs = [(first, "run-1"), (first, "run-2"), (changed, "run-3")]
        for store in stores:
            if store == "sqlite":
                url, drop = f"sqlite:///{folder / 'state.db'}", None
                floor_url, floor_drop, hot_drop = f"sqlite:///{folder / 'floor.db'}", None, None
                baseline = baseline_sqlite(folder, args.records)
            else:
                dsn, url, drop = scratch_postgres(args.postgres_dsn)
                _, floor_url, floor_drop = scratch_postgres(args.postgres_dsn)
                _, hot_url, hot_drop = scratch_postgres(args.postgres_dsn)
                baseline = None
            try:
                if store == "postgres":
                    baseline = baseline_postgres(dsn, args.records)
                _say(f"{store}: baseline insert of {args.records:,} rows {baseline} s")
                results = run_store(store, url, runs, args.records, args.batch)
                store_floor = floor(floor_url, args.records, args.batch)
                _say(f"{store}: floor (the first load's statements alone) {store_floor}")
                if store == "postgres":
                    results["floor_hot"] = floor(hot_url, args.records, args.batch, hot=True)
                    _say(f"{store}: floor without the status index (HOT updates) {results['floor_hot']}")
            finally:
                for dropping in (drop, floor_drop, hot_drop):
                    if dropping:
                        dropping()
            details[store] = {"baseline_seconds": baseline, **results, "floor": store_floor}
            for scenario in SCENARIOS:
                seconds = results[scenario]["seconds"]
                met = seconds <= GOAL_SECONDS if args.records >= 1_000_000 else None
                figures.append(
                    figure(
                        f"{store}: plan + record {args.records:,} records, {LABELS[scenario]}",
                        seconds,
                        unit="s",
                        baseline=baseline,
                        goal=f"≤ {GOAL_SECONDS:.0f} s",
                        met=met,
                        headline=scenario == "first",  # the README shows first loads; reruns in docs
                    )
                )
            figures.append(
                figure(
                    f"{store}: the first load's ledger statements alone (floor), {args.records:,} records",
                    store_floor["seconds"],
                    unit="s",
                    baseline=baseline,
                )
            )
            if "floor_hot" in results:
                figures.append(
                    figure(
                        f"{store}: the same floor without the status index (HOT updates; not the engine's "
                        f"schema: the page's failures and each load's pages would scan), {args.records:,} records",
                        results["floor_hot"]["seconds"],
                        unit="s",
                        baseline=baseline,
                    )
                )
    print(f"{'figure':70} {'s':>8} {'baseline':>9} {'ratio':>6} {'vs 30 s':>8}")
    for f in figures:
        print(
            f"{f['what']:70} {f['value']:8.2f} {f['baseline']:9.2f} {f['ratio'] or 0:6.1f} "
            f"{f['value'] / GOAL_SECONDS:8.2f}"
        )
    extra = {"records": args.records, "batch": args.batch, "details": details}
    path = write_results("ledger", figures, args.results, **extra)
    _say(f"wrote {path}")
    return exit_status(figures)


if __name__ == "__main__":
    sys.exit(main())
