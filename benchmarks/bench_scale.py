"""One Celery worker against two on `make stack`: the same workload (one day of all five DAGs, Connectif's
initial load first) on each, side by side.

Each worker is pinned to a CPU of its own (``RETL_STACK_PIN_CPUS=1``), as if every worker were a one-core
host: extract and validate are CPU-bound and should take about half as long on two workers; delivery is
bounded by the vendors' budgets (100 requests per minute per account) and should not change. Figures:
the wall time of the extract + validate tasks (first start to last end), of the loads, and the share of
each account's budget used while its requests were being sent.

    .venv/bin/python benchmarks/bench_scale.py [--customers 10000] [--workers 1 2] [--dags ...]

Needs PostgreSQL and Redis (``RETL_STACK_POSTGRES_URL``, ``RETL_STACK_REDIS_URL``, as `make stack`).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import tempfile
from datetime import datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "scripts")]

from results import add_results_option, figure, finish  # noqa: E402
from stack_api import Stack, wait_for  # noqa: E402

DAGS = ("voucherify_sync", "connectif_sync", "salesfire_sync", "salesmanago_sync", "splio_referral_sync")
DAY = {"window_start": "2026-10-31", "window_end": "2026-11-01"}
CONNECTIF_INITIAL = {
    "window_start": "2026-10-01",
    "window_end": "2026-11-01",
    "entities": ["contacts", "products"],
}
ACCOUNTS = {"voucherify": "voucherify_sync", "connectif": "connectif_sync", "datatalks": "salesmanago_sync"}
LIMIT = 100


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _seconds(stamp: str) -> float:
    return datetime.fromisoformat(stamp).timestamp()


def _span(tis: list[dict]) -> float:
    done = [ti for ti in tis if ti.get("start_date") and ti.get("end_date")]
    if not done:
        return float("nan")
    return max(_seconds(t["end_date"]) for t in done) - min(_seconds(t["start_date"]) for t in done)


def run_workload(workers: int, args: argparse.Namespace, home: Path) -> dict:
    name = f"retl_bench_w{workers}_{os.getpid()}"
    env = {
        **os.environ,
        "RETL_STACK_HOME": str(home / f"workers-{workers}"),
        "RETL_STACK_NAME": name,
        "RETL_STACK_PORT": str(_free_port()),
        "RETL_STACK_WORKERS": str(workers),
        "RETL_STACK_CONCURRENCY": str(args.concurrency),
        "RETL_STACK_PIN_CPUS": "1",
        "RETL_STACK_CUSTOMERS": str(args.customers),
        "RETL_STACK_VENDOR_EXTRA": json.dumps({"bulk_threshold": 100, "import_poll_seconds": 2}),
    }
    print(f"==> {workers} worker(s): starting make stack ({args.customers:,} customers)", flush=True)
    stack = Stack.start(env)
    try:
        stack.unpause_and_wait_parsed(
            DAGS, tuple(args.dags)
        )  # each schedules its latest day too: no data there
        if "connectif_sync" in args.dags:
            stack.trigger("connectif_sync", CONNECTIF_INITIAL)
        for dag_id in args.dags:
            stack.trigger(dag_id, DAY)
        runs = wait_for(lambda: stack.finished_runs(tuple(args.dags)), "the runs to finish", 3600, every=5)
        failed = [(r["dag_id"], r["dag_run_id"]) for r in runs if r["state"] != "success"]
        if failed:
            raise SystemExit(f"runs failed with {workers} worker(s): {failed}")
        tis = [ti for r in runs for ti in stack.task_instances(r["dag_id"], r["dag_run_id"])]
        kind = lambda ti: ti["task_id"].rsplit(".", 1)[-1]  # noqa: E731
        budgets = {}
        for sandbox, dag_id in ACCOUNTS.items():
            if dag_id not in args.dags:
                continue
            times = sorted(r["t"] for r in stack.sandbox(sandbox, "requests"))
            span = times[-1] - times[0] if len(times) > 1 else 0.0
            budgets[sandbox] = len(times) / (LIMIT * max(span, 60.0) / 60) if times else float("nan")
        result = {
            "workers": workers,
            "cpu_wall": _span([ti for ti in tis if kind(ti) in ("extract", "validate")]),
            "cpu_busy": sum(ti["duration"] or 0 for ti in tis if kind(ti) in ("extract", "validate")),
            "delivery_wall": _span([ti for ti in tis if kind(ti) == "load"]),
            "hosts": sorted({ti["hostname"] for ti in tis if ti.get("hostname")}),
            "budget_share": budgets,
        }
        print(f"    {result}", flush=True)
        return result
    finally:
        Stack.stop(env)
        _drop_databases(name)


def _drop_databases(name: str) -> None:
    import psycopg2

    url = os.environ.get("RETL_STACK_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    conn = psycopg2.connect(url)
    conn.autocommit = True
    with conn.cursor() as cur:
        for db in (f"{name}_airflow", f"{name}_state"):
            cur.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
    conn.close()


def figures(one: dict, two: dict) -> list[dict]:
    cpu_ratio = two["cpu_wall"] / one["cpu_wall"]
    delivery_ratio = two["delivery_wall"] / one["delivery_wall"]
    out = [
        figure(
            "extract + validate wall time, 2 workers (1 worker = baseline)",
            round(two["cpu_wall"], 1),
            unit="s",
            baseline=round(one["cpu_wall"], 1),
            goal="≤ 0.75x: CPU-bound, scales with workers",
            met=cpu_ratio <= 0.75,
            headline=True,
        ),
        figure(
            "delivery wall time, 2 workers (1 worker = baseline)",
            round(two["delivery_wall"], 1),
            unit="s",
            baseline=round(one["delivery_wall"], 1),
            goal="0.8-1.2x: bounded by the vendors' budgets",
            met=0.8 <= delivery_ratio <= 1.2,
            headline=True,
        ),
    ]
    for account, share in two["budget_share"].items():
        out.append(
            figure(
                f"{account} budget used while sending, 2 workers (1 worker = baseline)",
                round(100 * share, 1),
                unit="%",
                baseline=round(100 * one["budget_share"].get(account, float("nan")), 1),
            )
        )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=2_000, help="sample warehouse size")
    parser.add_argument("--concurrency", type=int, default=4, help="task slots per worker")
    parser.add_argument("--dags", nargs="+", default=list(DAGS), choices=DAGS, help="DAGs to run")
    add_results_option(parser)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="retl-bench-scale-") as home:
        one, two = (run_workload(n, args, Path(home)) for n in (1, 2))
    print(f"hosts: 1 worker {one['hosts']}, 2 workers {two['hosts']}")
    return finish("scale", figures(one, two), args.results, runs={"one": one, "two": two})


if __name__ == "__main__":
    sys.exit(main())
