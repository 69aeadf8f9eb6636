"""Benchmark: Connectif contacts, one request per record against CSV imports, in records per minute of budget.

Connectif allows 100 requests per minute per account, shared by every key and task: the budget is counted
in requests, and a "minute of budget" is 100 of them. This measures how many contacts each path delivers
per 100 requests, at 10,000 and 1,000,000 contacts, through the real code: ``ConnectifHook.patch_contact``
(what ``ConnectifContactsOperator`` sends per record) and ``ConnectifContactsOperator.to_csv`` +
``ConnectifHook.create_import`` / ``wait_import`` (its bulk path: files cut as the operator cuts them, at
45 MB of CSV, each polled until finished). The ledger is left out: it costs no requests.

The Connectif sandbox runs in this process with its limit on a short window (``--limit`` requests per
``--window`` seconds) so that the per-record path runs in seconds; the hook is paced to the same limit.
Every request count comes from the sandbox's request log; 429s from its limiter.

Per record at 1M is not run (a million HTTP requests): its requests are one per contact, as measured at
10k, and its duration at the real limit is the measured utilisation applied to 1M requests. The bulk path
is run at both sizes. Import polls are every ``--poll`` seconds here; at Connectif the default is 30 s
(``import_poll_seconds``), so the number of polls is (import duration / 30 s) + 1, and the figure "polls
at Connectif" assumes ``--assumed-import-minutes`` per 100,000 rows (Connectif does not publish import
speeds): the polls follow the rows, the POSTs the files.

The figures go to benchmarks/results/connectif.json: records per request of each path (the baseline: one
by one), the per-record utilisation of the allowed rate (goal > 95 % at Connectif's 100 / 60 s), limiter
429s one by one (goal 0) and contacts not stored (goal 0). A quick run (the tests): ``--sizes 300
--per-record-max 300 --limit 200 --window 1 --poll 0.1 --real-windows 0``.

    .venv/bin/python benchmarks/bench_connectif.py [--sizes 10000 1000000 --limit 500 --window 5 --real-windows 3]
        [--results DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
for _path in (str(REPO / "plugins"), str(REPO), str(REPO / "benchmarks")):
    if _path not in sys.path:
        sys.path.insert(0, _path)

from results import add_results_option, figure, finish  # noqa: E402

BUDGET_PER_MINUTE = 100  # Connectif: requests per minute per account


def _say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def contact(i: int) -> tuple[str, dict]:
    """A plausible contact payload as the contacts mapping produces it (built-in fields plus customs)."""
    return f"bench{i:07d}@example.com", {
        "_name": f"Name{i % 997}",
        "_surname": f"Surname{i % 991}",
        "_birthdate": f"19{50 + i % 50}-0{1 + i % 9}-1{i % 10}T00:00:00Z",
        "_mobilePhone": f"+3460{i:07d}",
        "_newsletterSubscriptionStatus": ("subscribed", "unsubscribed", "none")[i % 3],
        "_smsSubscriptionStatus": ("subscribed", "unsubscribed", "none")[(i + 1) % 3],
        "_points": i % 500,
        "language": ("es", "en", "fr", "de")[i % 4],
        "city": ("Madrid", "Málaga", "Zürich", "Kraków")[i % 4],
    }


def setup_env(url: str, tmp: Path, limit: int, window: float, args: argparse.Namespace, tag: str) -> None:
    """The Connectif connection paced to the sandbox's limit, with a rate-limit bucket of its own."""
    from sandbox.env import airflow_env, connections_env

    os.environ.update(airflow_env(tmp))
    os.environ.update(
        connections_env(
            warehouse=str(tmp / "unused.duckdb"),
            state=str(tmp / "state.db"),
            connectif_url=url,
            connectif_extra={
                "requests_per_minute": limit * 60 / window,
                "rate_window_seconds": window,
                "import_poll_seconds": args.poll,
                "import_rows": args.import_rows,
            },
        )
    )
    os.environ["RETL_RATE_LIMIT_URL"] = f"sqlite:///{tmp / f'ratelimit-{tag}.sqlite'}"
    from reverse_etl.store import init_store

    init_store(f"sqlite:///{tmp / 'state.db'}")


