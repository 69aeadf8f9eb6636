"""Benchmark: requests per million records through the real load engine: batches cut on the bytes a vendor
accepts, async jobs in flight together, polls that back off and ask about every job at once.

What runs
    Voucherify: a sample warehouse of ``--customers`` customers (built once into ``data/bench/``), the real
    extract and validate, then ``VoucherifyCustomersOperator``, ``VoucherifyProductsOperator`` and
    ``VoucherifyOrdersOperator`` (``historical_import``, the last ``--order-days`` days of orders) run their
    ``execute`` against the in-process Voucherify sandbox at Voucherify's limit (100 requests per 60 s),
    with the hook's defaults: polls from 1 s growing to 30 s, 10 jobs in flight.
    Connectif: ``--contacts`` contacts (``bench_connectif``'s generator) planned in the ledger and delivered
    by ``ConnectifContactsOperator.execute`` against the Connectif sandbox (30 s polls as by default;
    ``--connectif-poll`` shortens them here, which changes no count but the polls).

    Every figure about requests comes from the sandbox's request log: bulk POSTs (and their bytes),
    listings (``GET /v1/async-actions``), result reads (``GET /v1/async-actions/{id}``), import files.

1M customers
    Running a million customers through the sandbox takes about 2 GB and several minutes of its schema
    validation on this machine, so by default the customers run at 100,000 and are scaled to 1M (run
    ``--customers 1000000`` to measure instead): the POSTs by bytes (the warehouse's customers are alike at
    every size, and each POST but the last carries 10 MB less one customer at most), the result reads
    as one per job (as measured), and the listings by the polling rule: one listing per poll round while
    jobs are in flight, a round every min(30 s, age of the oldest job); so over the vendor's processing time
    T they are about log2(30) + T / 30 s. T is the sandbox's processing time per customer measured here,
    times 1M: Voucherify publishes no speed, so the printed figure says which T it assumes.

Baselines: before this change a bulk POST held at most 1,000 records (``batch_size``), one job was in
flight at a time and polled every second (the sandbox finishes 1,000 customers within the second: one poll
each); Connectif files held at most 100,000 rows.

Writes ``benchmarks/results/batches.json`` (``results.write_results``: the figures, and each load's counts).
A quick run (the tests): ``--customers 2000 --contacts 5000 --order-days 1 --connectif-poll 0.2``.

    .venv/bin/python benchmarks/bench_batches.py [--customers 100000 --contacts 1000000 --order-days 3]
        [--cache data/bench] [--results DIR]
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

REPO = Path(__file__).resolve().parents[1]
for _path in (str(REPO / "plugins"), str(REPO), str(REPO / "benchmarks")):
    if _path not in sys.path:
        sys.path.insert(0, _path)

from results import add_results_option, figure, finish, short  # noqa: E402

MILLION = 1_000_000
WINDOW_END = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
WINDOW_START = WINDOW_END - dt.timedelta(days=31)
OLD_BATCH = 1_000  # records per bulk POST before (batch_size)
OLD_IMPORT_ROWS = 100_000  # Connectif rows per file before (import_rows)
GOAL_POSTS = GOAL_POLLS = 60


def _say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def warehouse(size: int, seed: int, cache: Path) -> Path:
    """The cached full sample warehouse (customers, products, orders) of ``size`` customers."""
    path = cache / f"full-{size}-seed{seed}.duckdb"
    if not path.exists():
        cache.mkdir(parents=True, exist_ok=True)
        partial = cache / f"full-{size}-seed{seed}.partial.duckdb"
        _say(f"building the sample warehouse of {size:,} customers into {path} ...")
        subprocess.run(
            [
                sys.executable,
                "-m",
                "sandbox.warehouse",
                f"--path={partial}",
                f"--customers={size}",
                f"--seed={seed}",
            ],
            cwd=REPO,
            check=True,
            stdout=subprocess.DEVNULL,
        )
        Path(f"{partial}.wal").unlink(missing_ok=True)
        os.replace(partial, path)
    return path


def setup(tmp: Path, wh: Path, voucherify_url: str, connectif_url: str, args: argparse.Namespace) -> None:
    from sandbox.env import airflow_env, connections_env

    os.environ.update(airflow_env(tmp / "airflow"))
    os.environ.update(
        connections_env(
            warehouse=str(wh),
            state=str(tmp / "state.db"),
            voucherify_url=voucherify_url,
            voucherify_extra={"requests_per_minute": 100},
            connectif_url=connectif_url,
            connectif_extra={"requests_per_minute": 100, "import_poll_seconds": args.connectif_poll},
        )
    )
    os.environ["RETL_RATE_LIMIT_URL"] = f"sqlite:///{tmp / 'ratelimit.sqlite'}"
    os.environ["RETL_STAGING_URL"] = (tmp / "staging").as_uri()
    from reverse_etl.store import init_store

    init_store(f"sqlite:///{tmp / 'state.db'}")


def context(run_id: str, **params) -> dict:
    return {
        "params": {"detect_erasures": False, **params},
        "run_id": run_id,
        "dag": SimpleNamespace(dag_id="bench_batches"),
        "ti": None,
    }


def staged(destination: str, entity: str, days: int, run_id: str) -> dict:
    """The real extract and validate of one sync over the last ``days`` days of the window."""
    from reverse_etl.extract import extract
    from reverse_etl.validate import validate
    from reverse_etl.window import Window

    window = Window(WINDOW_END - dt.timedelta(days=days), WINDOW_END)
    manifest = extract(destination=destination, entity=entity, window=window, dag_id="b", run_id=run_id)
    return validate(extract_manifest=manifest, dag_id="b", run_id=run_id, max_rejected_share=1.0)


def voucherify_load(sandbox, operator_class, entity: str, days: int, **params) -> dict:
    """One Voucherify load, counted at the sandbox."""
    sandbox.reset(limit=100, window_seconds=60)
    manifest = staged("voucherify", entity, days, f"{entity}-stage")
    _say(f"voucherify.{entity}: {manifest['valid']:,} valid records staged; loading ...")
    started = time.monotonic()
    report = operator_class(task_id=entity, manifest=manifest).execute(context(f"{entity}-load", **params))
    seconds = time.monotonic() - started
    log = sandbox.requests
    posts = [r for r in log if r["method"] == "POST" and r["path"] != "/v1/orders"]
    # The vendor's pace: its queue's records per second, and the seconds a POST takes (answer time).
    actions = sandbox.actions()
    busy = sum(a.get("processing_time") or 0 for a in actions) / 1000
    answered = [r for r in posts if r.get("answered")]
    post_seconds = sum(r["answered"] - r["t"] for r in answered) / max(1, len(answered))
    return {
        "entity": entity,
        "records": manifest["valid"],
        "sent": report["sent"],
        "failed": report["failed"],
        "posts": len(posts),
        "post_bytes": [r["bytes"] for r in posts],
        "refused_413": sum(1 for r in posts if r["status"] == 413),
        "listings": sum(1 for r in log if r["method"] == "GET" and r["path"] == "/v1/async-actions"),
        "reads": sum(1 for r in log if r["method"] == "GET" and r["path"].startswith("/v1/async-actions/")),
        "requests": len(log),
        "throttled": sandbox.stats()["throttled_by_limiter"],
        "to_send": report["to_send"],
        "vendor_seconds": busy,
        "vendor_rate": report["sent"] / busy if busy else float("inf"),
        "post_seconds": post_seconds,
        "seconds": seconds,
    }


def connectif_load(sandbox, contacts: int) -> dict:
    from bench_connectif import contact

    from reverse_etl.ledger import UPSERT, Ledger, Planned
    from reverse_etl.operators.connectif import ConnectifContactsOperator
    from reverse_etl.payload import canonical_json, payload_hash

    sandbox.reset(limit=100, window_seconds=60)
    ledger = Ledger("connectif", "contacts", "plan")
    step = 50_000
    for first in range(0, contacts, step):
        ledger.plan(
            [
                Planned(email, UPSERT, payload_hash(body), canonical_json(body))
                for email, body in map(contact, range(first, min(contacts, first + step)))
            ]
        )
    _say(f"connectif.contacts: {contacts:,} contacts planned; loading ...")
    started = time.monotonic()
    report = ConnectifContactsOperator(task_id="contacts", manifest={}).execute(context("contacts-load"))
    log = sandbox.requests
    files = [r for r in log if r["method"] == "POST" and r["path"].startswith("/imports")]
    return {
        "records": contacts,
        "sent": report["sent"],
        "files": len(files),
        "file_mb": [round(r["bytes"] / 1e6, 1) for r in files],
        "polls": sum(1 for r in log if r["method"] == "GET"),
        "requests": len(log),
        "stored": len(sandbox.store_snapshot()["contacts"]),
        "seconds": time.monotonic() - started,
    }


class _Clock:
    """A virtual clock for ``time.monotonic``/``time.sleep`` in the engine's job tracker and its waits."""

    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += max(0.0, seconds)


