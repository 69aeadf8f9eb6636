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
    The baseline grows with the ledger (it reads every entry of an index); the endpoints must not: run it
    with ``--records 200000`` and 1000000 and compare the ratios (they should grow about 5 times, the ms
    stay flat). Each endpoint has a floor of a few ms (the store's identity check on every open, HTTP and
    JSON). The failures endpoint reads every failing record of one sync (here ~2.5k): its cost grows with
    the failures, not with the ledger. The rate budget reads 360 minutes per account whatever the table
    holds: compare ``--minute-days 30`` and 365.

    The figures go to benchmarks/results/ui.json: each route's median ms over the baseline's (the goal, at
    1M ledger rows or more: a ratio below 1) and the table scans (goal 0). A quick run (the tests):
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


def fill(path: Path, records: int, runs: int) -> None:
    now = dt.datetime(2026, 11, 1).isoformat(sep=" ")
    per_sync = records // len(SYNCS)
    db = sqlite3.connect(path)
    with db:
        for destination, entity in SYNCS:
            rows, events = [], []
            for i in range(per_sync):
                key = f"{i:09d}"
                if i % 100 < 2:
                    status, error = "failed", f"422 field {i % 40} is invalid"
                elif i % 100 == 2:
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
    from fastapi.testclient import TestClient

    from reverse_etl.store import init_store
    from reverse_etl.ui.api import create_app

    path = home / "state.db"
    url = f"sqlite:///{path}"
    init_store(url)
    started = time.perf_counter()
    fill(path, args.records, args.runs)
    minutes = fill_minutes(path, args.accounts, args.minute_days)
    print(
        f"filled {args.records:,} ledger rows, {args.runs * len(SYNCS):,} runs, {minutes:,} account minutes "
        f"in {time.perf_counter() - started:.1f} s"
    )

    from sqlalchemy import event

    from reverse_etl.store import open_store

    statements: dict[str, tuple] = {}

    def seen(conn, cursor, statement, parameters, context, executemany):
        statements.setdefault(statement, parameters)

    event.listen(open_store(url)[0], "before_cursor_execute", seen)
    app = create_app(url)
    app.dependency_overrides[app.state.read_runs] = lambda: None
    client = TestClient(app)
    db = sqlite3.connect(path)
    baseline = median_seconds(lambda: db.execute("SELECT count(*) FROM sync_ledger").fetchone(), args.repeat)
    print(f"baseline  SELECT count(*) FROM sync_ledger: {baseline * 1000:8.1f} ms")
    whole = median_seconds(
        lambda: db.execute("SELECT count(*) FROM sync_request_minutes").fetchone(), args.repeat
    )
    print(f"for scale SELECT count(*) FROM sync_request_minutes: {whole * 1000:8.1f} ms (not a ratio's base)")
    middle = f"{args.records // len(SYNCS) // 2:09d}"
    endpoints = {
        "syncs (30 runs each)": "/api/syncs?limit=30",
        "record lookup": f"/api/records/voucherify/customers/{middle}",
        "failures by message": "/api/failures/voucherify/customers",
        "rate budget": "/api/budget?minutes=360",
    }
    size = f"{args.records:,} ledger rows"
    big = args.records >= MILLION
    base_ms = round(baseline * 1000, 4)
    figures = [figure(f"baseline: SELECT count(*) FROM sync_ledger, {size}", base_ms, unit="ms")]
    for name, endpoint in endpoints.items():

        def call(endpoint=endpoint):
            answer = client.get(endpoint)
            assert answer.status_code == 200, answer.text

        seconds = median_seconds(call, args.repeat)
        print(f"{name:<22} {endpoint:<48} {seconds * 1000:8.1f} ms  ratio {seconds / baseline:6.3f}")
        figures.append(
            figure(
                f"Reverse ETL page, {name}, {size}",
                round(seconds * 1000, 4),
                unit="ms",
                baseline=base_ms,
            )
        )
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
    timed = {f["what"].split(", ")[1]: f["value"] for f in figures[1:]}
    slowest = max(timed, key=timed.get)
    figures.append(
        figure(
            f"Reverse ETL page, {short(args.records)} ledger rows: slowest route",
            timed[slowest],
            unit="ms",
            baseline=base_ms,
            goal="ratio < 1" if big else None,
            met=timed[slowest] < base_ms if big else None,
            headline=big,
        )
    )
    figures.append(
        figure("Reverse ETL page: table scans in its queries' plans", scans, goal="0", met=scans == 0)
    )
    extra = {"records": args.records, "runs": args.runs, "account_minutes": minutes, "slowest_route": slowest}
    return finish("ui", figures, args.results, **extra)


if __name__ == "__main__":
    sys.exit(main())
