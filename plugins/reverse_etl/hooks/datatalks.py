"""SALESmanago through Data Talks' integration API (``https://api.datatalks.se/v1``): requests are signed
with AWS Signature Version 4 (service ``execute-api``) by requests-aws4auth, and every body carries the
``group_key`` that selects the SALESmanago account. The contact delete is documented only on the
execute-api host (``DELETE .../Production/contacts``), so its URL is a connection setting of its own."""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import urlsplit

from reverse_etl.errors import ConfigError
from reverse_etl.hooks.base import VendorHttpHook

DELETE_CONTACT_URL = "https://htpfdjhk3h.execute-api.eu-west-1.amazonaws.com/Production/contacts"
_EXECUTE_API_HOST = re.compile(r"^[a-z0-9]+\.execute-api\.(?P<region>[a-z0-9-]+)\.amazonaws\.com$")


class DataTalksHook(VendorHttpHook):
    """Connection (type ``http``): host = ``https://api.datatalks.se`` (default), login = the access key id,
    password = the secret access key (both issued by Data Talks); extras ``group_key`` (required),
    ``region`` (``eu-west-1``), ``delete_contact_url`` (the documented ``DELETE`` URL on the execute-api
    host), ``products_per_request`` (100), plus the transport extras (``requests_per_minute`` 100: Data
    Talks publishes no limit).
    """

    conn_name_attr = "datatalks_conn_id"
    default_conn_name = "salesmanago_default"
    conn_type = "http"
    hook_name = "SALESmanago (Data Talks)"
    vendor = "DataTalks"
    default_host = "https://api.datatalks.se"
    default_requests_per_minute = 100
    _delete_signer: Any = None  # built on the first delete (its URL may be on another host than the rest)

    @property
    def group_key(self) -> str:
        key = self.extras.get("group_key")
        if not key:
            raise ConfigError(
                f"Data Talks connection '{self.vendor_conn_id}' needs the extra 'group_key' (issued by Data Talks; "
                "it selects the SALESmanago account)."
            )
        return key

    @property
    def region(self) -> str:
        return str(self.extras.get("region") or "eu-west-1")

    @property
    def delete_contact_url(self) -> str:
        url = str(self.extras.get("delete_contact_url") or DELETE_CONTACT_URL)
        if urlsplit(url).scheme not in ("http", "https"):
            raise ConfigError(
                f"Data Talks connection '{self.vendor_conn_id}': extra 'delete_contact_url'={url!r} must be a "
                f"full URL (the documented one is {DELETE_CONTACT_URL})."
            )
        return url

    def signer(self, url: str | None = None):
        """The SigV4 signer for ``url``: an execute-api host is signed for its own region (the documented
        delete lives in eu-west-1 whatever the ``region`` extra says); any other host for ``region``."""
        from requests_aws4auth import AWS4Auth

        conn = self.connection
        if not conn.login or not conn.password:
            raise ConfigError(
                f"Data Talks connection '{self.vendor_conn_id}' needs login = access key id and password = "
                "secret access key (issued by Data Talks)."
            )
        found = _EXECUTE_API_HOST.match(urlsplit(url).hostname or "") if url else None
        return AWS4Auth(conn.login, conn.password, found["region"] if found else self.region, "execute-api")

    def get_conn(self):
        """A session that signs every request with SigV4 (the signature covers the exact body bytes)."""
        if self._session is None:
            signer = self.signer()
            super().get_conn().auth = signer
        return self._session

    def auth_headers(self) -> dict[str, str]:
        return {"Content-Type": "application/json"}

    def error_message(self, response) -> str:
        try:
            body = response.json()
        except ValueError:
            body = response.text[:300]
        if response.status_code == 403:
            message = body.get("message") if isinstance(body, dict) else body
            return (
                f"403 {message!s}: Data Talks (API Gateway) answers 403 to a signing or path problem - check "
                "the access key and secret, the extra 'region', the host and the path, and the machine's clock"
            )
        if isinstance(body, dict) and "messages" in body:
            messages = "; ".join(map(str, body.get("messages") or [])) or "no message"
            return f"HTTP {response.status_code}: {messages} (requestId {body.get('requestId')})"
        return f"HTTP {response.status_code}: {json.dumps(body, default=str)[:300]}"

    def _send(self, method: str, path: str, data: Any, **kwargs: Any):
        body = json.dumps(
            {"data": data, "group_key": self.group_key}, ensure_ascii=False, separators=(",", ":")
        )
        return self.request(method, path, data=body.encode("utf-8"), **kwargs)

    # --- endpoints --------------------------------------------------------------------------------------
    def upsert_contact(self, contact: dict) -> None:
        """``POST /v1/contacts``: upsert by email; ``data`` is flat."""
        self._send("POST", "/v1/contacts", contact)

    def delete_contact(self, email: str) -> None:
        """``DELETE`` on ``delete_contact_url`` with ``{data: {email}}``, signed for that URL's host."""
        url = self.delete_contact_url
        if self._delete_signer is None:  # one signer for every delete of this hook, not one per record
            self._delete_signer = self.signer(url)
        self._send("DELETE", url, {"email": email}, auth=self._delete_signer)

    def add_event(self, event: dict) -> None:
        """``POST /v1/events``: one external event, its ``externalId`` set by the mapping."""
        self._send("POST", "/v1/events", event)

    def upsert_products(self, products: list[dict]) -> None:
        """``POST /v1/products``: ``data`` is an array of products."""
        self._send("POST", "/v1/products", products)

    def _lookup(self, path: str, params: dict[str, str]) -> dict | None:
        from reverse_etl.errors import VendorNotFound

        try:
            return self.request("GET", path, params=params).json()
        except VendorNotFound:
            return None

    def contact_by_email(self, email: str) -> dict | None:
        """``GET /v1/contact_by_email?email=``: what SALESmanago holds for an email (None when unknown)."""
        return self._lookup("/v1/contact_by_email", {"email": email})

    def contact_by_sm_id(self, sm_id: str) -> dict | None:
        """``GET /v1/contact_by_sm_id?sm_id=``: the same by SALESmanago's contact id. The page names a lookup
        by sm_id; this path is our reading of it (None when unknown)."""
        return self._lookup("/v1/contact_by_sm_id", {"sm_id": sm_id})