def replay(jobs: int, records: int, post_seconds: float, records_per_second: float, room: int = 10) -> dict:
    """The engine's own job tracker (``reverse_etl.jobs.InFlightJobs`` with Voucherify's polling defaults)
    and ``poll_async_actions``'s rule (one listing while several jobs wait, then a read per finished one; a
    lone job read directly) on a virtual clock, against a vendor that answers a POST in ``post_seconds`` and
    runs the jobs one after another at ``records_per_second``: the polls a load of ``jobs`` jobs costs."""
    from reverse_etl import jobs as jobs_module
    from reverse_etl import progress

    clock = _Clock()
    saved = jobs_module.time, progress.time
    jobs_module.time = progress.time = clock  # type: ignore[assignment]
    done_at: dict[str, float] = {}
    count = {"listings": 0, "reads": 0}

    def poll(waiting: dict) -> dict:
        ids = list(waiting)
        if len(ids) > 1:
            count["listings"] += 1
            ids = [i for i in ids if done_at[i] <= clock.now]
        count["reads"] += len(ids)
        return {i: [] for i in ids if done_at[i] <= clock.now}

    try:
        tracker = jobs_module.InFlightJobs(poll, lambda *done: None, what="jobs", first=1.0, longest=30.0)
        vendor_free = 0.0
        for n in range(jobs):
            clock.sleep(post_seconds)
            vendor_free = max(vendor_free, clock.now) + records / jobs / records_per_second
            done_at[f"job{n}"] = vendor_free
            tracker.add(f"job{n}", [])
            tracker.wait(until=room - 1)
        tracker.wait()
    finally:
        jobs_module.time, progress.time = saved
    return {**count, "seconds": clock.now}


