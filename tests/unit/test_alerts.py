"""Alerts without a DAG run: nothing configured sends nothing (said once), a failing notifier never
raises into the sync, and its error names the connection without echoing anything secret."""

from __future__ import annotations

import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from reverse_etl import alerts

KNOBS = ("RETL_ALERT_SMTP_CONN_ID", "RETL_ALERT_EMAIL_TO", "RETL_ALERT_WEBHOOK_CONN_ID")


def an_alert() -> alerts.Alert:
    return alerts.Alert(
        "volume_drop", "voucherify_sync", "manual__1", "Extracted 1 row.", "customers", {"extracted": 1}
    )


def logged(caplog, capsys) -> str:
    """Log lines from either path: pytest's capture, or Airflow's structlog once Airflow set it up."""
    return caplog.text + capsys.readouterr().out


def test_nothing_configured_sends_nothing_and_says_so_once(monkeypatch, caplog, capsys):
    for name in KNOBS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(alerts, "_warned_unconfigured", False)
    with caplog.at_level(logging.INFO, logger="reverse_etl.alerts"):
        assert alerts.send(an_alert()) == 0
        assert alerts.send(an_alert()) == 0
    text = logged(caplog, capsys)
    assert (
        text.count("alerts: no notifier configured (RETL_ALERT_SMTP_CONN_ID, RETL_ALERT_WEBHOOK_CONN_ID)")
        == 1
    )


@pytest.fixture
def failing_webhook():
    class Refuse(BaseHTTPRequestHandler):
        def do_POST(self):
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self.send_response(500)
            self.end_headers()
            self.wfile.write(self.headers.get("Authorization", "").encode())  # a body echoing the request

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Refuse)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def test_a_failing_webhook_is_logged_and_never_raised(monkeypatch, caplog, capsys, failing_webhook):
    conn = {
        "conn_type": "http",
        "host": "127.0.0.1",
        "port": failing_webhook,
        "login": "u",
        "password": "s3cret",
    }
    monkeypatch.setenv("AIRFLOW_CONN_RETL_HOOK", json.dumps(conn))
    monkeypatch.setenv("RETL_ALERT_WEBHOOK_CONN_ID", "retl_hook")
    monkeypatch.delenv("RETL_ALERT_SMTP_CONN_ID", raising=False)
    with caplog.at_level(logging.INFO, logger="reverse_etl.alerts"):
        assert alerts.send(an_alert()) == 0
    text = logged(caplog, capsys)
    assert (
        "alerts: WebhookNotifier could not send the volume_drop alert: "
        "webhook connection 'retl_hook' answered HTTP 500"
    ) in text
    assert "s3cret" not in text


def test_the_alert_text_names_the_sync_the_counts_and_the_run(monkeypatch):
    monkeypatch.setenv("AIRFLOW__API__BASE_URL", "https://airflow.example/")
    alert = an_alert()
    assert alert.subject == "[reverse-etl] volume drop: voucherify_sync.customers"
    assert alert.text == (
        "Extracted 1 row.\nDAG: voucherify_sync\nRun: manual__1\nEntity: customers\nextracted: 1\n"
        "Link: https://airflow.example/dags/voucherify_sync/runs/manual__1"
    )
