"""Benchmark: delivery to Voucherify at the rate limit, through the real hook, from several processes.

What is measured
    The Voucherify sandbox runs in this process with a short sliding window (``--limit`` requests per
    ``--window`` seconds; 50 per 5 s by default). Worker PROCESSES (``--workers``) each build their own
    ``VoucherifyHook('voucherify_default')``; the connection (an ``AIRFLOW_CONN_*`` variable, set up as
    ``sandbox/env.py`` does in a temporary AIRFLOW_HOME) carries ``requests_per_minute = limit * 60 / window``
    and ``rate_window_seconds = window``, so all workers share the account's bucket through the rate-limit
    backend file (``RETL_RATE_LIMIT_URL=sqlite:///<tmp>/ratelimit-<phase>.sqlite``). Three phases:

    1. paced: every worker calls ``hook.upsert_order`` (``POST /v1/orders``, one request per order) as fast
       as the hook lets it, for ``--seconds`` of wall time;
    2. bulk: every worker sends ``--bulk-batches`` batches of ``--batch-size`` generated customers with
       ``hook.bulk_upsert('customers', batch)`` and waits for each with ``hook.wait_async_action(id)``;
    3. unpaced baseline: phase 1 again, with the client's limiter disabled (a huge ``requests_per_minute``)
       against the same sandbox limit. The hook still honours Retry-After and the rate-limit headers.

    Every figure about requests comes from the sandbox's own request log and limiter (``requests``,
    ``stats()``, ``max_in_window()``), not from the client; the client's counters are shown separately.

How to read it
    max/window: the most requests the sandbox accepted in any sliding window; it must not pass the limit.
    mean/window: mean accepted requests per full fixed window over the steady state (from one window after
    the first request to the end of the phase); utilisation = mean/window / limit (goal > 95 %).
    429s: answered by the sandbox's limiter; the paced phase must have none (our pacing must never cause
    one). delivered: orders the sandbox stored vs orders the workers attempted (must be equal).
    records/request (bulk): customers stored / every request of the phase, polls included.

    The figures go to benchmarks/results/delivery.json, each paced figure with the unpaced baseline's.
    Exit status 1 when a goal is not met: paced utilisation > 95 % (mean per window and sustained), no
    limiter 429 when paced, never over the limit in a window, no order lost. A quick run (the tests):
    ``--limit 20 --window 1 --workers 2 --seconds 4 --bulk-batches 1 --batch-size 50`` (a 1 s window
    caps utilisation near 80 %: the pacing margin).

    .venv/bin/python benchmarks/bench_delivery.py [--limit 50 --window 5 --workers 3 --seconds 30] [--results DIR]
"""

from __future__ import annotations

import argparse
import bisect
import contextlib
import math
import multiprocessing as mp
import os
import queue
import shutil
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from results import add_results_option, figure, finish

REPO = Path(__file__).resolve().parents[1]
CONN_ID = "voucherify_default"
UNPACED_REQUESTS_PER_MINUTE = 1_000_000_000  # "no limiter": the bucket never fills


def _paths() -> None:
    for path in (str(REPO / "plugins"), str(REPO)):
        if path not in sys.path:
            sys.path.insert(0, path)


def _say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------- worker
def _order(phase: str, worker: int, n: int) -> dict:
    amount = 1000 + (n * 37) % 9000
    return {
        "source_id": f"{phase}-w{worker}-{n:06d}",
        "status": "PAID",
        "amount": amount,
        "customer": {"source_id": f"bench-c{worker}-{n % 50}"},
        "items": [{"source_id": "sku-bench", "related_object": "product", "quantity": 1, "price": amount}],
        "metadata": {"bench": True},
    }


def _customer(worker: int, batch: int, k: int) -> dict:
    return {
        "source_id": f"bulk-w{worker}-b{batch}-{k:05d}",
        "name": f"Bench Customer {worker}-{batch}-{k}",
        "email": f"bench.{worker}.{batch}.{k}@example.com",
        "phone": f"+48600{worker}{batch % 10}{k:05d}",
        "address": {"city": "Warszawa", "postal_code": "00-001", "country": "PL"},
        "metadata": {"bench": True, "batch": batch},
    }


