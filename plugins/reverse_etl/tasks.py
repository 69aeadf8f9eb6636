"""Callables of the extract, validate and report tasks (run inside Airflow tasks, never at parse time)."""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from reverse_etl.errors import fail_fast
from reverse_etl.window import resolve_window

log = logging.getLogger(__name__)

REPORT_COLUMNS = (
    "extracted",
    "valid",
    "rejected",
    "unchanged_skipped",
    "sent",
    "deleted",
    "erased",
    "deletes_skipped",
    "failed",
    "requests",
    "throttled",
    "seconds",
)
# The UI page and the run note (1,000 characters) keep the counts an operator reads first, in this order.
PAGE_COLUMNS = tuple(c for c in REPORT_COLUMNS if c not in ("erased", "deletes_skipped"))
NOTE_COLUMNS = tuple(c for c in PAGE_COLUMNS if c != "unchanged_skipped")


def selected(params: dict, entity: str) -> bool:
    wanted = params.get("entities")
    return not wanted or entity in wanted


def skip_unless_selected(params: dict, entity: str) -> None:
    if not selected(params, entity):
        from airflow.sdk.exceptions import AirflowSkipException

        raise AirflowSkipException(f"'{entity}' is not in the param 'entities' for this run")


@fail_fast()
def run_extract(destination: str, entity: str) -> dict:
    from airflow.sdk import get_current_context

    from reverse_etl.extract import extract
    from reverse_etl.store import open_store, state_store_url

    context = get_current_context()
    params = context["params"]
    skip_unless_selected(params, entity)
    open_store(state_store_url())  # a missing or foreign store fails the run before any work is done
    window = resolve_window(params, context.get("data_interval_start"), context.get("data_interval_end"))
    return extract(
        destination=destination,
        entity=entity,
        window=window,
        dag_id=context["dag"].dag_id,
        run_id=context["run_id"],
    )


@fail_fast()
def run_validate(manifest: dict) -> dict:
    from airflow.sdk import get_current_context

    from reverse_etl.errors import RejectedShareExceeded
    from reverse_etl.store import utc_now
    from reverse_etl.validate import validate

    context = get_current_context()
    params = context["params"]
    skip_unless_selected(params, manifest["entity"])
    started_at = utc_now()
    try:
        return validate(
            extract_manifest=manifest,
            dag_id=context["dag"].dag_id,
            run_id=context["run_id"],
            max_rejected_share=float(params.get("max_rejected_share", 0.1)),
            record_rejections=not params.get("dry_run"),
        )
    except RejectedShareExceeded as exc:
        record_failed_validation(context, exc, started_at)
        raise


def record_failed_validation(context: Any, exc: Any, started_at: dt.datetime) -> None:
    """A run stopped by its checks is still a run: recorded with its counts and quarantine, so the page,
    the note and the report show what was rejected and where (no load runs after it)."""
    from reverse_etl.ledger import Ledger

    manifest = exc.manifest
    dry_run = bool(context["params"].get("dry_run"))
    report = {
        "destination": manifest["destination"],
        "entity": manifest["entity"],
        "dry_run": dry_run,
        "status": "failed",
        "error": f"{type(exc).__name__}: {exc}",
        "window": manifest.get("window"),
        **{name: 0 for name in REPORT_COLUMNS},
        "extracted": manifest.get("rows", 0),
        "valid": manifest.get("valid", 0),
        "rejected": manifest.get("rejected", 0),
        "quarantine": manifest.get("quarantine_path"),
        "quarantine_rules": manifest.get("quarantine_rules", []),
        "seconds": manifest.get("validate_seconds", 0),
    }
    Ledger(manifest["destination"], manifest["entity"], context["run_id"]).record_run(
        dag_id=context["dag"].dag_id,
        try_number=getattr(context.get("ti"), "try_number", None),
        window=manifest.get("window") or {},
        dry_run=dry_run,
        status="failed",
        started_at=started_at,
        report=report,
    )


NOTE_KEY = "run_note"  # the XCom the run_notes listener copies into the DAG run's note
NOTE_LIMIT = 1000  # Airflow's dag_run_note.content is a VARCHAR(1000)


def _note_cell(report: dict, column: str) -> str:
    dry = report.get("dry_run")
    if column == "sent":
        return f"would send {report.get('to_send', 0)}" if dry else str(report.get("sent", 0))
    if column == "deleted":  # planned deletes and the erasure sweep: both are deletions at the vendor
        if dry:
            return f"would delete {report.get('to_delete', 0) + report.get('erased', 0)}"
        return str(report.get("deleted", 0) + report.get("erased", 0))
    return str(report.get(column, ""))


def headline(reports: list[dict], failed: list[str], *, dry_run: bool) -> str:
    """The note's first line, all the Airflow UI shows of a note until it is opened: the run's totals."""
    total = {name: sum(int(r.get(name) or 0) for r in reports) for name in ("rejected", "failed")}
    if dry_run:
        would = sum(int(r.get("to_send") or 0) for r in reports)
        counts = f"would send {would}, rejected {total['rejected']}"
    else:
        sent = sum(int(r.get("sent") or 0) for r in reports)
        counts = f"sent {sent}, rejected {total['rejected']}, failed {total['failed']}"
    if failed:
        counts += f"; {', '.join(failed)} failed"
    return f"**{'Dry run' if dry_run else 'Run'} report:** {counts}"