def report(customers: dict, products: dict, orders: dict, connectif: dict, args: argparse.Namespace) -> list:
    n = customers["to_send"]
    full = [b for b in customers["post_bytes"][:-1]] or customers["post_bytes"]
    per_post = sum(full) / len(full)
    total_bytes = sum(customers["post_bytes"])
    measured = n >= MILLION
    scale = MILLION / n
    posts_1m = customers["posts"] if measured else math.ceil(total_bytes * scale / per_post)
    # The vendor's pace here: seconds per 10 MB POST (the sandbox checks every item before its 202) and
    # customers per second of its queue; then the engine's polling replayed at 1M on a virtual clock.
    pace = customers["post_seconds"], customers["vendor_rate"]
    sim = replay(posts_1m, MILLION, *pace)
    listings_1m = customers["listings"] if measured else sim["listings"]
    reads_1m = customers["reads"] if measured else sim["reads"]
    polls_1m = listings_1m + reads_1m
    how = "measured" if measured else f"scaled from {short(n)}"
    old_posts = math.ceil(MILLION / OLD_BATCH)
    orders_polls = orders["listings"] + orders["reads"]
    imports = math.ceil(orders["records"] / 2000)
    contacts = connectif["records"]
    largest = max(customers["post_bytes"])
    figures = [
        figure(
            f"Voucherify, 1M customers: bulk POSTs ({how})",
            posts_1m,
            baseline=old_posts,
            goal="<= 60",
            met=posts_1m <= GOAL_POSTS,
            headline=True,
        ),
        figure(
            f"Voucherify, 1M customers: polls ({how})",
            polls_1m,
            baseline=old_posts,
            goal="<= 60",
            met=polls_1m <= GOAL_POLLS,
            headline=True,
        ),
        figure(
            f"Voucherify, {n:,} customers measured: bulk POSTs",
            customers["posts"],
            baseline=math.ceil(n / OLD_BATCH),
        ),
        figure(
            f"Voucherify, {n:,} customers measured: listings + result reads",
            customers["listings"] + customers["reads"],
            baseline=math.ceil(n / OLD_BATCH),
        ),
        figure(
            "Voucherify bulk POST body, largest (cap 10 MB; Voucherify refuses over 10 MiB)",
            largest,
            unit="bytes",
            baseline=516_000,
            goal="<= 10,000,000, no 413",
            met=largest <= 10_000_000 and not customers["refused_413"],
        ),
        figure(
            f"Voucherify, {products['records']:,} products: bulk POSTs + polls",
            products["posts"] + products["listings"] + products["reads"],
            baseline=2 * math.ceil(products["records"] / OLD_BATCH),
        ),
        figure(
            f"Voucherify, {orders['records']:,} orders by import: imports",
            orders["posts"],
            baseline=imports,
            goal=f"= {imports} (2,000 each)",
            met=orders["posts"] == imports,
        ),
        figure(
            f"Voucherify, {orders['records']:,} orders by import: polls, listings + result reads",
            orders_polls,
            baseline=imports,
            goal=f"<= {math.ceil(imports * 1.5)} (several imports in flight)",
            met=orders_polls <= math.ceil(imports * 1.5),
        ),
        figure(
            f"Connectif, {short(contacts)} contacts by import: files",
            connectif["files"],
            baseline=math.ceil(contacts / OLD_IMPORT_ROWS),
            goal="3 for 1M" if contacts == MILLION else None,
            met=connectif["files"] == 3 if contacts == MILLION else None,
            headline=contacts == MILLION,
        ),
        figure(
            f"Connectif, {contacts:,} contacts by import: requests (files + polls)",
            connectif["requests"],
            baseline=2 * math.ceil(contacts / OLD_IMPORT_ROWS),
        ),
    ]
    return figures


