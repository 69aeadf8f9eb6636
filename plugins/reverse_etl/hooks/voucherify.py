"""Voucherify: ``X-App-Id``/``X-App-Token`` auth, ``X-Rate-Limit-*`` headers, async-action polling."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from reverse_etl.errors import VendorError, VendorNotFound
from reverse_etl.hooks.base import VendorHttpHook
from reverse_etl.progress import Wait

log = logging.getLogger(__name__)
FINISHED = ("DONE", "FAILED")


class VoucherifyHook(VendorHttpHook):
    """Connection: host = the cluster URL (``https://api.voucherify.io``, ``https://us1.api.voucherify.io``),
    login = application id, password = secret key. Extras: ``requests_per_minute`` (100, the Business plan),
    ``async_poll_seconds`` (1: the first poll of an async action), ``async_poll_max_seconds`` (30: polls back
    off to this), ``async_timeout_seconds`` (1800 without any action finishing), ``max_jobs_in_flight`` (10
    async actions at once), plus the base transport extras.
    """

    conn_name_attr = "voucherify_conn_id"
    default_conn_name = "voucherify_default"
    conn_type = "http"
    hook_name = "Voucherify"
    vendor = "Voucherify"
    default_host = "https://api.voucherify.io"
    default_requests_per_minute = 100

    def auth_headers(self) -> dict[str, str]:
        conn = self.connection
        if not conn.login or not conn.password:
            from reverse_etl.errors import ConfigError

            raise ConfigError(
                f"Voucherify connection '{self.vendor_conn_id}' needs login = application id and "
                "password = secret key (Project settings > Application keys)."
            )
        return {"X-App-Id": conn.login, "X-App-Token": conn.password, "Content-Type": "application/json"}

    def error_message(self, response) -> str:
        try:
            body = response.json()
        except ValueError:
            return f"HTTP {response.status_code}: {response.text[:300]}"
        if not isinstance(body, dict):
            return f"HTTP {response.status_code}: {str(body)[:300]}"
        parts = [
            f"{body.get('code', response.status_code)} {body.get('key', '')}".strip(),
            body.get("message", ""),
        ]
        if body.get("details"):
            parts.append(f"({body['details']})")
        if body.get("request_id"):
            parts.append(f"[request {body['request_id']}]")
        return " ".join(p for p in parts if p)

    def throttle_delay(self, response) -> float | None:
        delay = super().throttle_delay(response)
        if delay is None:
            delay = _seconds_until(response.headers.get("X-Rate-Limit-Retry"))
        return delay

    def pause_hint(self, response) -> float:
        if response.headers.get("X-Rate-Limit-Remaining") == "0":
            return _seconds_until(response.headers.get("X-Rate-Limit-Retry")) or 0.0
        return 0.0

    # --- endpoints --------------------------------------------------------------------------------------
    def bulk_upsert(self, resource: str, items: list[dict] | bytes) -> str:
        """``POST /v1/{customers|products}/bulk/async`` (10 MB per request); returns the async action id.
        ``items``: the objects, or the JSON array already encoded (``reverse_etl.batching.json_array``)."""
        body = items if isinstance(items, bytes) else compact_json(items)
        return self.request("POST", f"/v1/{resource}/bulk/async", data=body).json()["async_action_id"]

    def import_orders(self, orders: list[dict]) -> str:
        """``POST /v1/orders/import`` (historical: fires no events), at most 2000 orders."""
        if len(orders) > 2000:
            raise ValueError("Voucherify imports at most 2000 orders per request")
        return self.request("POST", "/v1/orders/import", data=compact_json(orders)).json()["async_action_id"]

    def upsert_order(self, order: dict) -> dict:
        return self.request("POST", "/v1/orders", json=order).json()

    def delete_customer(self, id_or_source_id: str) -> None:
        from urllib.parse import quote

        self.request("DELETE", f"/v1/customers/{quote(id_or_source_id, safe='')}")

    # --- reading back (reconcile) -----------------------------------------------------------------------
    LIST_LIMIT = 100  # "The limit can range between 1 and 100 items"
    LIST_MAX_PAGE = {"customers": 99, "orders": 100, "products": 100}  # ParameterPage99 / ParameterPage

    def list_page(self, resource: str, page: int) -> dict:
        """``GET /v1/{resource}?limit=100&page=N`` (oldest first where the list can sort by creation)."""
        params: dict[str, Any] = {"limit": self.LIST_LIMIT, "page": page}
        if resource in ("customers", "orders", "products"):
            params["order"] = "created_at"
        return self.request("GET", f"/v1/{resource}", params=params).json()

    def get_object(self, resource: str, id_or_source_id: str) -> dict | None:
        """``GET /v1/{resource}/{id or source_id}``; None when Voucherify has no such object."""
        from urllib.parse import quote

        try:
            return self.request("GET", f"/v1/{resource}/{quote(id_or_source_id, safe='')}").json()
        except VendorNotFound:
            return None

    def read_objects(self, resource: str, refs: list[str], by: str = "source_id") -> dict[str, dict]:
        """Objects of ``resource`` whose ``by`` field (``source_id`` or ``id``) is in ``refs``, for the fewest
        requests: the listing (100 a page) when it takes fewer pages than there are refs and the pages
        reach every object (customers: 99 pages at most), else one ``GET`` per ref."""
        wanted = set(refs)
        if not wanted:
            return {}
        found: dict[str, dict] = {}
        first = self.list_page(resource, 1)
        total = int(first.get("total") or 0)
        pages = max(1, -(-total // self.LIST_LIMIT))
        if pages <= len(wanted) and pages <= self.LIST_MAX_PAGE.get(resource, 100):
            page, body = 1, first
            while True:
                for item in body.get(body.get("data_ref") or resource) or []:
                    if item.get(by) in wanted:
                        found[item[by]] = item
                if len(found) == len(wanted) or page >= pages:
                    return found
                page += 1
                body = self.list_page(resource, page)
        for ref in refs:
            item = self.get_object(resource, ref)
            if item is not None and item.get(by) == ref:
                found[ref] = item
        return found

    def get_async_action(self, action_id: str) -> dict:
        """``GET /v1/async-actions/{id}``: status and, once finished, the result with per-item errors."""
        return self.request("GET", f"/v1/async-actions/{action_id}").json()

    def list_async_actions(self, limit: int = 100) -> list[dict]:
        """``GET /v1/async-actions?limit=N`` (1..100): the project's latest actions, newest first as the
        spec's example lists them, with their status but no result ("a status DONE doesn't include the
        result")."""
        body = self.request("GET", "/v1/async-actions", params={"limit": limit}).json()
        return body.get(body.get("data_ref") or "async_actions") or []

    def poll_async_actions(self, action_ids: list[str]) -> tuple[dict[str, dict], set[str]]:
        """The finished actions among ``action_ids`` with their results, and the ids Voucherify does not
        know. One action: its ``GET``. Several: one listing for their statuses, then a ``GET`` for each
        finished one (only the single ``GET`` carries the per-item errors) or missing from the listing."""
        wanted = list(dict.fromkeys(action_ids))
        if len(wanted) > 1:
            listed = {a.get("id"): a.get("status") for a in self.list_async_actions(self.LIST_LIMIT)}
            wanted = [i for i in wanted if listed.get(i, "unlisted") not in ("ENQUEUED", "IN_PROGRESS")]
        finished: dict[str, dict] = {}
        unknown: set[str] = set()
        for action_id in wanted:
            try:
                action = self.get_async_action(action_id)
            except VendorNotFound:
                unknown.add(action_id)
                continue
            if action.get("status") in FINISHED:
                finished[action_id] = action
        return finished, unknown

    def wait_async_action(self, action_id: str) -> dict:
        """Poll until the action is DONE or FAILED, backing off from ``async_poll_seconds`` to
        ``async_poll_max_seconds``; bulk jobs queue behind earlier ones, so be patient."""
        poll = self.extra("async_poll_seconds", 1.0)
        longest = max(poll, self.extra("async_poll_max_seconds", 30.0))
        wait = Wait(
            f"Voucherify async action {action_id}",
            self.extra("async_timeout_seconds", 1800.0),
            logger=log,
            detail="not polled yet",
        )
        while True:
            wait.sleep(poll)  # a job is never done the moment it is accepted: each early poll costs budget
            poll = min(poll * 2, longest)
            action = self.get_async_action(action_id)
            wait.detail = f"last status {action.get('status')!r}" + (
                f" ({action['progress']}% done)" if "progress" in action else ""
            )
            if action.get("status") in FINISHED:
                wait.done(wait.detail)
                return action
            if wait.expired:
                raise VendorError(
                    f"Voucherify async action {action_id} still {action.get('status')} after the timeout; "
                    "the task will retry and resume polling it."
                )


def compact_json(value: Any) -> bytes:
    """The JSON body we send: compact and UTF-8, the bytes ``reverse_etl.batching`` measures batches by."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _seconds_until(epoch: Any) -> float | None:
    try:
        return max(0.0, float(epoch) - time.time())
    except (TypeError, ValueError):
        return None
