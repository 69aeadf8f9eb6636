"""A generic webhook notifier: posts an alert as JSON to the URL of an ``http`` connection.

Chat tools (Slack, Mattermost, Rocket.Chat, Teams workflows) accept incoming webhooks reading the
``text`` field; anything else can read ``alert``. Kept to ``requests`` so no chat-specific provider
(and its dependencies) is needed.
"""

from __future__ import annotations

from airflow.sdk import BaseNotifier


class WebhookNotifier(BaseNotifier):
    """POST ``{"text": ..., "alert": {...}}`` to the connection's URL.

    The connection: host (with or without scheme), optional port and path in ``schema``/extra ``endpoint``,
    login/password for basic auth, extra ``headers`` (a JSON object) and ``timeout_seconds`` (10).
    """

    template_fields = ("http_conn_id",)

    def __init__(self, *, http_conn_id: str, payload: dict, text: str, **kwargs):
        super().__init__(**kwargs)
        self.http_conn_id = http_conn_id
        self.payload = payload
        self.text = text

    def url(self, conn) -> str:
        host = conn.host or ""
        if "://" not in host:
            scheme = conn.schema if conn.schema in ("http", "https") else "http"
            host = f"{scheme}://{host}"
        if conn.port:
            host = f"{host.rstrip('/')}:{conn.port}"
        endpoint = conn.extra_dejson.get("endpoint") or ""
        return f"{host.rstrip('/')}/{endpoint.lstrip('/')}" if endpoint else host

    def notify(self, context) -> None:
        import requests
        from airflow.sdk import BaseHook

        conn = BaseHook.get_connection(self.http_conn_id)
        extra = conn.extra_dejson
        response = requests.post(
            self.url(conn),
            json={"text": self.text, "alert": self.payload},
            headers=extra.get("headers") or {},
            auth=(conn.login, conn.password or "") if conn.login else None,
            timeout=float(extra.get("timeout_seconds", 10)),
        )
        if response.status_code >= 300:
            # the status only: a receiver's body may echo the request, headers included
            raise RuntimeError(
                f"webhook connection '{self.http_conn_id}' answered HTTP {response.status_code}"
            )
