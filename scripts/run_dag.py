"""Run one DAG run in-process with ``dag.test()`` and print its report: used by the demo and the tests.

    python scripts/run_dag.py voucherify_sync --window-start 2026-10-31 --window-end 2026-11-01 \
        [--conf '{"dry_run": true}'] [--json]

Exit code 0 when the DAG run succeeded. The environment (AIRFLOW_HOME, AIRFLOW_CONN_*) must be set.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import sys


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
    """An ISO date or date-time (UTC when it names no offset)."""
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise usage_error(f"{flag} {value!r} is not a date: use YYYY-MM-DD or an ISO date-time") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dag_id")
    parser.add_argument("--window-start", required=True)
    parser.add_argument("--window-end", required=True)
    parser.add_argument("--conf", default="{}", help="JSON params for the run")
    parser.add_argument("--json", action="store_true", help="print the reports as one JSON line")
    args = parser.parse_args(argv)
    start = parse_date("--window-start", args.window_start)
    logical = parse_date("--window-end", args.window_end)
    if logical <= start:
        raise usage_error(
            f"--window-end {args.window_end!r} must be after --window-start {args.window_start!r}"
        )
    try:
        extra = json.loads(args.conf)
    except json.JSONDecodeError as exc:
        raise usage_error(f"--conf is not JSON ({exc}): use e.g. '{{\"dry_run\": true}}'") from None
    conf = {"window_start": args.window_start, "window_end": args.window_end, **extra}
    logging.getLogger("airflow").setLevel(logging.WARNING)
    state, run_id, reports, tasks, tries = run(args.dag_id, conf, logical)
    latest = {r["entity"]: r for r in reports}
    if args.json:
        print(
            json.dumps(
                {
                    "state": state,
                    "run_id": run_id,
                    "reports": list(latest.values()),
                    "tasks": tasks,
                    "tries": tries,
                },
                default=str,
            )
        )
    else:
        from reverse_etl.tasks import format_report

        print(f"\n{args.dag_id} run {run_id}: {state}\n")
        print(format_report(list(latest.values())))
    return 0 if state == "success" else 1


if __name__ == "__main__":
    sys.exit(main())
