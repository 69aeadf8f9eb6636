"""Connectif: ``Authorization: apiKey <id>:<secret>``; 100 requests/minute per account, signalled with
``X-RateLimit-Limit/Remaining/Reset`` and no ``Retry-After``: we wait until the reset time."""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import quote

from reverse_etl.errors import ConfigError, VendorError
from reverse_etl.hooks.base import VendorHttpHook

FINISHED = ("finished", "error", "cancelled")


def _seconds_until(epoch: Any) -> float | None:
    try:
        return max(0.0, float(epoch) - time.time())
    except (TypeError, ValueError):
        return None


class ConnectifHook(VendorHttpHook):
    """Connection: host = ``https://api.connectif.cloud`` (default), login = API key id, password = key
    secret (or extra ``api_key`` = ``<id>:<secret>`` as the dashboard copies it). Every Connectif
    connection of one account must share ``rate_limit_account`` (the limit is per account, all keys).
    Extras: ``bulk_threshold`` (1000: more pending records than this go as CSV imports instead of one
    request each), ``import_rows`` (100000 per file, also capped at 45 MB), ``import_delimiter`` (``;``),
    ``import_poll_seconds`` (30), ``import_timeout_seconds`` (3600), ``max_import_bytes`` (50 MB).
    """

    conn_name_attr = "connectif_conn_id"
    default_conn_name = "connectif_default"
    conn_type = "http"
    hook_name = "Connectif"
    vendor = "Connectif"
    default_host = "https://api.connectif.cloud"
    default_requests_per_minute = 100

    def auth_headers(self) -> dict[str, str]:
        conn = self.connection
        key = self.extras.get("api_key") or (
            f"{conn.login}:{conn.password}" if conn.login and conn.password else None
        )
        if not key or ":" not in key:
            raise ConfigError(
                f"Connectif connection '{self.vendor_conn_id}' needs login = API key id and password = key "
                "secret, or extra api_key = '<id>:<secret>' (Connectif > Settings > API keys)."
            )
        return {"Authorization": f"apiKey {key}"}

    def error_message(self, response) -> str:
        try:
            body = response.json()
        except ValueError:
            return f"HTTP {response.status_code}: {response.text[:300]}"
        if not isinstance(body, dict):
            return f"HTTP {response.status_code}: {str(body)[:300]}"
        head = " ".join(
            str(p)
            for p in (body.get("status", response.status_code), body.get("code"), body.get("title"))
            if p
        )
        extra = {k: v for k, v in body.items() if k not in ("status", "code", "title", "detail", "type")}
        return f"{head}: {body.get('detail', '')}" + (f" {extra}" if extra else "")

    def throttle_delay(self, response) -> float | None:
        return _seconds_until(response.headers.get("X-RateLimit-Reset"))

    def pause_hint(self, response) -> float:
        if response.headers.get("X-RateLimit-Remaining") == "0":
            return _seconds_until(response.headers.get("X-RateLimit-Reset")) or 0.0
        return 0.0

    # --- endpoints --------------------------------------------------------------------------------------
    def patch_contact(self, email: str, body: dict) -> None:
        """``PATCH /contacts/{email}``: creates the contact when absent (upsert by email)."""
        self.request("PATCH", f"/contacts/{quote(email, safe='@')}", json=body)

    def patch_product(self, product_id: str, body: dict) -> None:
        """``PATCH /products/product-id/{id}``: upsert by the store's product id."""
        self.request("PATCH", f"/products/product-id/{quote(product_id, safe='')}", json=body)

    def post_purchase(self, purchase: dict, trigger_event: bool) -> None:
        """``POST /purchases/``; ``triggerPurchaseEvent=false`` keeps old purchases from firing automations."""
        self.request(
            "POST", "/purchases/", params={"triggerPurchaseEvent": str(trigger_event).lower()}, json=purchase
        )

    def create_import(
        self, kind: str, csv_bytes: bytes, *, override_existing: bool = True, coupon_set_id: str | None = None
    ) -> dict:
        """``POST /imports/`` (multipart, UTF-8 CSV whose header row holds field ids). Connectif keeps at most
        10 queued imports per account (E0401): wait for a slot instead of failing."""
        from reverse_etl.errors import VendorRejected

        max_bytes = self.extra("max_import_bytes", 50 * 1024 * 1024, int)
        if len(csv_bytes) > max_bytes:
            raise ValueError(
                f"import file of {len(csv_bytes)} bytes is over Connectif's {max_bytes} byte limit"
            )
        fields: dict[str, Any] = {
            "type": (None, kind),
            "overrideExisting": (None, str(override_existing).lower()),
            "updateOnlyEmptyFields": (None, "false"),
            "delimiter": (None, self.delimiter),
            "file": (f"{kind}.csv", csv_bytes, "text/csv"),
        }
        if coupon_set_id:
            fields["couponSetId"] = (None, coupon_set_id)
        deadline = time.monotonic() + self.extra("import_timeout_seconds", 3600.0)
        while True:
            try:
                return self.request("POST", "/imports/", files=fields).json()
            except VendorRejected as exc:
                queue_full = isinstance(exc.body, dict) and exc.body.get("code") == "E0401"
                if not queue_full or time.monotonic() > deadline:
                    raise
                time.sleep(self.extra("import_poll_seconds", 30.0))

    @property
    def delimiter(self) -> str:
        return self.extras.get("import_delimiter", ";")

    def wait_import(self, import_id: str) -> dict:
        """Poll ``GET /imports/{id}`` until it is finished, in error or cancelled."""
        poll = self.extra("import_poll_seconds", 30.0)  # polls spend the same budget as writes
        deadline = time.monotonic() + self.extra("import_timeout_seconds", 3600.0)
        while True:
            time.sleep(poll)
            found = self.request("GET", f"/imports/{quote(import_id, safe='')}").json()
            if found.get("status") in FINISHED:
                return found
            if time.monotonic() > deadline:
                raise VendorError(
                    f"Connectif import {import_id} still {found.get('status')} after the timeout."
                )

    def download(self, url: str) -> bytes:
        """File URLs (error reports, exports) are pre-signed: fetched without our API key."""
        import requests

        response = requests.get(url, timeout=self.extra("timeout_seconds", 30.0))
        response.raise_for_status()
        return response.content
