"""Connectif: ``Authorization: apiKey <id>:<secret>``; 100 requests/minute per account, signalled with
``X-RateLimit-Limit/Remaining/Reset`` and no ``Retry-After``: we wait until the reset time."""

from __future__ import annotations

import logging
import time
from typing import Any
from urllib.parse import quote

from reverse_etl.errors import ConfigError, VendorError, VendorNotFound
from reverse_etl.hooks.base import VendorHttpHook
from reverse_etl.progress import Wait

FINISHED = ("finished", "error", "cancelled")
log = logging.getLogger(__name__)


def _seconds_until(epoch: Any) -> float | None:
    try:
        return max(0.0, float(epoch) - time.time())
    except (TypeError, ValueError):
        return None


def _job_news(job: dict) -> str:
    """A job's last status for a progress line, with its counts when Connectif gives them."""
    counts = ", ".join(f"{k} {job[k]}" for k in ("total", "success", "errors") if k in job)
    return f"last status {job.get('status')!r}" + (f" ({counts})" if counts else "")


class ConnectifHook(VendorHttpHook):
    """Connection: host = ``https://api.connectif.cloud`` (default), login = API key id, password = key
    secret (or extra ``api_key`` = ``<id>:<secret>`` as the dashboard copies it). Every Connectif
    connection of one account must share ``rate_limit_account`` (the limit is per account, all keys).
    Extras: ``bulk_threshold`` (1000: more pending records than this go as CSV imports instead of one
    request each), ``import_rows`` (none: files are cut at 45 MB of CSV; a number caps rows per file),
    ``max_jobs_in_flight`` (3 imports at once), ``import_delimiter`` (``;``; or ``,``),
    ``import_poll_seconds`` (30), ``import_timeout_seconds`` (3600), ``max_import_bytes`` (50,000,000);
    coupons: ``coupon_code_column`` (``code``), ``coupon_exists_pattern`` (``already exists``); exports:
    ``exports`` (types exported on scheduled runs, none by default), ``export_path`` (``/exports/``),
    ``export_type_field`` (``exportType``), ``export_table_prefix`` (``connectif_``).
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
        max_bytes = self.extra("max_import_bytes", 50_000_000, int)  # "50Mb": the smaller reading
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
        return self._post_queued("/imports/", "E0401", files=fields)

    def _post_queued(self, path: str, queue_full_code: str, **kwargs: Any) -> dict:
        """POST a background job; when Connectif's job queue is full (E0401 imports, E0301 exports), wait
        for a slot instead of failing, up to ``import_timeout_seconds``."""
        from reverse_etl.errors import VendorRejected

        poll = self.extra("import_poll_seconds", 30.0)
        kind = "import" if queue_full_code == "E0401" else "export"
        wait = Wait(
            f"a free slot in Connectif's {kind} queue (account '{self.limiter.account}')",
            self.extra("import_timeout_seconds", 3600.0),
            logger=log,
        )
        told = False
        while True:
            try:
                created = self.request("POST", path, **kwargs).json()
            except VendorRejected as exc:
                queue_full = isinstance(exc.body, dict) and exc.body.get("code") == queue_full_code
                if not queue_full or wait.expired:
                    raise
                if not told:
                    log.info("Connectif's job queue is full (%s): waiting for a slot", queue_full_code)
                    told = True
                wait.sleep(poll, f"queue full ({queue_full_code}), asking again every {poll:g} s")
                continue
            wait.done(f"{kind} {created.get('id')} queued")
            return created

    @property
    def delimiter(self) -> str:
        """Connectif documents ``,`` or ``;`` as the CSV delimiter (imports and exports)."""
        delimiter = self.extras.get("import_delimiter", ";")
        if delimiter not in (",", ";"):
            raise ConfigError(
                f"Connectif connection '{self.vendor_conn_id}': extra 'import_delimiter' must be ',' or ';' "
                f"(Connectif's documented delimiters), got {delimiter!r}."
            )
        return delimiter

    def poll_imports(self, import_ids: list[str]) -> tuple[dict[str, dict], set[str]]:
        """The finished imports among ``import_ids`` and the ids Connectif does not know: one listing
        (``GET /imports/?limit=100``, newest first, each import whole), a ``GET`` for any it does not show."""
        listed = {}
        if len(import_ids) > 1:
            body = self.request("GET", "/imports/", params={"limit": 100}).json()
            listed = {str(i.get("id")): i for i in body.get("results") or []}
        finished: dict[str, dict] = {}
        unknown: set[str] = set()
        for import_id in dict.fromkeys(import_ids):
            found = listed.get(import_id)
            if found is None:
                try:
                    found = self.request("GET", f"/imports/{quote(import_id, safe='')}").json()
                except VendorNotFound:
                    unknown.add(import_id)
                    continue
            if found.get("status") in FINISHED:
                finished[import_id] = found
        return finished, unknown

    def wait_import(self, import_id: str) -> dict:
        """Poll ``GET /imports/{id}`` until it is finished, in error or cancelled."""
        return self._wait(f"/imports/{quote(import_id, safe='')}", "import")

    def _wait(self, path: str, what: str) -> dict:
        poll = self.extra("import_poll_seconds", 30.0)  # polls spend the same budget as writes
        job_id = path.rsplit("/", 1)[-1]
        wait = Wait(f"Connectif {what} {job_id}", self.extra("import_timeout_seconds", 3600.0), logger=log)
        wait.detail = "not polled yet"
        while True:
            wait.sleep(poll)
            found = self.request("GET", path).json()
            wait.detail = _job_news(found)
            if found.get("status") in FINISHED:
                wait.done(wait.detail)
                return found
            if wait.expired:
                raise VendorError(
                    f"Connectif {what} {path.rsplit('/', 1)[-1]} still {found.get('status')} after "
                    f"import_timeout_seconds; raise it in the connection's extra if such jobs are normal."
                )

    @property
    def export_path(self) -> str:
        return "/" + self.extras.get("export_path", "/exports/").strip("/") + "/"

    def create_export(self, export_type: str, filters: dict | None = None) -> dict:
        """``POST /exports/``: ``{exportType, delimiter, dateFormat: ISO, filters?}`` (the type's field name
        is the extra ``export_type_field``); at most 5 queued exports (E0301): waits for a slot."""
        body: dict[str, Any] = {
            self.extras.get("export_type_field", "exportType"): export_type,
            "delimiter": self.delimiter,
            "dateFormat": "ISO",
        }
        if filters:
            body["filters"] = filters
        return self._post_queued(self.export_path, "E0301", json=body)

    def wait_export(self, export_id: str) -> dict:
        """Poll ``GET /exports/{id}``; a finished export carries a fresh pre-signed ``fileUrl``."""
        return self._wait(self.export_path + quote(export_id, safe=""), "export")

    def download(self, url: str) -> bytes:
        """File URLs (error reports, exports) are pre-signed: fetched without our API key."""
        import requests

        response = requests.get(url, timeout=self.extra("timeout_seconds", 30.0))
        response.raise_for_status()
        return response.content

    def download_to(self, url: str, path: str) -> int:
        """Stream a (large) pre-signed file to ``path``; returns its size in bytes."""
        import requests

        size = 0
        with requests.get(url, stream=True, timeout=self.extra("timeout_seconds", 30.0)) as response:
            if response.status_code >= 400:
                raise VendorError(
                    f"Connectif file download answered HTTP {response.status_code} (an expired link is "
                    "refused: the task's retry asks for a new one)."
                )
            with open(path, "wb") as out:
                for chunk in response.iter_content(1 << 20):
                    out.write(chunk)
                    size += len(chunk)
        return size
