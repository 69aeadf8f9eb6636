"""`make demo`: the five DAGs (Voucherify, Connectif, Salesfire, SALESmanago, Splio Referral) against their
sandboxes over the sample window, through Airflow (``dag.test()``), then one combined report.

    python scripts/demo.py [--fresh]

How: the sandboxes run as ``python -m sandbox.NAME`` processes on free ports; one child process
(``scripts/run_dag.py --prepare --plan``) does the one-off setup and then the six DAG runs one after the
other, so Airflow and the validation libraries are imported once (in separate processes each run cost
about 10 s more; in parallel processes the two cores were the limit). Then what each sandbox holds is
checked against the runs' reports and the ledger: a mismatch exits 1.

The state store is kept between demos, as in a deployment: a second demo sends nothing new. ``--fresh``
starts from an empty one. The result also goes to ``.airflow/demo-result.json``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import unquote, urlparse

from demo_report import (
    SANDBOX_OF,
    check_landed,
    created_by_others,
    done_line,
    landed,
    log_line,
    render,
    run_line,
    sandboxes_line,
    sent_per_entity,
)
from local import (
    BASE,
    HOME,
    REPO,
    SFTP_ROOT,
    ensure_warehouse,
    environment,
    free_port,
    say,
    shown,
    start_sandboxes,
)
from procs import spawn, stop

WINDOW = ("2026-10-31", "2026-11-01")
# Connectif refuses a purchase whose contact or products it does not know (E0101/E0102), and the window's
# orders are mostly by customers who did not change in it: the demo loads every contact and product first,
# as a new deployment's initial load would (CSV imports: a handful of requests).
INITIAL = ("2026-10-01", "2026-11-01")
PLAN = (
    ("voucherify", "voucherify_sync", "daily", WINDOW, None),
    ("connectif", "connectif_sync", "initial", INITIAL, ["contacts", "products"]),
    ("connectif", "connectif_sync", "daily", WINDOW, None),
    ("salesfire", "salesfire_sync", "daily", WINDOW, None),
    ("salesmanago", "salesmanago_sync", "daily", WINDOW, None),
    ("splio_referral", "splio_referral_sync", "daily", WINDOW, None),
)
# Every sandbox and connection allows this many requests a minute (the vendors: 100), so no run waits for
# the limiter; the report says what the real limits would mean. Async jobs are polled every 0.2 s.
LIMIT = 6000
FAST = {"async_poll_seconds": 0.2, "import_poll_seconds": 0.2}
RESULT = HOME / "demo-result.json"
LOG = HOME / "demo.log"


def in_local_dir(path: Path) -> str:
    """``path`` relative to the local folder (RETL_LOCAL_DIR, the repository by default) when inside it."""
    return str(path.relative_to(BASE)) if path.is_relative_to(BASE) else str(path)


def local_url(url: str | None) -> str | None:
    """A staging URL (``file:///...``) as a local path."""
    if not url:
        return None
    return in_local_dir(Path(unquote(urlparse(url).path))) if url.startswith("file://") else url


def run_plan(env: dict[str, str], started: list) -> tuple[list[dict], list[str]]:
    """The child process: setup, then each run of PLAN; its lines are reported as they come."""
    plan = [
        {
            "dag_id": dag_id,
            "window_start": window[0],
            "window_end": window[1],
            "conf": {"entities": entities} if entities else {},
        }
        for _, dag_id, _, window, entities in PLAN
    ]
    command = [sys.executable, str(REPO / "scripts" / "run_dag.py"), "--prepare", "--plan", json.dumps(plan)]
    runs: list[dict] = []
    prepared: list[str] = []
    with LOG.open("w") as log:
        # Airflow logs to stdout: every line goes to the log but the child's own JSON lines
        child = spawn(command, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        started.append(child)
        for line in child.stdout:
            done = _result_line(line)
            if done is None:
                log.write(line)
                continue
            if "prepared" in done:
                for step in done["prepared"]:
                    say(step)
                    prepared.append(step.replace(f"{BASE}/", ""))  # as the README shows them
                continue
            destination, _, label, window, entities = PLAN[len(runs)]
            run = {
                "destination": destination,
                "dag_id": done["dag_id"],
                "label": label,
                "window": list(window),
                "entities": entities,
                "state": done["state"],
                "seconds": done["seconds"],
                "run_id": done["run_id"],
                "reports": [
                    {**report, "quarantine": local_url(report.get("quarantine"))}
                    for report in done["reports"]
                ],
            }
            runs.append(run)
            print(run_line(run), flush=True)
        child.wait()
    return runs, prepared


def _result_line(line: str) -> dict | None:
    """A line of run_dag.py's own output (the setup's steps, or a run's result), else None."""
    if not line.startswith('{"'):
        return None
    try:
        done = json.loads(line)
    except json.JSONDecodeError:
        return None
    return done if isinstance(done, dict) and ("prepared" in done or "dag_id" in done) else None


def sandbox_holdings(urls: dict[str, str]) -> tuple[dict, dict, dict]:
    """What each sandbox holds and how many requests it answered; the SFTP folder as Splio would pick it up."""
    import requests

    from sandbox.sftp import check_referral_file

    held, stats = {}, {}
    for destination, name in SANDBOX_OF.items():
        if name == "sftp":
            continue
        store = requests.get(f"{urls[name]}/_sandbox/store", timeout=30).json()
        numbers = requests.get(f"{urls[name]}/_sandbox/stats", timeout=30).json()
        held[destination] = landed(destination, store, numbers)
        stats[destination] = {
            "requests": numbers["requests_total"],
            "throttled": numbers["throttled_by_limiter"] + numbers["throttled_by_fault"],
            "max_in_window": numbers["max_in_window"],
            "besides": created_by_others(destination, store),
        }
    files = {}
    for path in sorted(SFTP_ROOT.glob("*")) if SFTP_ROOT.exists() else []:
        if path.is_file() and not path.name.startswith("."):
            data = path.read_bytes()
            rows = max(0, data.count(b"\n") - 1)
            files[path.name] = {
                "status": "refused" if check_referral_file(data) else "imported",
                "rows": rows,
            }
    held["splio_referral"] = landed("splio_referral", files)
    return held, stats, files


STATE_URL = f"sqlite:///{HOME / 'retl' / 'state.db'}"


def ledger_counts(run_ids: list[str]) -> dict[str, dict[str, int]]:
    """The ledger's deliveries in these runs, per destination and entity."""
    from reverse_etl.ledger import delivered_in_runs

    counts: dict[str, dict[str, int]] = {}
    for (destination, entity), n in sorted(delivered_in_runs(run_ids, STATE_URL).items()):
        counts.setdefault(destination, {})[entity] = n
    return counts


def delivered_so_far() -> int:
    """Records the state store holds as delivered (0 before its first run)."""
    if not (HOME / "retl" / "state.db").exists():
        return 0
    from sqlalchemy import func, select

    from reverse_etl.store import open_store

    engine, ledger = open_store(STATE_URL)[:2]
    with engine.connect() as conn:
        query = select(func.count()).select_from(ledger).where(ledger.c.status == "delivered")
        return conn.execute(query).scalar_one()


def refusals(runs: list[dict]) -> list[dict]:
    """Per run and entity with failures: how many, and the vendor's first message (the ledger has each)."""
    from sqlalchemy import select

    from reverse_etl.store import open_store

    engine, ledger = open_store(STATE_URL)[:2]
    found = []
    with engine.connect() as conn:
        for run in runs:
            for report in run["reports"]:
                if not report.get("failed"):
                    continue
                query = (
                    select(ledger.c.error)
                    .where(
                        ledger.c.destination == run["destination"],
                        ledger.c.entity == report["entity"],
                        ledger.c.status == "failed",
                        ledger.c.last_run_id == run["run_id"],
                    )
                    .order_by(ledger.c.record_key)
                    .limit(1)
                )
                found.append(
                    {
                        "destination": run["destination"],
                        "entity": report["entity"],
                        "failed": report["failed"],
                        "example": conn.execute(query).scalar(),
                    }
                )
    return found


def sample_key(runs: list[dict]) -> str | None:
    """A customer Voucherify never got (its first quarantined one): what `why` is worth asking about."""
    for run in runs:
        for report in run["reports"]:
            if (
                run["destination"] == "voucherify"
                and report["entity"] == "customers"
                and report["quarantine"]
            ):
                path = BASE / report["quarantine"]
                if path.exists():
                    with path.open() as rows:
                        first = rows.readline()
                    return json.loads(first)["record_key"] if first else None
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/demo.py", description=__doc__.splitlines()[0])
    parser.add_argument("--fresh", action="store_true", help="start from an empty state store")
    args = parser.parse_args(argv)
    began = time.monotonic()
    ensure_warehouse()
    if args.fresh:
        shutil.rmtree(HOME / "retl", ignore_errors=True)
    shutil.rmtree(SFTP_ROOT, ignore_errors=True)  # the SFTP server starts empty, as the HTTP sandboxes do
    (HOME / "retl").mkdir(parents=True, exist_ok=True)
    before = delivered_so_far()
    started: list = []
    try:
        sandboxes = start_sandboxes({name: free_port() for name in SANDBOX_OF.values()}, LIMIT)
        started.extend(sandboxes.procs)
        urls = sandboxes.urls
        print(sandboxes_line(urls, sandboxes.sftp["port"]))
        print(log_line(shown(LOG)), flush=True)
        runs, prepared = run_plan(environment(sandboxes, LIMIT, FAST), started)
        if len(runs) < len(PLAN):
            say(f"the runs stopped after {len(runs)} of {len(PLAN)}: see {shown(LOG)}")
            return 1
        held, stats, files = sandbox_holdings(urls)
    finally:
        stop(started[::-1], grace=10)
    ledger = ledger_counts([run["run_id"] for run in runs])
    result = {
        "window": list(WINDOW),
        "sandboxes": {"urls": urls, "sftp_port": sandboxes.sftp["port"]},
        "prepared": prepared,
        "runs": runs,
        "landed": held,
        "ledger": ledger,
        "sandbox_stats": stats,
        "sftp_files": files,
        "sandbox_limit": LIMIT,
        "mismatches": check_landed(sent_per_entity(runs), ledger, held),
        "refused": refusals(runs),
        "delivered_before": before,
        "sample_key": sample_key(runs),
        "paths": {
            "state": in_local_dir(HOME / "retl" / "state.db"),
            "airflow_home": in_local_dir(HOME),
            "log": in_local_dir(LOG),
            "staging": in_local_dir(HOME / "retl" / "staging"),
            "result": in_local_dir(RESULT),
        },
        "seconds": round(time.monotonic() - began, 1),
    }
    RESULT.write_text(json.dumps(result, indent=1, default=str) + "\n")
    base = "" if BASE == REPO else str(BASE)
    print()
    print(render(result, base))
    print()
    print(done_line(result, base))
    ok = not result["mismatches"] and all(run["state"] == "success" for run in runs)
    return 0 if ok else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # the sandboxes and the runs were stopped on the way out
        print("\ninterrupted: the demo's runs and sandboxes are stopped", file=sys.stderr)
        sys.exit(130)
