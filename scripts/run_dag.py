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


def run(dag_id: str, conf: dict, logical_date: dt.datetime) -> tuple[str, str, list[dict], dict]:
    from airflow.dag_processing.dagbag import DagBag

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
    tasks = {ti.task_id: str(ti.state) for ti in dag_run.get_task_instances()}
    return str(dag_run.state), dag_run.run_id, reports, tasks


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dag_id")
    parser.add_argument("--window-start", required=True)
    parser.add_argument("--window-end", required=True)
    parser.add_argument("--conf", default="{}", help="JSON params for the run")
    parser.add_argument("--json", action="store_true", help="print the reports as one JSON line")
    args = parser.parse_args(argv)
    conf = {"window_start": args.window_start, "window_end": args.window_end, **json.loads(args.conf)}
    logical = dt.datetime.fromisoformat(args.window_end).replace(tzinfo=dt.UTC)
    logging.getLogger("airflow").setLevel(logging.WARNING)
    state, run_id, reports, tasks = run(args.dag_id, conf, logical)
    latest = {r["entity"]: r for r in reports}
    if args.json:
        print(
            json.dumps(
                {"state": state, "run_id": run_id, "reports": list(latest.values()), "tasks": tasks},
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
