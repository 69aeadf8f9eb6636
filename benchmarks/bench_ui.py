"""Benchmark: the Reverse ETL page's endpoints on a big state store (1M ledger rows by default).

What is measured
    A SQLite store created by ``init_store`` (so with every index of ``store._tables``) is filled with plain
    SQL: ``--records`` ledger rows over 4 destinations x 2 entities, one event per record plus one more for
    each failing one, 2 % failed (40 distinct vendor messages), 1 % rejected, ``--runs`` load reports
    per sync, and the rate budget: ``--accounts`` vendor accounts with requests in every minute of
    ``--minute-days`` days (a year of minutes for 5 accounts: 2.6M rows of ``sync_request_minutes``, some
    with 429s). Each endpoint of ``reverse_etl.ui.api`` is then called ``--repeat`` times through FastAPI's
    TestClient (HTTP handling, JSON, the queries; Airflow's auth check is replaced by a no-op: it does not
    depend on the store's size) and its median time is divided by the median time of a baseline measured in
    the same run on the same store: ``SELECT count(*) FROM sync_ledger``, one pass over the ledger's smallest
    index.

    Every SQL statement the endpoints run is also shown with SQLite's EXPLAIN QUERY PLAN: a line with
    "SCAN" on a table (no index) is flagged and makes the exit status 1.

How to read it
    The baseline grows with the ledger (it reads every entry of an index); the endpoints must not. So the
    same store is built a second time with a tenth of the ledger (``GROWTH``) around as many failing
    records, the same runs and the same account minutes, and each route's time on the big store is shown
    over its time on the small one: ``count(*)`` grows about 10x, a route that reads only what it shows
    about 1x. Goal (at 1M ledger rows or more): the route that grew most grew less than 2x. Each endpoint
    has a floor of a few ms (the store's identity check on every open, HTTP and JSON), so its ratio to
    ``count(*)`` is shown too, for scale only.

    The figures go to benchmarks/results/ui.json, with the table scans (goal 0). A quick run (the tests):
    ``--records 2000 --runs 5 --repeat 3 --accounts 1 --minute-days 1``.

    .venv/bin/python benchmarks/bench_ui.py [--records 1000000 --runs 200 --accounts 5 --minute-days 365]
        [--results DIR]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

from results import add_results_option, figure, finish, short

REPO = Path(__file__).resolve().parents[1]
MILLION = 1_000_000
SYNCS = [
    (d, e) for d in ("voucherify", "salesfire", "connectif", "salesmanago") for e in ("customers", "orders")
]


def _paths() -> None:
    for path in (str(REPO / "plugins"), str(REPO)):
        if path not in sys.path:
            sys.path.insert(0, path)


def fill(path: Path, records: int, runs: int, stride: int = 100) -> None:
    """Ledger rows, events and load reports; 2 of every ``stride`` records failed (40 messages), 1 rejected."""
    now = dt.datetime(2026, 11, 1).isoformat(sep=" ")
    per_sync = records // len(SYNCS)
    db = sqlite3.connect(path)
    with db:
        for destination, entity in SYNCS:
            rows, events = [], []
            for i in range(per_sync):
                key = f"{i:09d}"
                if i % stride < 2:
                    status, error = "failed", f"422 field {i % 40} is invalid"
                elif i % stride == 2:
                    status, error = "rejected", "email must be a valid address"
                else:
                    status, error = "delivered", None
                rows.append(
                    (
                        destination,
                        entity,
                        key,
                        "upsert",
                        status,
                        "h",
                        "h",
                        None,
                        None,
                        error,
                        1,
                        "r0",
                        "r0",
                        now,
                    )
                )
                events.append((destination, entity, key, "r0", status, error, now))
                if error:
                    events.append((destination, entity, key, "r1", status, error, now))
            db.executemany("INSERT INTO sync_ledger VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)", rows)
            db.executemany(
                "INSERT INTO sync_events (destination, entity, record_key, run_id, status, detail, at) "
                "VALUES (?,?,?,?,?,?,?)",
                events,
            )
            reports = []
            for n in range(runs):
                report = {
                    "extracted": 100 + n,
                    "valid": 99,
                    "rejected": 1,
                    "sent": 90,
                    "failed": 2,
                    "requests": 12,
                    "throttled": n % 3,
                    "seconds": 1.0,
                    "quarantine": None,
                }
                reports.append(
                    (
                        f"{destination}_sync",
                        f"scheduled__{n:05d}",
                        destination,
                        entity,
                        1,
                        "2026-10-31",
                        "2026-11-01",
                        0,
                        "success",
                        now,
                        now,
                        json.dumps(report),
                    )
                )
            db.executemany(
                "INSERT INTO sync_runs (dag_id, run_id, destination, entity, try_number, window_start, "
                "window_end, dry_run, status, started_at, finished_at, report) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                reports,
            )
    db.execute("ANALYZE")
    db.close()


def fill_minutes(path: Path, accounts: int, days: int) -> int:
    """Every minute of ``days`` days up to 2026-11-01 for each account: requests up to the limit (100 per
    minute), a 429 in one minute of 97."""
    start = dt.datetime(2026, 11, 1) - dt.timedelta(days=days)
    count = days * 24 * 60
    db = sqlite3.connect(path)
    with db:
        for a in range(accounts):
            account = f"vendor{a}_vendor{a}_default"
            db.executemany(
                "INSERT INTO sync_request_minutes (account, minute, requests, throttled, limit_per_minute) "
                "VALUES (?,?,?,?,?)",
                (
                    (
                        account,
                        (start + dt.timedelta(minutes=m)).isoformat(sep=" "),
                        1 + (m * 37 + a) % 100,
                        int(m % 97 == 0),
                        100,
                    )
                    for m in range(count)
                ),
            )
    db.execute("ANALYZE")
    db.close()
    return accounts * count


def median_seconds(call, repeat: int) -> float:
    call()  # warm: the first call opens the engine and fills SQLite's page cache
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


ENDPOINTS = {  # short names: the README's table shows the one that grew most
    "syncs": "/api/syncs?limit=30",
    "record lookup": "/api/records/voucherify/customers/{middle}",
    "failures by message": "/api/failures/voucherify/customers",
    "rate budget": "/api/budget?minutes=360",
}
# The small store holds a tenth of the ledger with as many failing records, runs and account minutes: what
# the routes read is the same, only the ledger around it grows. count(*) grows about 10x; a route that reads
# only what it shows should not grow (its ms are mostly fixed: the store check, HTTP, JSON). Under 2x leaves
# room for noise on a few ms and fails any route that reads the ledger through.
GROWTH = 10
MAX_GROWTH = 2.0


def measure(path: Path, records: int, repeat: int) -> dict[str, float]:
    """Median seconds of each route and of the baseline (``baseline``) on one store."""
    from fastapi.testclient import TestClient

    from reverse_etl.ui.api import create_app

    app = create_app(f"sqlite:///{path}")
    app.dependency_overrides[app.state.read_runs] = lambda: None
    client = TestClient(app)
    db = sqlite3.connect(path)
    try:
        times = {
            "baseline": median_seconds(
                lambda: db.execute("SELECT count(*) FROM sync_ledger").fetchone(), repeat
            )
        }
    finally:
        db.close()
    middle = f"{records // len(SYNCS) // 2:09d}"
    for name, route in ENDPOINTS.items():
        endpoint = route.format(middle=middle)

        def call(endpoint=endpoint):
            answer = client.get(endpoint)
            assert answer.status_code == 200, answer.text

        times[name] = median_seconds(call, repeat)
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=200, help="load reports per sync")
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--accounts", type=int, default=5, help="vendor accounts with a rate budget")
    parser.add_argument("--minute-days", type=int, default=365, help="days of minutes per account")
    add_results_option(parser)
    args = parser.parse_args(argv)
    _paths()
    import os

    from sandbox.env import airflow_env

    home = Path(tempfile.mkdtemp(prefix="retl-bench-ui-"))
    os.environ.update(airflow_env(home))
    from reverse_etl.store import init_store

    small_records = args.records // GROWTH
    stores = {}
    for name, records, stride in (("big", args.records, 100), ("small", small_records, 100 // GROWTH)):
        path = home / f"state-{name}.db"
        init_store(f"sqlite:///{path}")
        started = time.perf_counter()
        fill(path, records, args.runs, stride)
        minutes = fill_minutes(path, args.accounts, args.minute_days)
        print(
            f"filled {records:,} ledger rows ({2 * records // stride:,} failed), {args.runs * len(SYNCS):,} "
            f"runs, {minutes:,} account minutes in {time.perf_counter() - started:.1f} s"
        )
        stores[name] = path

    from sqlalchemy import event

    from reverse_etl.store import open_store

    statements: dict[str, tuple] = {}

    def seen(conn, cursor, statement, parameters, context, executemany):
        statements.setdefault(statement, parameters)

    url = f"sqlite:///{stores['big']}"
    event.listen(open_store(url)[0], "before_cursor_execute", seen)
    big = measure(stores["big"], args.records, args.repeat)
    small = measure(stores["small"], small_records, args.repeat)
    size = f"{args.records:,} ledger rows"
    is_big = args.records >= MILLION
    base_ms = big["baseline"] * 1000
    figures = [
        figure(f"baseline: SELECT count(*) FROM sync_ledger, {size}", round(base_ms, 4), unit="ms"),
        figure(
            f"baseline's growth: SELECT count(*) FROM sync_ledger, {size} vs {small_records:,}",
            round(base_ms, 4),
            unit="ms",
            baseline=round(small["baseline"] * 1000, 4),
        ),
    ]
    for name in ENDPOINTS:
        ms, small_ms = big[name] * 1000, small[name] * 1000
        print(
            f"{name:<22} {ms:8.1f} ms  ratio to count(*) {ms / base_ms:6.3f}; at {small_records:,} rows "
            f"{small_ms:8.1f} ms: grew {ms / small_ms:5.2f}x"
        )
        figures.append(
            figure(f"Reverse ETL page, {name}, {size}", round(ms, 4), unit="ms", baseline=round(base_ms, 4))
        )
        figures.append(
            figure(
                f"Reverse ETL page, {name}: {size} vs {small_records:,} (same failures, runs, minutes)",
                round(ms, 4),
                unit="ms",
                baseline=round(small_ms, 4),
            )
        )
    db = sqlite3.connect(stores["big"])
    scans = 0
    for statement, parameters in statements.items():
        if (
            not statement.lstrip().upper().startswith("SELECT")
            or "sync_store" in statement
            or "sqlite_master" in statement
        ):
            continue
        plan = [row[-1] for row in db.execute("EXPLAIN QUERY PLAN " + statement, parameters)]
        flagged = [step for step in plan if step.startswith("SCAN") and "INDEX" not in step]
        scans += len(flagged)
        print(("SCAN! " if flagged else "      ") + " ".join(statement.split())[:110])
        print("        plan: " + "; ".join(plan))
    db.close()
    grew = max(ENDPOINTS, key=lambda name: big[name] / small[name])
    figures.append(
        figure(
            f"Reverse ETL page, {short(small_records)} to {short(args.records)} ledger rows: route grown most ({grew})",
            round(big[grew] * 1000, 4),
            unit="ms",
            baseline=round(small[grew] * 1000, 4),
            goal=f"ratio < {MAX_GROWTH:g}" if is_big else None,
            met=big[grew] / small[grew] < MAX_GROWTH if is_big else None,
            headline=is_big,
        )
    )
    figures.append(
        figure("Reverse ETL page: table scans in its queries' plans", scans, goal="0", met=scans == 0)
    )
    extra = {
        "records": args.records,
        "small_records": small_records,
        "runs": args.runs,
        "account_minutes": minutes,
        "grew_most": grew,
    }
    return finish("ui", figures, args.results, **extra)


if __name__ == "__main__":
    sys.exit(main())