def worker_main(index: int, phase: str, mode: str, options: dict, ready, go, deadline, results) -> None:
    """One worker process: its own hook, waits for the start signal, works until the deadline."""
    import logging

    _paths()
    from reverse_etl.hooks.voucherify import VoucherifyHook

    logging.getLogger("reverse_etl").setLevel(logging.ERROR)  # the hook's 429 warnings would flood stderr
    hook = VoucherifyHook(CONN_ID)
    hook.get_conn()
    _ = hook.limiter  # opens the shared bucket now, not inside the measured time
    ready.put(index)
    go.wait()
    end = deadline.value
    out: dict = {"worker": index, "phase": phase, "attempted": 0, "ok": 0, "failed": 0, "errors": Counter()}
    if mode == "orders":
        while time.time() < end:
            order = _order(phase, index, out["attempted"])
            out["attempted"] += 1
            try:
                hook.upsert_order(order)
                out["ok"] += 1
            except Exception as exc:
                out["failed"] += 1
                out["errors"][f"{type(exc).__name__}: {str(exc)[:120]}"] += 1
    else:
        out.update(batches=0, done=0, item_errors=0, actions=Counter())
        for batch in range(options["bulk_batches"]):
            if time.time() >= end:
                break
            items = [_customer(index, batch, k) for k in range(options["batch_size"])]
            out["attempted"] += len(items)
            try:
                action = hook.wait_async_action(hook.bulk_upsert("customers", items))
            except Exception as exc:
                out["failed"] += len(items)
                out["errors"][f"{type(exc).__name__}: {str(exc)[:120]}"] += 1
                continue
            result = action.get("result") or {}
            out["batches"] += 1
            out["actions"][action.get("status")] += 1
            out["done"] += int(result.get("done_count") or 0)
            out["item_errors"] += int(result.get("failed_count") or 0)
            out["ok"] += int(result.get("done_count") or 0)
    out["stats"] = hook.stats.as_dict()
    results.put(out)


# ---------------------------------------------------------------------------------------------- parent
def _connection_env(url: str, tmp: Path, phase: str, requests_per_minute: float, window: float) -> dict:
    from sandbox.env import connections_env

    env = connections_env(
        warehouse=str(tmp / "unused.duckdb"),
        state=str(tmp / "state.db"),
        voucherify_url=url,
        voucherify_extra={"requests_per_minute": requests_per_minute, "rate_window_seconds": window},
    )
    env["RETL_RATE_LIMIT_URL"] = f"sqlite:///{tmp / f'ratelimit-{phase}.sqlite'}"
    from reverse_etl.store import init_store

    init_store(f"sqlite:///{tmp / 'state.db'}")
    return env