def per_record(sandbox, size: int, limit: int, window: float) -> dict:
    """``size`` contacts one by one. Utilisation: the shortest time the limit allows for the requests after
    the first window's allowance, ``(n - limit) / limit * window``, over the time they really took."""
    from reverse_etl.hooks.connectif import ConnectifHook

    sandbox.reset_store()
    before = len(sandbox.requests)
    hook = ConnectifHook("connectif_default")
    started = time.monotonic()
    sent = 0
    while sent < size:
        email, body = contact(sent)
        hook.patch_contact(email, body)
        sent += 1
        if sent % 2000 == 0:
            _say(f"  per record: {sent}/{size}")
    elapsed = time.monotonic() - started
    seen = sandbox.requests[before:]
    times = sorted(r["t"] for r in seen if r["status"] < 300)
    ideal = (len(times) - limit) / limit * window
    utilisation = ideal / (times[-1] - times[0]) if len(times) > limit else float("nan")
    return {
        "path": "per record",
        "contacts": sent,
        "stored": len(sandbox.store["contacts"]),
        "requests": len(seen),
        "limiter_429s": sum(1 for r in seen if r["status"] == 429),
        "utilisation": utilisation,
        "limit": f"{limit}/{window:g}s",
        "seconds": elapsed,
    }


def bulk(sandbox, size: int, args: argparse.Namespace) -> dict:
    from reverse_etl.batching import Batcher
    from reverse_etl.hooks.connectif import ConnectifHook
    from reverse_etl.ledger import UPSERT, Planned
    from reverse_etl.operators.connectif import ConnectifContactsOperator

    sandbox.reset_store()
    before = len(sandbox.requests)
    hook = ConnectifHook("connectif_default")
    operator = ConnectifContactsOperator(task_id="bench", manifest={})
    started = time.monotonic()
    files, bytes_sent, errors = 0, 0, 0
    # Files cut as the operator cuts them: at 45 MB of CSV (and import_rows rows, when set).
    batcher = Batcher(args.import_rows or None, operator.max_batch_bytes, lambda: operator.body_size(hook))
    records = (Planned(email, UPSERT, None, json.dumps(body)) for email, body in map(contact, range(size)))
    for batch in (*(full for record in records if (full := batcher.add(record))), *batcher.rest()):
        data = operator.to_csv(batch, hook.delimiter)
        created = hook.create_import("contacts", data)
        done = hook.wait_import(created["id"])
        files += 1
        bytes_sent += len(data)
        errors += done.get("errors", 0)
        _say(f"  bulk: file {files} ({len(batch)} contacts, {len(data) / 1e6:.1f} MB) {done['status']}")
    seconds = time.monotonic() - started
    seen = sandbox.requests[before:]
    return {
        "path": "bulk import",
        "limit": f"{args.limit}/{args.window:g}s",
        "contacts": size,
        "stored": len(sandbox.store["contacts"]),
        "requests": len(seen),
        "files": files,
        "polls": sum(1 for r in seen if r["method"] == "GET"),
        "row_errors": errors,
        "mb_per_file": bytes_sent / files / 1e6,
        "limiter_429s": sum(1 for r in seen if r["status"] == 429),
        "seconds": seconds,
    }


