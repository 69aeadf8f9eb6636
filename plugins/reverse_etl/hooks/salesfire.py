"""Salesfire: one customer per request to a list's endpoint, signed with that list's secret.

``X-Signature`` is the lowercase hex HMAC-SHA-256 of the exact body bytes sent, keyed with the list's
secret; the body is serialised once, signed, and those very bytes are sent. Salesfire documents no rate limit: ``requests_per_minute`` (default 100) is our own courtesy pace.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

from reverse_etl.errors import ConfigError
from reverse_etl.hooks.base import VendorHttpHook


class SalesfireHook(VendorHttpHook):
    """Connection: host = ``https://api.salesfire.co.uk`` (default), login = the site id, extra ``lists`` =
    ``{"<list id>": "<list secret>", ...}`` (each list's secret from the dashboard's API-instructions
    panel); optional extras ``signature_encoding`` = ``hex`` (default) or ``base64``, and
    ``update_existing`` = ``false`` (default) | ``true`` | ``{"<list id>": true|false, ...}`` (lists not
    named take ``false``): the ``update_existing`` flag sent with every customer of that list.

    Why ``false`` by default: Salesfire's page says "If you choose to update existing profiles, the system
    will skip duplicates"; by those words ``true`` skips (leaves unchanged) a customer that already exists,
    so ``false`` is the value that keeps profiles up to date. The
    wording is ambiguous: a list whose account behaves the other way sets ``true`` for that list.
    """

    conn_name_attr = "salesfire_conn_id"
    default_conn_name = "salesfire_default"
    conn_type = "http"
    hook_name = "Salesfire"
    vendor = "Salesfire"
    default_host = "https://api.salesfire.co.uk"
    default_requests_per_minute = 100

    @property
    def site(self) -> str:
        site = self.connection.login or self.extras.get("site")
        if not site:
            raise ConfigError(f"Salesfire connection '{self.vendor_conn_id}' needs login = the site id.")
        return site

    def secret(self, list_id: str) -> str:
        lists = self.extras.get("lists") or {}
        if isinstance(lists, str):
            lists = json.loads(lists)
        if list_id not in lists:
            raise ConfigError(
                f"Salesfire connection '{self.vendor_conn_id}' has no secret for list '{list_id}' in extra "
                f"'lists' (it knows {', '.join(sorted(lists)) or 'none'}); the SQL mapping's _list must name one."
            )
        return lists[list_id]

    def update_existing(self, list_id: str) -> bool:
        """The list's ``update_existing`` flag (extra ``update_existing``: a bool, or a bool per list)."""
        setting = self.extras.get("update_existing", False)
        if isinstance(setting, str):
            setting = json.loads(setting) if setting.strip().startswith("{") else setting
        if isinstance(setting, dict):
            setting = setting.get(list_id, False)
        if isinstance(setting, str) and setting.strip().lower() in ("true", "false"):
            setting = setting.strip().lower() == "true"
        if not isinstance(setting, bool):
            raise ConfigError(
                f"Salesfire connection '{self.vendor_conn_id}': extra 'update_existing' must be true, false or "
                f'{{"<list id>": true|false}}; got {setting!r} for list {list_id!r}.'
            )
        return setting

    def auth_headers(self) -> dict[str, str]:
        return {"Content-Type": "application/json"}

    def signature(self, list_id: str, body: bytes) -> str:
        """HMAC-SHA-256 of the exact bytes sent, keyed with the list's secret."""
        digest = hmac.new(self.secret(list_id).encode("utf-8"), body, hashlib.sha256)
        if self.extras.get("signature_encoding", "hex") == "base64":
            import base64

            return base64.b64encode(digest.digest()).decode("ascii")
        return digest.hexdigest()

    def error_message(self, response) -> str:
        try:
            body = response.json()
        except ValueError:
            return f"HTTP {response.status_code}: {response.text[:300]}"
        if isinstance(body, dict) and isinstance(body.get("errors"), dict):
            details = "; ".join(
                f"{field}: {' '.join(map(str, msgs))}" for field, msgs in body["errors"].items()
            )
            return f"HTTP {response.status_code} {body.get('message', '')} {details}".strip()
        return f"HTTP {response.status_code}: {json.dumps(body)[:300]}"

    def body(self, list_id: str, customer: dict[str, Any]) -> bytes:
        """The exact bytes sent: the customer plus the list's ``update_existing`` flag, compact UTF-8 JSON."""
        customer = {**customer, "update_existing": self.update_existing(list_id)}
        return json.dumps(customer, separators=(",", ":"), ensure_ascii=False).encode("utf-8")

    def post_customer(self, list_id: str, customer: dict[str, Any]) -> None:
        """``POST /client/{site}/customers/{list}`` with the body signed for that list."""
        from urllib.parse import quote

        body = self.body(list_id, customer)
        self.request(
            "POST",
            f"/client/{quote(self.site, safe='')}/customers/{quote(list_id, safe='')}",
            data=body,
            headers={"X-Signature": self.signature(list_id, body)},
        )