def sensitivity(posts: int) -> list[str]:
    """Polls at 1M if Voucherify's pace differs from the sandbox's (it publishes none)."""
    lines = []
    for rate in (2_000, 5_000, 20_000):
        cells = []
        for post_seconds in (1.0, 5.0):
            sim = replay(posts, MILLION, post_seconds, rate)
            cells.append(
                f"{post_seconds:g} s per POST: {sim['listings']} listings + {sim['reads']} reads = "
                f"{sim['listings'] + sim['reads']} polls over {sim['seconds']:.0f} s"
            )
        lines.append(f"  vendor at {rate:>6,} customers/s: " + "; ".join(cells))
    return lines


def print_report(rows: dict, figures: list, args: argparse.Namespace) -> None:
    print()
    print("Loads through the real engine against the sandboxes (counts from the sandbox's request log):")
    for name in ("customers", "products", "orders"):
        r = rows[name]
        sizes = r["post_bytes"]
        print(
            f"  voucherify.{name:<9} {r['records']:>9,} records: {r['posts']} POSTs "
            f"(largest {max(sizes or [0]):,} bytes, mean {sum(sizes) / max(1, len(sizes)):,.0f}), "
            f"{r['listings']} listings + {r['reads']} result reads, {r['requests']} requests in all, "
            f"{r['throttled']} 429s, {r['refused_413']} 413s; {r['sent']:,} sent, {r['failed']} failed; "
            f"vendor busy {r['vendor_seconds']:.1f} s, load {r['seconds']:.1f} s"
        )
    c = rows["connectif"]
    print(
        f"  connectif.contacts   {c['records']:>9,} records: {c['files']} files of {c['file_mb']} MB, "
        f"{c['polls']} polls, {c['requests']} requests; {c['stored']:,} stored; load {c['seconds']:.1f} s"
    )
    print(
        f"  the sandbox's pace, used to scale the polls to 1M: {rows['customers']['post_seconds']:.1f} s per POST, "
        f"{rows['customers']['vendor_rate']:,.0f} customers/s"
    )
    posts = next(f["value"] for f in figures if "bulk POSTs" in f["what"])
    print()
    print(f"Polls at 1M ({posts} jobs) with the engine's polling replayed against other vendor paces:")
    print("\n".join(sensitivity(posts)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=100_000, help="sample warehouse size (%(default)s)")
    parser.add_argument("--order-days", type=int, default=3, help="orders imported: the last N days (3)")
    parser.add_argument("--contacts", type=int, default=MILLION, help="Connectif contacts (%(default)s)")
    parser.add_argument("--connectif-poll", type=float, default=2.0, help="import_poll_seconds here (2)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--cache", default="data/bench", help="folder of cached sample warehouses")
    add_results_option(parser)
    args = parser.parse_args(argv)

    wh = warehouse(args.customers, args.seed, REPO / args.cache)
    with tempfile.TemporaryDirectory(prefix="retl-bench-batches-") as tmp:
        from sandbox.connectif import ConnectifSandbox
        from sandbox.voucherify import VoucherifySandbox

        with (
            VoucherifySandbox(port=0, limit=100, window_seconds=60, async_delay=0.0) as vsb,
            ConnectifSandbox(port=0, limit=100, window_seconds=60, async_delay=0.0) as csb,
        ):
            vsb.record_bodies = csb.record_bodies = False  # a million bodies would not fit in memory
            setup(Path(tmp), wh, vsb.url, csb.url, args)
            import logging

            logging.getLogger("reverse_etl").setLevel(logging.WARNING)
            from reverse_etl.operators.voucherify import (
                VoucherifyCustomersOperator,
                VoucherifyOrdersOperator,
                VoucherifyProductsOperator,
            )

            rows = {
                "customers": voucherify_load(vsb, VoucherifyCustomersOperator, "customers", 31),
                "products": voucherify_load(vsb, VoucherifyProductsOperator, "products", 31),
                "orders": voucherify_load(
                    vsb, VoucherifyOrdersOperator, "orders", args.order_days, historical_import=True
                ),
                "connectif": connectif_load(csb, args.contacts),
            }
    figures = report(rows["customers"], rows["products"], rows["orders"], rows["connectif"], args)
    print_report(rows, figures, args)
    return finish("batches", figures, args.results, loads=rows)


if __name__ == "__main__":
    sys.exit(main())
