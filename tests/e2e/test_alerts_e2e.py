"""Alerts through real notifiers: e-mail to a real SMTP server, JSON to a webhook receiver.

Two Voucherify runs of the customers sync: a clean four-day run sends nothing; a one-day run with a low
warning threshold sends a rejected-share and a volume-drop alert and still succeeds. The failed-run
alert rides on the wrong-token run of test_fail_fast; the deadline callback is called as the executor
calls it."""

from __future__ import annotations

from urllib.parse import quote

import pytest

from tests.e2e.alert_receivers import BASE_URL, AlertReceivers, body
from tests.e2e.harness import Harness

pytestmark = pytest.mark.e2e

CUSTOMERS = {"entities": ["customers"], "volume_min_runs": 1}
FOUR_DAYS, ONE_DAY = ("2026-10-28", "2026-11-01"), ("2026-10-31", "2026-11-01")


def test_a_clean_run_sends_nothing_then_rejects_and_a_volume_drop_alert(
    harness: Harness, alert_receivers: AlertReceivers
):
    harness.env.update(alert_receivers.env())

    clean = harness.run(CUSTOMERS, window=FOUR_DAYS)
    report = clean["reports"]["customers"]
    assert report["rejected"] / report["extracted"] < 0.05  # the default warn_rejected_share
    assert alert_receivers.mails == [] and alert_receivers.hooks == []

    small = harness.run({**CUSTOMERS, "warn_rejected_share": 0.0}, window=ONE_DAY)
    assert small["state"] == "success"  # warnings never fail the run
    counts = small["reports"]["customers"]
    assert counts["extracted"] < 0.5 * report["extracted"]

    alerts = {a["kind"]: a for a in alert_receivers.alerts()}
    assert sorted(alerts) == ["rejected_share", "volume_drop"]
    for alert in alerts.values():
        assert alert["dag_id"] == "voucherify_sync" and alert["entity"] == "customers"
        assert alert["url"] == f"{BASE_URL}/dags/voucherify_sync/runs/{quote(alert['run_id'], safe='')}"
        assert alert["counts"]["extracted"] == counts["extracted"]
        assert alert["counts"]["rejected"] == counts["rejected"]
    assert alerts["volume_drop"]["counts"]["median_extracted"] == report["extracted"]
    assert alerts["volume_drop"]["counts"]["previous_runs"] == 1
    assert f"{counts['rejected']} of {counts['extracted']} rows" in alerts["rejected_share"]["summary"]
    assert all(hook["path"] == "/hooks/retl" for hook in alert_receivers.hooks)

    subjects = sorted(m["Subject"] for m in alert_receivers.mails)
    assert subjects == [
        "[reverse-etl] rejected share: voucherify_sync.customers",
        "[reverse-etl] volume drop: voucherify_sync.customers",
    ]
    for mail in alert_receivers.mails:
        assert mail["X-Envelope-To"] == "oncall@example.com, data@example.com"
        text = body(mail)
        assert f"Link: {BASE_URL}/dags/voucherify_sync/runs/" in text
        assert f"extracted: {counts['extracted']}" in text
    for secret in _secrets(harness):
        assert all(secret not in body(m) for m in alert_receivers.mails)
        assert all(secret not in str(h) for h in alert_receivers.hooks)


def _secrets(harness: Harness) -> list[str]:
    import json

    return [json.loads(harness.env["AIRFLOW_CONN_VOUCHERIFY_DEFAULT"])["password"]]


def test_a_missed_deadline_alerts_through_the_callback_the_executor_runs(
    airflow_db, alert_receivers: AlertReceivers, monkeypatch
):
    """The scheduler evaluates deadlines (dag.test() does not): the DAG's DeadlineAlert is checked, then
    its callback is run by Airflow's own callback runner with the context the scheduler builds."""
    import datetime as dt

    import structlog
    from airflow.dag_processing.dagbag import DagBag
    from airflow.sdk.definitions.deadline import DagRunQueuedAtDeadline
    from airflow.sdk.execution_time.callback_supervisor import execute_callback

    for name, value in alert_receivers.env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("RETL_ALERT_DEADLINE_MINUTES", raising=False)
    dag = DagBag().dags["voucherify_sync"]
    [deadline] = dag.deadline
    assert isinstance(deadline.reference, DagRunQueuedAtDeadline)
    assert deadline.interval == dt.timedelta(minutes=180)
    assert deadline.callback.path == "reverse_etl.alerts.on_deadline_missed"

    run_id = "scheduled__2026-11-30T03:00:00+00:00"
    context = {  # Deadline.handle_miss: the DAGRunResponse of the run and the deadline
        "dag_run": {
            "dag_run_id": run_id,
            "dag_id": "voucherify_sync",
            "state": "running",
            "queued_at": "2026-12-01T03:00:02Z",
            "start_date": "2026-12-01T03:00:05Z",
        },
        "deadline": {"id": "0193", "deadline_time": "2026-12-01T06:00:02+00:00"},
    }
    ok, error = execute_callback(
        deadline.callback.path,
        {**deadline.callback.kwargs, "context": context},
        "voucherify_sync.py",
        None,
        structlog.get_logger(),
    )
    assert (ok, error) == (True, None)
    [alert] = alert_receivers.alerts()
    assert alert["kind"] == "deadline_missed" and alert["dag_id"] == "voucherify_sync"
    assert alert["run_id"] == run_id
    assert (
        alert["url"] == f"{BASE_URL}/dags/voucherify_sync/runs/scheduled__2026-11-30T03%3A00%3A00%2B00%3A00"
    )
    assert "not finished by its deadline 2026-12-01T06:00:02+00:00 (state: running)" in alert["summary"]
    [mail] = alert_receivers.mails
    assert mail["Subject"] == "[reverse-etl] deadline missed: voucherify_sync"
    assert alert["url"] in body(mail)