def run_phase(
    sb, args: argparse.Namespace, tmp: Path, phase: str, mode: str, requests_per_minute: float, seconds: float
) -> dict:
    """Reset the sandbox, start the workers, let them run until the deadline, collect both sides' figures."""
    sb.reset(limit=args.limit, window_seconds=args.window)
    os.environ.update(_connection_env(sb.url, tmp, phase, requests_per_minute, args.window))
    ctx = mp.get_context("spawn")
    ready, results, go = ctx.Queue(), ctx.Queue(), ctx.Event()
    deadline = ctx.Value("d", 0.0)
    options = {"bulk_batches": args.bulk_batches, "batch_size": args.batch_size}
    procs = [
        ctx.Process(
            target=worker_main,
            args=(i, phase, mode, options, ready, go, deadline, results),
            name=f"bench-{phase}-{i}",
        )
        for i in range(args.workers)
    ]
    _say(
        f"{phase}: starting {args.workers} worker processes (requests_per_minute={requests_per_minute:g}, "
        f"rate_window_seconds={args.window:g})"
    )
    for p in procs:
        p.start()
    outs: list[dict] = []
    try:
        waiting_since, n_ready = time.monotonic(), 0
        while n_ready < len(procs):
            with contextlib.suppress(queue.Empty):
                ready.get(timeout=1.0)
                n_ready += 1
                continue
            dead = [p.name for p in procs if p.exitcode is not None]
            if dead or time.monotonic() - waiting_since > 300:
                raise RuntimeError(
                    f"{phase}: workers failed to start ({dead or 'timeout'}); see stderr above"
                )
        start = time.time()
        deadline.value = start + seconds
        go.set()
        _say(f"{phase}: workers ready, running for up to {seconds:g} s")
        last = time.monotonic()
        while len(outs) < len(procs):
            with contextlib.suppress(queue.Empty):
                outs.append(results.get(timeout=1.0))
            if time.time() > deadline.value + 6 * args.window + 60:
                _say(f"{phase}: workers did not stop in time; terminating them")
                break
            if len(outs) < len(procs) and all(p.exitcode is not None for p in procs):
                with contextlib.suppress(queue.Empty):
                    while len(outs) < len(procs):
                        outs.append(results.get(timeout=2.0))
                if len(outs) < len(procs):
                    _say(
                        f"{phase}: {len(procs) - len(outs)} worker(s) died without a report; see stderr above"
                    )
                break
            if time.monotonic() - last >= 5:
                last = time.monotonic()
                s = sb.stats()
                _say(
                    f"{phase}: {time.time() - start:5.1f} s: sandbox saw {s['requests_total']} requests, "
                    f"{s['accepted_by_limiter']} accepted, {s['throttled_by_limiter']} answered 429"
                )
        ended = time.time()
    finally:
        for p in procs:
            p.join(timeout=10)
            if p.is_alive():
                p.terminate()
                p.join(timeout=5)
    if mode == "bulk":  # let the sandbox's job queue finish before reading the store
        wait_until = time.monotonic() + 30
        while sb.stats()["async_actions"].get("ENQUEUED") or sb.stats()["async_actions"].get("IN_PROGRESS"):
            if time.monotonic() > wait_until:
                break
            time.sleep(0.1)
    return analyse(sb, args, phase, mode, start, deadline.value, ended, outs)


def analyse(sb, args, phase: str, mode: str, start: float, deadline: float, ended: float, outs: list) -> dict:
    log = sb.requests
    stats = sb.stats()
    window, limit = float(args.window), int(args.limit)
    accepted_t = sorted(r["t"] for r in log if r["status"] not in (429, 401))
    throttled_log = sum(1 for r in log if r["status"] == 429)
    first = accepted_t[0] if accepted_t else start
    steady_from = first + window
    full_windows = max(0, math.floor((deadline - steady_from) / window))
    counts = [
        bisect.bisect_left(accepted_t, steady_from + (j + 1) * window)
        - bisect.bisect_left(accepted_t, steady_from + j * window)
        for j in range(full_windows)
    ]
    mean = statistics.fmean(counts) if counts else float("nan")
    # Alignment-free: in steady state, how long does it take the sandbox to accept `limit` more requests?
    # A sliding window allows it every `window` seconds at best, so window / that time is the utilisation.
    spans = [
        accepted_t[i + limit] - t
        for i, t in enumerate(accepted_t)
        if t >= steady_from and i + limit < len(accepted_t) and accepted_t[i + limit] < deadline
    ]
    reuse = statistics.fmean(spans) if spans else float("nan")
    steady_span = full_windows * window
    steady_accepted = sum(counts)
    store = sb.store
    result = {
        "phase": phase,
        "mode": mode,
        "requests": len(log),
        "accepted": len(accepted_t),
        "throttled_429": stats["throttled_by_limiter"],
        "throttled_in_log": throttled_log,
        "status_counts": stats["status_counts"],
        "max_in_window": sb.max_in_window(),
        "full_windows": full_windows,
        "window_counts": counts,
        "mean_per_window": mean,
        "min_per_window": min(counts) if counts else None,
        "utilisation": mean / limit if counts else float("nan"),
        "steady_rate": steady_accepted / steady_span if steady_span else float("nan"),
        "slot_reuse_s": reuse,
        "sustained": window / reuse if spans else float("nan"),
        "wall_s": ended - start,
        "attempted": sum(o["attempted"] for o in outs),
        "client_ok": sum(o["ok"] for o in outs),
        "client_failed": sum(o["failed"] for o in outs),
        "errors": sum((Counter(o["errors"]) for o in outs), Counter()),
        "workers_reported": len(outs),
        "client": {
            k: sum(o["stats"][k] for o in outs)
            for k in (
                "requests",
                "throttled",
                "transient_errors",
                "rate_wait_seconds",
                "throttle_wait_seconds",
            )
        },
        "per_worker_requests": [o["stats"]["requests"] for o in sorted(outs, key=lambda o: o["worker"])],
    }
    if mode == "orders":
        stored = store["orders"]
        result["stored"] = sum(1 for sid in stored if sid.startswith(f"{phase}-w"))
        result["missing"] = sum(
            1 for o in outs for n in range(o["attempted"]) if f"{phase}-w{o['worker']}-{n:06d}" not in stored
        )
    else:
        stored = store["customers"]
        result["stored"] = sum(1 for sid in stored if sid.startswith("bulk-w"))
        result["batches"] = sum(o.get("batches", 0) for o in outs)
        result["actions"] = sum((Counter(o.get("actions", {})) for o in outs), Counter())
        result["item_errors"] = sum(o.get("item_errors", 0) for o in outs)
        result["bulk_posts"] = sum(
            1 for r in log if r["method"] == "POST" and r["path"].endswith("/bulk/async")
        )
        result["polls"] = sum(
            1 for r in log if r["method"] == "GET" and r["path"].startswith("/v1/async-actions/")
        )
        result["records_per_request"] = result["stored"] / len(log) if log else float("nan")
    return result


