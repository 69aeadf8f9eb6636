"""Where the e2e tests' alerts land: a real SMTP server (aiosmtpd) and a webhook receiver
(http.server), both on 127.0.0.1, and the environment naming them as the alert connections."""

from __future__ import annotations

import email
import json
import socket
import threading
from dataclasses import dataclass, field
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from sandbox.env import conn_json

BASE_URL = "http://airflow.example:8080"  # [api] base_url: the links in the alerts


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class AlertReceivers:
    smtp_port: int
    webhook_port: int
    mails: list[Message] = field(default_factory=list)
    hooks: list[dict] = field(default_factory=list)

    def env(self) -> dict[str, str]:
        return {
            "AIRFLOW_CONN_RETL_ALERT_SMTP": conn_json(
                "smtp",
                host="127.0.0.1",
                port=self.smtp_port,
                extra={
                    "disable_ssl": True,
                    "disable_tls": True,
                    "from_email": "retl@example.com",
                    "timeout": 10,
                },
            ),
            "AIRFLOW_CONN_RETL_ALERT_WEBHOOK": conn_json(
                "http", host="127.0.0.1", port=self.webhook_port, extra={"endpoint": "/hooks/retl"}
            ),
            "RETL_ALERT_SMTP_CONN_ID": "retl_alert_smtp",
            "RETL_ALERT_EMAIL_TO": "oncall@example.com, data@example.com",
            "RETL_ALERT_WEBHOOK_CONN_ID": "retl_alert_webhook",
            "AIRFLOW__API__BASE_URL": BASE_URL,
        }

    def alerts(self) -> list[dict]:
        """The webhook payloads' ``alert`` objects, in arrival order."""
        return [hook["alert"] for hook in self.hooks]

    def clear(self) -> None:
        self.mails.clear()
        self.hooks.clear()


class _SmtpHandler:
    def __init__(self, mails: list):
        self.mails = mails

    async def handle_DATA(self, server, session, envelope):
        message = email.message_from_bytes(envelope.original_content or envelope.content)
        message["X-Envelope-To"] = ", ".join(envelope.rcpt_tos)
        self.mails.append(message)
        return "250 OK"


def start_receivers():
    """Start both receivers; returns ``(receivers, stop)``."""
    from aiosmtpd.controller import Controller

    receivers = AlertReceivers(smtp_port=_free_port(), webhook_port=0)
    smtp = Controller(_SmtpHandler(receivers.mails), hostname="127.0.0.1", port=receivers.smtp_port)
    smtp.start()

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            receivers.hooks.append({"path": self.path, **json.loads(body)})
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    http = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    receivers.webhook_port = http.server_address[1]
    thread = threading.Thread(target=http.serve_forever, daemon=True)
    thread.start()

    def stop():
        http.shutdown()
        http.server_close()
        smtp.stop()

    return receivers, stop


def body(message: Message) -> str:
    """The text of an alert mail (the SMTP notifier sends HTML inside a multipart message)."""
    import html
    import re

    parts = [p.get_payload(decode=True).decode() for p in message.walk() if not p.is_multipart()]
    return html.unescape(re.sub(r"<[^>]+>", "", "\n".join(parts)))