def format_note(reports: list[dict], failed: list[str], *, dry_run: bool) -> str:
    """The run's summary as a short markdown note (the grid's note box): a table, quarantines, failures.
    Held under Airflow's 1000 characters: the quarantine files collapse to their folder when too long."""
    lines = [headline(reports, failed, dry_run=dry_run), ""]
    if reports:
        lines += [
            "| entity | " + " | ".join(NOTE_COLUMNS) + " |",
            "|---" * (len(NOTE_COLUMNS) + 1) + "|",
            *(
                f"| {r.get('entity')} | " + " | ".join(_note_cell(r, c) for c in NOTE_COLUMNS) + " |"
                for r in reports
            ),
        ]
    else:
        lines.append("No load report.")
    tail = []
    if failed:
        tail = ["", f"**Failed:** {', '.join(failed)}: see {'its' if len(failed) == 1 else 'their'} log."]
    quarantined = [r for r in reports if r.get("rejected") and r.get("quarantine")]
    choices: list[list[str]] = [[]]
    if quarantined:
        files = "; ".join(f"{r['entity']}: `{r['quarantine']}`" for r in quarantined)
        folder = _common_folder([r["quarantine"] for r in quarantined])
        choices = [["", f"Quarantine: {files}"], ["", f"Quarantine: `{folder}`"], []]
    for quarantine in choices:
        note = "\n".join([*lines, *quarantine, *tail])
        if len(note) <= NOTE_LIMIT:
            return note
    return note[: NOTE_LIMIT - 1] + "…"


def _common_folder(locations: list[str]) -> str:
    """The deepest folder holding every location (paths or ``file://`` URLs, split on ``/`` alike)."""
    parts = [location.split("/")[:-1] for location in locations]
    common = parts[0]
    for other in parts[1:]:
        same = 0
        while same < min(len(common), len(other)) and common[same] == other[same]:
            same += 1
        common = common[:same]
    return "/".join(common)


def format_report(reports: list[dict]) -> str:
    """A fixed-width table, one line per entity, for logs and the demo."""
    header = ["entity", *REPORT_COLUMNS]
    lines = [header]
    for report in reports:
        lines.append(
            [str(report.get("entity"))]
            + [
                ("would send " + str(report.get("to_send", 0)))
                if col == "sent" and report.get("dry_run")
                else str(report.get(col, ""))
                for col in REPORT_COLUMNS
            ]
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join("  ".join(cell.rjust(w) for cell, w in zip(line, widths, strict=True)) for line in lines)


@fail_fast()
def run_report(entities: list[str]) -> dict[str, Any]:
    """Summarise every load of this run from the state store; fail the run if a selected sync has none."""
    from airflow.sdk import get_current_context
    from airflow.sdk.exceptions import AirflowFailException

    from reverse_etl import settings
    from reverse_etl.ledger import run_reports
    from reverse_etl.staging import prune

    context = get_current_context()
    params = context["params"]
    removed = prune(context["dag"].dag_id, settings.staging_retention_days())
    if removed:
        log.info(
            "staging: removed %d run folders older than %s days",
            len(removed),
            settings.staging_retention_days(),
        )
    latest: dict[str, dict] = {}
    for row in run_reports(context["dag"].dag_id, context["run_id"]):
        latest[row["entity"]] = row["report"]
    wanted = [e for e in entities if selected(params, e)]
    reports = [latest[e] for e in wanted if e in latest]
    log.info("run report (%s):\n%s", "dry run" if params.get("dry_run") else "live", format_report(reports))
    send_warnings(context["dag"].dag_id, context["run_id"], reports, params)
    unfinished = [
        e for e in wanted if latest.get(e, {}).get("status", "success") != "success" or e not in latest
    ]
    failed = failed_tasks(context) if unfinished else []
    # Pushed before failing the run: the note says what happened either way.
    context["ti"].xcom_push(NOTE_KEY, format_note(reports, failed, dry_run=bool(params.get("dry_run"))))
    if unfinished:
        where = (
            f"{', '.join(failed)} failed: see {'its' if len(failed) == 1 else 'their'} log"
            if failed
            else "see the failed task's log"
        )
        raise AirflowFailException(f"No successful load for {', '.join(unfinished)}: {where}.")
    return {"entities": reports}


def send_warnings(dag_id: str, run_id: str, reports: list[dict], params: dict) -> None:
    """Alerts on the run's successful loads (rejected share, volume drop); they never fail the run."""
    from reverse_etl import alerts

    for report in reports:
        if report.get("status") == "success":
            for alert in alerts.check_report(dag_id, run_id, report, params):
                log.warning("alert: %s", alert.summary)
                alerts.send(alert)


def failed_tasks(context: Any) -> list[str]:
    """Ids of this run's failed tasks (``customers.extract``), from Airflow's task states: the logs to
    read. Tasks that did not run because of them (upstream_failed) are left out."""
    dag_id, run_id = context["dag"].dag_id, context["run_id"]
    try:
        states = context["ti"].get_task_states(dag_id=dag_id, run_ids=[run_id])
    except Exception as exc:  # an older API server: the report still fails, with the generic hint
        log.warning("cannot read the task states of run %s: %s", run_id, exc)
        return []
    return sorted(task for task, state in (states.get(run_id) or {}).items() if state == "failed")
