"""Alerts through real notifiers: e-mail to a real SMTP server, JSON to a webhook receiver.

Two Voucherify runs of the customers sync: a clean four-day run sends nothing; a one-day run with a low
warning threshold sends a rejected-share and a volume-drop alert and still succeeds. The failed-run
alert rides on the wrong-token run of test_fail_fast; the deadline callback is called as the executor
calls it."""

from __future__ import annotations

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
        assert (
            alert["url"]
            == f"{BASE_URL}/dags/voucherify_sync/runs/{alert['run_id'].replace(':', '%3A').replace('+', '%2B')}"
        )
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
