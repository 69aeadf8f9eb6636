"""Alerts of a sync through Airflow notifiers: a failed run, a high rejected share, a volume drop, a
missed deadline.

Which notifiers fire is read from the environment when an alert is sent (not at parse time):
``RETL_ALERT_SMTP_CONN_ID`` + ``RETL_ALERT_EMAIL_TO`` (the SMTP provider's ``SmtpNotifier``) and
``RETL_ALERT_WEBHOOK_CONN_ID`` (``reverse_etl.notifiers.WebhookNotifier``). Nothing configured: no
alerts, said once per process. Bodies carry names, counts and the run's link, never connection
details or vendor error texts (those may echo credentials).
"""

from __future__ import annotations

import logging
import os
import statistics
from dataclasses import dataclass, field
from urllib.parse import quote

log = logging.getLogger(__name__)

VOLUME_HISTORY = 10  # previous successful runs whose median extract is the expected volume
_warned_unconfigured = False


@dataclass
class Alert:
    """One alert: which sync, what happened, the counts and the run's link."""

    kind: str  # run_failed | rejected_share | volume_drop | deadline_missed
    dag_id: str
    run_id: str
    summary: str
    entity: str | None = None
    counts: dict = field(default_factory=dict)

    @property
    def url(self) -> str:
        return run_url(self.dag_id, self.run_id)

    @property
    def subject(self) -> str:
        where = f"{self.dag_id}.{self.entity}" if self.entity else self.dag_id
        return f"[reverse-etl] {self.kind.replace('_', ' ')}: {where}"

    @property
    def text(self) -> str:
        lines = [self.summary, f"DAG: {self.dag_id}", f"Run: {self.run_id}"]
        if self.entity:
            lines.append(f"Entity: {self.entity}")
        lines += [f"{name}: {value}" for name, value in self.counts.items()]
        lines.append(f"Link: {self.url}")
        return "\n".join(lines)

    def as_dict(self) -> dict:
        return {
            "kind": self.kind,
            "dag_id": self.dag_id,
            "run_id": self.run_id,
            "entity": self.entity,
            "summary": self.summary,
            "counts": self.counts,
            "url": self.url,
        }


def base_url() -> str:
    """Airflow's UI address (``[api] base_url``), for the links in alerts."""
    from airflow.configuration import conf

    return (conf.get("api", "base_url", fallback=None) or "http://localhost:8080").rstrip("/")


def run_url(dag_id: str, run_id: str) -> str:
    return f"{base_url()}/dags/{quote(dag_id, safe='')}/runs/{quote(run_id, safe='')}"


def configured_notifiers(alert: Alert) -> list:
    """The notifiers the environment names, built for this alert."""
    global _warned_unconfigured
    notifiers = []
    smtp_conn_id = os.environ.get("RETL_ALERT_SMTP_CONN_ID")
    email_to = [a.strip() for a in os.environ.get("RETL_ALERT_EMAIL_TO", "").split(",") if a.strip()]
    if smtp_conn_id and email_to:
        from html import escape

        from airflow.providers.smtp.notifications.smtp import SmtpNotifier

        notifiers.append(
            SmtpNotifier(
                smtp_conn_id=smtp_conn_id,
                to=email_to,
                from_email=os.environ.get("RETL_ALERT_EMAIL_FROM") or None,
                subject=alert.subject,
                html_content=f"<pre>{escape(alert.text)}</pre>",
            )
        )
    elif smtp_conn_id or email_to:
        log.warning("alerts: set both RETL_ALERT_SMTP_CONN_ID and RETL_ALERT_EMAIL_TO to send e-mail alerts")
    if webhook_conn_id := os.environ.get("RETL_ALERT_WEBHOOK_CONN_ID"):
        from reverse_etl.notifiers import WebhookNotifier

        notifiers.append(
            WebhookNotifier(http_conn_id=webhook_conn_id, payload=alert.as_dict(), text=alert.text)
        )
    if not notifiers and not _warned_unconfigured:
        _warned_unconfigured = True
        log.info(
            "alerts: no notifier configured (RETL_ALERT_SMTP_CONN_ID, RETL_ALERT_WEBHOOK_CONN_ID): none sent"
        )
    return notifiers


def send(alert: Alert) -> int:
    """Send ``alert`` through every configured notifier; returns how many sent it. A notifier that fails
    is logged and skipped: an alert must never fail or retry the sync it reports on."""
    sent = 0
    for notifier in configured_notifiers(alert):
        try:
            # notify(), not __call__: our texts are final, not Jinja templates to render
            notifier.notify({"dag_id": alert.dag_id, "run_id": alert.run_id})
            sent += 1
        except Exception as exc:
            log.error("alerts: %s could not send the %s alert: %s", type(notifier).__name__, alert.kind, exc)
    if sent:
        log.info("alerts: %s alert sent through %d notifier(s)", alert.kind, sent)
    return sent


def _counts(report: dict, names=("extracted", "valid", "rejected", "sent", "failed")) -> dict:
    return {name: report[name] for name in names if name in report}


