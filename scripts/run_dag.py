"""Run DAG runs in-process with ``dag.test()`` and print their reports: used by the demo and the tests.

    python scripts/run_dag.py voucherify_sync --window-start 2026-10-31 --window-end 2026-11-01 \
        [--conf '{"dry_run": true}'] [--json]
    python scripts/run_dag.py --prepare --plan '[{"dag_id": "salesfire_sync", "window_start": "2026-10-31",
        "window_end": "2026-11-01", "conf": {}}, ...]'

``--plan`` runs several DAG runs one after the other in this one process (Airflow and the validation
libraries are imported once: about 10 s saved per run) and prints one JSON line per run as it ends.
``--prepare`` first does the deployment's one-off setup (``scripts/prepare.py``) in this process too.
Exit code 0 when every DAG run succeeded. The environment (AIRFLOW_HOME, AIRFLOW_CONN_*) must be set.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import sys
import time


def run_note(dag_id: str, run_id: str) -> str | None:
    """The DAG run's note as the metadata database holds it (written by the run_notes listener)."""
    from airflow.models import DagRun
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        dag_run = session.scalar(select(DagRun).where(DagRun.dag_id == dag_id, DagRun.run_id == run_id))
        return dag_run.note if dag_run else None


def run(dag_id: str, conf: dict, logical_date: dt.datetime) -> tuple[str, str, list[dict], dict, dict]:
    import os

    from airflow.dag_processing.dagbag import DagBag

    # dag.test() (Airflow 3.3.2) fails on a DAG with a deadline alert (its ids are only assigned when the
    # scheduler's DAG processor stores the DAG) and never evaluates deadlines: leave them to the scheduler.
    os.environ["RETL_ALERT_DEADLINE_MINUTES"] = "0"

    from reverse_etl.errors import SyncError
    from reverse_etl.ledger import run_reports

    bag = DagBag()
    if bag.import_errors:
        raise SystemExit(f"DAG import errors: {bag.import_errors}")
    dag = bag.dags[dag_id]
    dag_run = dag.test(logical_date=logical_date, run_conf=conf)
    try:
        reports = [row["report"] for row in run_reports(dag_id, dag_run.run_id)]
    except SyncError as exc:  # e.g. a missing state store: the run failed on it, say why instead of crashing
        print(f"no report: {exc}", file=sys.stderr)
        reports = []
    instances = dag_run.get_task_instances()
    tasks = {ti.task_id: str(ti.state) for ti in instances}
    tries = {ti.task_id: ti.try_number for ti in instances}
    return str(dag_run.state), dag_run.run_id, reports, tasks, tries


def usage_error(message: str) -> SystemExit:
    """One line on stderr and exit code 2 (argparse's code for bad arguments), no traceback."""
    print(message, file=sys.stderr)
    return SystemExit(2)


def parse_date(flag: str, value: str) -> dt.datetime:
    """A date, YYYY-MM-DD (UTC midnight): the form the DAGs' window params accept."""
    try:
        if len(value) != 10:
            raise ValueError(value)
        parsed = dt.datetime.combine(dt.date.fromisoformat(value), dt.time(), dt.UTC)
    except ValueError:
        raise usage_error(f"{flag} {value!r} is not a date: use YYYY-MM-DD") from None
    return parsed


def result(dag_id: str, conf: dict, logical: dt.datetime) -> dict:
    """One DAG run and what the state store and the metadata database say of it."""
    state, run_id, reports, tasks, tries = run(dag_id, conf, logical)
    latest = {r["entity"]: r for r in reports}
    return {
        "dag_id": dag_id,
        "state": state,
        "run_id": run_id,
        "reports": list(latest.values()),
        "tasks": tasks,
        "tries": tries,
        "note": run_note(dag_id, run_id),
    }


def window_conf(start: str, end: str, extra: dict) -> tuple[dict, dt.datetime]:
    """The run's params and logical date (the window's end) from YYYY-MM-DD dates."""
    start_at = parse_date("--window-start", start)
    logical = parse_date("--window-end", end)
    if logical <= start_at:
        raise usage_error(f"--window-end {end!r} must be after --window-start {start!r}")
    return {"window_start": start, "window_end": end, **extra}, logical


def run_plan(plan: list[dict]) -> int:
    """Each run of ``plan`` in turn, one JSON line each (with its wall ``seconds``) as soon as it ends."""
    runs = [
        (item["dag_id"], *window_conf(item["window_start"], item["window_end"], item.get("conf") or {}))
        for item in plan
    ]
    failed = 0
    for dag_id, conf, logical in runs:
        started = time.monotonic()
        done = result(dag_id, conf, logical)
        done["seconds"] = round(time.monotonic() - started, 1)
        failed += done["state"] != "success"
        print(json.dumps(done, default=str), flush=True)
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dag_id", nargs="?")
    parser.add_argument("--window-start")
    parser.add_argument("--window-end")
    parser.add_argument("--conf", default="{}", help="JSON params for the run")
    parser.add_argument("--json", action="store_true", help="print the reports as one JSON line")
    parser.add_argument("--plan", help="JSON list of runs: {dag_id, window_start, window_end, conf}")
    parser.add_argument("--prepare", action="store_true", help="state store, metadata database, pools first")
    args = parser.parse_args(argv)
    if args.plan:
        try:
            plan = json.loads(args.plan)
        except json.JSONDecodeError as exc:
            raise usage_error(f"--plan is not JSON ({exc})") from None
    elif not (args.dag_id and args.window_start and args.window_end):
        raise usage_error("give a DAG id, --window-start and --window-end (or --plan)")
    else:
        try:
            extra = json.loads(args.conf)
        except json.JSONDecodeError as exc:
            raise usage_error(f"--conf is not JSON ({exc}): use e.g. '{{\"dry_run\": true}}'") from None
        conf, logical = window_conf(args.window_start, args.window_end, extra)
    logging.getLogger("airflow").setLevel(logging.WARNING)
    if args.prepare:
        from prepare import prepare

        print(json.dumps({"prepared": prepare()}), flush=True)
    if args.plan:
        return run_plan(plan)
    done = result(args.dag_id, conf, logical)
    if args.json:
        print(json.dumps(done, default=str))
    else:
        from reverse_etl.tasks import format_report

        print(f"\n{args.dag_id} run {done['run_id']}: {done['state']}\n")
        print(format_report(done["reports"]))
    return 0 if done["state"] == "success" else 1


if __name__ == "__main__":
    sys.exit(main())