def _pct(x: float) -> str:
    return "n/a" if x != x else f"{x * 100:.1f}%"


def print_report(args: argparse.Namespace, results: dict[str, dict]) -> None:
    from reverse_etl.ratelimit import RateSpec

    limit, window = args.limit, args.window
    margin_ms = RateSpec(limit, window).window_ms - int(window * 1000)
    print()
    print(
        f"Voucherify sandbox limit {limit} requests per {window:g} s ({limit / window:.1f}/s); paced client: "
        f"requests_per_minute={limit * 60 / window:g}, rate_window_seconds={window:g} (its bucket counts over "
        f"{window:g} s + {margin_ms} ms margin); {args.workers} worker processes; {args.seconds:g} s per order "
        "phase"
    )
    header = (
        f"{'phase':<18} {'requests':>8} {'accepted':>8} {'429s':>5} {'max/window':>10} "
        f"{'mean/window':>11} {'min/window':>10} {'utilisation':>11} {'orders':>7} {'stored':>7} "
        f"{'lost':>5}"
    )
    print(header)
    print("-" * len(header))
    for key in ("paced", "unpaced"):
        r = results.get(key)
        if not r:
            continue
        print(
            f"{key:<18} {r['requests']:>8} {r['accepted']:>8} {r['throttled_429']:>5} "
            f"{r['max_in_window']:>6}/{limit:<3} {r['mean_per_window']:>11.1f} "
            f"{r['min_per_window'] if r['min_per_window'] is not None else 'n/a':>10} "
            f"{_pct(r['utilisation']):>11} {r['attempted']:>7} {r['stored']:>7} {r['missing']:>5}"
        )
    for key in ("paced", "unpaced"):
        r = results.get(key)
        if not r:
            continue
        c = r["client"]
        print(
            f"  {key}: steady state {r['full_windows']} full windows, accepted per window {r['window_counts']}; "
            f"{r['steady_rate']:.2f} accepted/s; {limit} more requests accepted every {r['slot_reuse_s']:.3f} s "
            f"on average = {_pct(r['sustained'])} of the allowed rate (alignment-free); phase wall "
            f"{r['wall_s']:.1f} s"
        )
        print(
            f"  {key}: sandbox statuses {r['status_counts']}; client side: {c['requests']} requests, "
            f"{c['throttled']} 429s seen, waited {c['rate_wait_seconds']:.1f} s in our limiter and "
            f"{c['throttle_wait_seconds']:.1f} s on 429s/rate headers (sum over workers); requests per worker "
            f"{r['per_worker_requests']}; failed calls {r['client_failed']}"
        )
        for error, n in r["errors"].items():
            print(f"    {n} x {error}")
    b = results.get("bulk")
    if b:
        c = b["client"]
        print()
        print(
            f"bulk phase: {b['batches']} batches of {args.batch_size} customers ({b['attempted']:,} sent) -> "
            f"{b['stored']:,} stored, {b['item_errors']} item errors, actions {dict(b['actions'])}"
        )
        print(
            f"  requests {b['requests']} = {b['bulk_posts']} bulk POSTs + {b['polls']} async-action polls "
            f"+ {b['requests'] - b['bulk_posts'] - b['polls']} other; 429s {b['throttled_429']}; "
            f"records per request {b['records_per_request']:.1f} "
            f"({b['stored'] / max(1, b['bulk_posts']):.0f} per bulk POST); "
            f"{b['stored'] / b['wall_s']:.0f} records/s over {b['wall_s']:.1f} s; max/window "
            f"{b['max_in_window']}/{limit}; client waited {c['rate_wait_seconds']:.1f} s in our limiter"
        )
    print()
    print("summary:")
    p, u = results.get("paced"), results.get("unpaced")
    if p:
        if not p["window_counts"]:
            verdict = "n/a: too short for a steady state, use --seconds of 3 windows or more"
        else:
            verdict = "MET" if p["utilisation"] > 0.95 and not p["sustained"] <= 0.95 else "NOT MET"
        print(
            f"  paced: max {p['max_in_window']}/{limit} per window, mean {p['mean_per_window']:.1f}/{limit} per "
            f"full window = {_pct(p['utilisation'])} utilisation, sustained {_pct(p['sustained'])} "
            f"(goal > 95%: {verdict}); "
            f"{p['throttled_429']} limiter 429s (goal 0: {'MET' if p['throttled_429'] == 0 else 'NOT MET'}); "
            f"{p['stored']}/{p['attempted']} orders delivered"
        )
    if u:
        print(
            f"  unpaced baseline: {u['throttled_429']} limiter 429s for {u['accepted']} accepted requests "
            f"({u['throttled_429'] / max(1, u['requests']):.0%} of all requests), max {u['max_in_window']}/"
            f"{limit} per window, mean {u['mean_per_window']:.1f} per full window = "
            f"{_pct(u['utilisation'])} utilisation, sustained {_pct(u['sustained'])}; "
            f"{u['stored']}/{u['attempted']} orders delivered "
            f"({'everything' if u['missing'] == 0 and u['client_failed'] == 0 else 'NOT everything'})"
        )
    if b:
        print(
            f"  bulk: {b['records_per_request']:.0f} records per request (polls included), "
            f"{b['stored']:,}/{b['attempted']:,} customers stored, {b['throttled_429']} 429s"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Deliver to the in-process Voucherify sandbox through the real VoucherifyHook from several "
        "worker processes sharing one rate-limit bucket; print the sandbox-side utilisation, 429s and "
        "records per request, with an unpaced baseline.",
        epilog="Goals: paced utilisation > 95% of the allowed rate and 0 limiter 429s.",
    )
    parser.add_argument(
        "--limit", type=int, default=100, help="sandbox limit: requests per window (%(default)s)"
    )
    parser.add_argument("--window", type=float, default=10.0, help="sandbox window in seconds (%(default)s)")
    parser.add_argument(
        "--workers", type=int, default=3, help="worker processes, one hook each (%(default)s)"
    )
    parser.add_argument(
        "--seconds",
        type=float,
        default=40.0,
        help="wall seconds of each order phase (paced, unpaced) (%(default)s)",
    )
    parser.add_argument(
        "--bulk-batches", type=int, default=3, help="bulk phase: batches per worker (%(default)s)"
    )
    parser.add_argument(
        "--batch-size", type=int, default=1000, help="bulk phase: customers per batch (%(default)s)"
    )
    parser.add_argument("--skip-baseline", action="store_true", help="skip the unpaced baseline phase")
    parser.add_argument("--skip-bulk", action="store_true", help="skip the bulk phase")
    parser.add_argument("--keep-tmp", action="store_true", help="keep the temporary AIRFLOW_HOME")
    add_results_option(parser)
    args = parser.parse_args(argv)
    if args.limit < 1 or args.window <= 0 or args.workers < 1 or args.seconds <= 0:
        parser.error("--limit, --window, --workers and --seconds must be positive")

    _paths()
    from sandbox.env import airflow_env
    from sandbox.voucherify import VoucherifySandbox

    tmp = Path(tempfile.mkdtemp(prefix="retl-bench-delivery-"))
    os.environ.update(airflow_env(tmp / "airflow"))  # before any worker imports Airflow
    sb = VoucherifySandbox(port=0, limit=args.limit, window_seconds=args.window)
    results: dict[str, dict] = {}
    started = time.monotonic()
    load_start = os.getloadavg()[0]
    try:
        url = sb.start()
        _say(f"Voucherify sandbox at {url}: {args.limit} requests per {args.window:g} s")
        paced_rpm = args.limit * 60 / args.window
        results["paced"] = run_phase(sb, args, tmp, "paced", "orders", paced_rpm, args.seconds)
        if not args.skip_bulk:
            results["bulk"] = run_phase(sb, args, tmp, "bulk", "bulk", paced_rpm, max(args.seconds, 60.0))
        if not args.skip_baseline:
            results["unpaced"] = run_phase(
                sb, args, tmp, "unpaced", "orders", UNPACED_REQUESTS_PER_MINUTE, args.seconds
            )
    finally:
        sb.stop()
        if args.keep_tmp:
            _say(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    print_report(args, results)
    print(
        f"  total benchmark wall time {time.monotonic() - started:.0f} s; load average at start "
        f"{load_start:.2f}, at end {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs (other work on the machine "
        "delays requests between our limiter and the sandbox, which can cost 429s when the delay passes the "
        "client's window margin)"
    )
    options = {k: v for k, v in vars(args).items() if k != "results"}  # no machine's path in the JSON
    return finish("delivery", figures(args, results), args.results, options=options, phases=results)


def figures(args: argparse.Namespace, results: dict[str, dict]) -> list[dict]:
    """The paced phase's figures, each with the unpaced phase's as its baseline (when it ran)."""
    p, u, b = results["paced"], results.get("unpaced") or {}, results.get("bulk")
    rate = f"at {args.limit} per {args.window:g} s"

    def percent(x: float | None) -> float | None:
        return None if x is None or x != x else round(x * 100, 1)

    out = [
        figure(
            f"Voucherify paced {rate}: mean per full window / limit",
            percent(p["utilisation"]),
            unit="%",
            baseline=percent(u.get("utilisation")),
            goal="> 95 %",
            met=p["utilisation"] > 0.95,
        ),
        figure(
            f"Voucherify paced {rate}: share of the rate used",
            percent(p["sustained"]),
            unit="%",
            baseline=percent(u.get("sustained")),
            goal="> 95 %",
            met=p["sustained"] > 0.95,
            headline=True,
        ),
        figure(
            "Voucherify paced: 429s (baseline: unpaced)",
            p["throttled_429"],
            baseline=u.get("throttled_429"),
            goal="0",
            met=p["throttled_429"] == 0,
            headline=True,
        ),
        figure(
            "Voucherify paced: most requests accepted in a sliding window",
            p["max_in_window"],
            baseline=u.get("max_in_window"),
            goal=f"<= {args.limit}",
            met=p["max_in_window"] <= args.limit,
        ),
        figure(
            "Voucherify paced: orders lost",
            p["missing"],
            baseline=u.get("missing"),
            goal="0",
            met=p["missing"] == 0,
        ),
    ]
    if b:
        out.append(
            figure(
                f"Voucherify bulk customers ({args.batch_size:,} per POST): records per request, polls included",
                round(b["records_per_request"], 1),
                baseline=1,
            )
        )
    return out


if __name__ == "__main__":
    sys.exit(main())