def check_report(dag_id: str, run_id: str, report: dict, params: dict, url: str | None = None) -> list[Alert]:
    """The warnings one load's report raises: a rejected share above ``warn_rejected_share``, an extract
    far below the median of the sync's last runs (``volume_drop_share``, ``volume_min_runs``)."""
    alerts = []
    entity = report.get("entity")
    extracted = int(report.get("extracted") or 0)
    rejected = int(report.get("rejected") or 0)
    warn = params.get("warn_rejected_share")
    if warn is not None and extracted and rejected / extracted > float(warn):
        alerts.append(
            Alert(
                "rejected_share",
                dag_id,
                run_id,
                f"{rejected} of {extracted} rows ({rejected / extracted:.1%}) failed the data-quality checks, "
                f"above the warning threshold {float(warn):.1%} (the run fails above max_rejected_share "
                f"{float(params.get('max_rejected_share', 0.1)):.1%}); they are quarantined.",
                entity,
                _counts(report),
            )
        )
    drop = float(params.get("volume_drop_share") or 0)
    if drop > 0 and not report.get("dry_run"):
        previous = previous_extracts(dag_id, entity, run_id, url)
        min_runs = int(params.get("volume_min_runs", 3))
        if len(previous) >= min_runs:
            median = statistics.median(previous)
            if extracted < drop * median:
                alerts.append(
                    Alert(
                        "volume_drop",
                        dag_id,
                        run_id,
                        f"Extracted {extracted} rows, below {drop:.0%} of the median {median:g} of the last "
                        f"{len(previous)} runs: check the source tables and the window.",
                        entity,
                        {**_counts(report), "median_extracted": median, "previous_runs": len(previous)},
                    )
                )
    return alerts


def previous_extracts(dag_id: str, entity: str, run_id: str, url: str | None = None) -> list[int]:
    """Rows extracted by the sync's last successful live runs before this one (newest first)."""
    import json

    from sqlalchemy import select

    from reverse_etl.store import open_store, state_store_url

    engine, _, _, runs, _ = open_store(url or state_store_url())
    with engine.connect() as conn:
        rows = conn.execute(
            select(runs.c.run_id, runs.c.report)
            .where(
                (runs.c.dag_id == dag_id)
                & (runs.c.entity == entity)
                & (runs.c.run_id != run_id)
                & (runs.c.status == "success")
                & (runs.c.dry_run == 0)
            )
            .order_by(runs.c.id.desc())
        ).all()
    latest: dict[str, int] = {}  # one value per run: its last successful try
    for row in rows:
        if row.run_id not in latest:
            latest[row.run_id] = int(json.loads(row.report or "{}").get("extracted") or 0)
        if len(latest) == VOLUME_HISTORY:
            break
    return list(latest.values())


def on_run_failure(context) -> None:
    """DAG ``on_failure_callback``: the failed run, its failed task and what each sync got done."""
    dag_id = context["dag"].dag_id
    run_id = context["run_id"]
    ti = context.get("ti")
    counts: dict = {}
    try:
        from reverse_etl.ledger import run_reports

        for row in run_reports(dag_id, run_id):
            counts[f"{row['entity']} ({row['report'].get('status')})"] = ", ".join(
                f"{k} {v}" for k, v in _counts(row["report"]).items()
            )
    except Exception as exc:  # the store may be what failed: the alert still goes out
        log.warning("alerts: no load reports for run %s: %s", run_id, exc)
    task = f" at task {ti.task_id}" if ti is not None and getattr(ti, "task_id", None) else ""
    send(Alert("run_failed", dag_id, run_id, f"The run failed{task}; see its logs.", counts=counts))


def on_deadline_missed(context: dict, **kwargs) -> None:
    """Deadline alert callback (runs on an executor): the run was not finished in time."""
    dag_run = context.get("dag_run") or {}
    deadline = (context.get("deadline") or {}).get("deadline_time")
    send(
        Alert(
            "deadline_missed",
            dag_run.get("dag_id") or "",
            dag_run.get("dag_run_id") or dag_run.get("run_id") or "",
            f"The run had not finished by its deadline {deadline} (state: {dag_run.get('state')}).",
            counts={"queued_at": dag_run.get("queued_at"), "start_date": dag_run.get("start_date")},
        )
    )


def deadline_alert(default_minutes: int):
    """The DAG's deadline: a run not finished ``RETL_ALERT_DEADLINE_MINUTES`` after it was queued
    (default ``default_minutes``; 0 = none) calls ``on_deadline_missed``."""
    minutes = int(os.environ.get("RETL_ALERT_DEADLINE_MINUTES", default_minutes))
    if minutes <= 0:
        return None
    import datetime as dt

    from airflow.sdk import DeadlineAlert, DeadlineReference, SyncCallback

    return DeadlineAlert(
        reference=DeadlineReference.DAGRUN_QUEUED_AT,
        interval=dt.timedelta(minutes=minutes),
        callback=SyncCallback("reverse_etl.alerts.on_deadline_missed"),
    )