def print_report(rows: list[dict], args: argparse.Namespace) -> None:
    minutes = args.assumed_import_minutes
    print()
    print(f"Connectif contacts: records delivered per minute of budget ({BUDGET_PER_MINUTE} requests)")
    print(
        f"sandbox limit {args.limit} requests / {args.window:g} s; imports of {args.import_rows or 'any'} rows "
        "up to 45 MB, "
        f"polled every {args.poll:g} s here"
    )
    print()
    header = (
        f"{'path':<12} {'limit':>8} {'contacts':>9} {'stored':>9} {'requests':>9} {'429s':>5} "
        f"{'records/req':>11} {'records/min of budget':>22} {'budget minutes':>15} {'seconds here':>13}"
    )
    print(header)
    print("-" * len(header))
    per_record_row = next((r for r in rows if r["path"] == "per record" and r["limit"] == "100/60s"), None)
    for row in rows:
        per_request = row["contacts"] / row["requests"]
        print(
            f"{row['path']:<12} {row['limit']:>8} {row['contacts']:>9,} {row['stored']:>9,} {row['requests']:>9,} "
            f"{row['limiter_429s']:>5} {per_request:>11,.1f} {per_request * BUDGET_PER_MINUTE:>22,.0f} "
            f"{row['requests'] / BUDGET_PER_MINUTE:>15,.2f} {row['seconds']:>13,.1f}"
        )
    print()
    for row in rows:
        if row["path"] == "per record":
            print(f"per record at {row['limit']}: {row['utilisation']:.1%} of the allowed rate used")
    if per_record_row:
        u = per_record_row["utilisation"]
        print(
            f"per record at Connectif's own limit (100 / 60 s): {u:.1%} of the allowed rate used over the "
            f"steady state, {per_record_row['limiter_429s']} limiter 429s."
        )
        for size in (10_000, 1_000_000):
            real_minutes = size / (BUDGET_PER_MINUTE * u)
            print(
                f"  {size:>9,} contacts one by one at 100/min: {size:,} requests, "
                f"{real_minutes:,.0f} minutes ({real_minutes / 60 / 24:.1f} days) of the whole account's budget"
            )
    for row in rows:
        if row["path"] != "bulk import":
            continue
        polls = int(row["contacts"] / 100_000 * minutes * 60 // 30) + row["files"]
        at_connectif = row["files"] + polls
        print(
            f"  {row['contacts']:>9,} contacts by import: {row['files']} files "
            f"({row['mb_per_file']:.1f} MB each on average), {row['requests']} requests here "
            f"({row['polls']} polls); at Connectif with 30 s polls and {minutes:g} min per 100,000 rows: "
            f"about {at_connectif} requests = {at_connectif / BUDGET_PER_MINUTE:.2f} minutes of budget"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 1_000_000])
    parser.add_argument("--per-record-max", type=int, default=10_000, help="largest size sent one by one")
    parser.add_argument("--limit", type=int, default=500)
    parser.add_argument("--window", type=float, default=5.0)
    parser.add_argument("--poll", type=float, default=0.5)
    parser.add_argument("--import-rows", type=int, default=0, help="rows per file (0: 45 MB files)")
    parser.add_argument("--assumed-import-minutes", type=float, default=5.0)
    parser.add_argument(
        "--real-windows",
        type=int,
        default=3,
        help="per record at 100/60 s: this many minutes' worth (0: skip)",
    )
    add_results_option(parser)
    args = parser.parse_args(argv)

    from sandbox.connectif import ConnectifSandbox

    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="retl-bench-connectif-") as tmp:
        with ConnectifSandbox(
            port=0, limit=args.limit, window_seconds=args.window, async_delay=0.0
        ) as sandbox:
            setup_env(sandbox.url, Path(tmp), args.limit, args.window, args, "short")
            for size in args.sizes:
                if size <= args.per_record_max:
                    _say(f"per record, {size} contacts, {args.limit} requests / {args.window:g} s")
                    rows.append(per_record(sandbox, size, args.limit, args.window))
                _say(f"bulk import, {size} contacts")
                rows.append(bulk(sandbox, size, args))
        if args.real_windows > 0:
            with ConnectifSandbox(port=0, limit=100, window_seconds=60.0) as sandbox:
                setup_env(sandbox.url, Path(tmp), 100, 60.0, args, "real")
                _say(f"per record at 100 requests / 60 s, {args.real_windows * 100} contacts")
                rows.append(per_record(sandbox, args.real_windows * 100, 100, 60.0))
    print_report(rows, args)
    return finish("connectif", figures(rows), args.results, rows=rows)


def figures(rows: list[dict]) -> list[dict]:
    """Records per request of each path over one by one's; the pacing and completeness goals."""
    one_by_one = [r for r in rows if r["path"] == "per record"]
    base = one_by_one[0]["contacts"] / one_by_one[0]["requests"] if one_by_one else None
    out = []
    for r in rows:
        where = f"{r['contacts']:,} contacts, {r['path']} at {r['limit']}"
        out.append(
            figure(
                f"Connectif, {where}: records per request",
                round(r["contacts"] / r["requests"], 2),
                baseline=None if r["path"] == "per record" else base and round(base, 2),
            )
        )
        if r["path"] == "per record":
            real = r["limit"] == "100/60s"
            out.append(
                figure(
                    f"Connectif one by one at {r['limit']}: share of the rate used",
                    round(r["utilisation"] * 100, 1),
                    unit="%",
                    goal="> 95 %" if real else None,
                    met=r["utilisation"] > 0.95 if real else None,
                    headline=real,
                )
            )
    if one_by_one:
        throttled = sum(r["limiter_429s"] for r in one_by_one)
        out.append(figure("Connectif, one by one: limiter 429s", throttled, goal="0", met=throttled == 0))
    lost = sum(r["contacts"] - r["stored"] for r in rows)
    out.append(figure("Connectif, every path: contacts not stored", lost, goal="0", met=lost == 0))
    return out


if __name__ == "__main__":
    sys.exit(main())
