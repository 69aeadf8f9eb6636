"""Reconcile: rebuild a sync's ledger from what the vendor already holds, sending nothing.

Why: the ledger is what makes a run skip unchanged records. After the state store is lost (and a new one
made with ``python -m reverse_etl.cli init``) every record would be resent; reconcile reads the vendor's own
records back and writes ``delivered`` (with our payload's hash and the event "reconciled: <vendor> holds
it") for each record the vendor holds exactly as we would send it now. Records the vendor lacks or holds
differently stay unrecorded, so the next run sends them, and only them.

The engine is generic; a vendor adapter (the load operator) supplies ``read_back(hook, keys)`` and may
refine ``holds``. Reading is two passes over the staged rows: the keys first (one read-back for all of
them, so a listing is paid once), then payloads compared chunk by chunk.
"""

from __future__ import annotations

import datetime as dt
import decimal
import logging
import math
import re
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from typing import Any

from reverse_etl.ledger import DELIVERED, IN_FLIGHT, PENDING, Ledger
from reverse_etl.payload import payload_hash
from reverse_etl.store import utc_now

log = logging.getLogger(__name__)

_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?)?$")


class CannotReadBack(Exception):
    """The vendor offers no way to read these records back."""


@dataclass
class ReconcileReport:
    checked: int = 0  # records of the window compared with the vendor
    held: int = 0  # the vendor holds our current payload: recorded delivered
    stale: int = 0  # the vendor holds an older or different version: the next run sends it
    missing: int = 0  # the vendor does not have it: the next run sends it
    already: int = 0  # the ledger already says delivered with this payload: left as is
    in_motion: int = 0  # pending or in a vendor job: a run will finish it, left as is
    requests: int = 0  # requests spent reading the vendor

    def as_dict(self) -> dict:
        return asdict(self)

    def summary(self, name: str, dry_run: bool) -> str:
        verb = "would record" if dry_run else "recorded"
        return (
            f"{name} reconcile: {self.checked} checked, {self.held} held ({verb} delivered), {self.stale} "
            f"stale and {self.missing} missing (the next run sends them), {self.already} already recorded, "
            f"{self.in_motion} in motion; {self.requests} requests"
        )


# --- comparing ------------------------------------------------------------------------------------------
def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float | decimal.Decimal):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            return None
    return None


def _boolean(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    return None


def _instant(value: Any) -> dt.datetime | None:
    """Dates and timestamps as aware UTC datetimes (a date is its midnight UTC; naive means UTC)."""
    if isinstance(value, dt.datetime):
        parsed = value
    elif isinstance(value, dt.date):
        parsed = dt.datetime(value.year, value.month, value.day)
    elif isinstance(value, str) and _ISO_DATE.match(value.strip()):
        try:
            parsed = dt.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            return None
    else:
        return None
    return parsed.replace(tzinfo=dt.UTC) if parsed.tzinfo is None else parsed.astimezone(dt.UTC)


def same_value(vendor: Any, ours: Any) -> bool:
    """One scalar: numbers by value (``"12.50"`` is 12.5), booleans from ``"true"``/``"false"``, dates and
    timestamps as instants (``1990-01-01`` is ``1990-01-01T00:00:00.000Z``), emails without case."""
    if vendor is None or ours is None:
        return vendor is None and ours is None
    if isinstance(ours, bool) or isinstance(vendor, bool):
        return _boolean(vendor) is not None and _boolean(vendor) == _boolean(ours)
    left, right = _number(vendor), _number(ours)
    if (
        isinstance(ours, int | float | decimal.Decimal) or isinstance(vendor, int | float | decimal.Decimal)
    ) and (left is not None and right is not None):
        return math.isclose(left, right, rel_tol=1e-9, abs_tol=1e-9)
    left_at, right_at = _instant(vendor), _instant(ours)
    if left_at is not None and right_at is not None:
        return left_at == right_at
    if isinstance(vendor, str) and isinstance(ours, str):
        if "@" in ours:
            return vendor.strip().casefold() == ours.strip().casefold()
        return vendor == ours
    return vendor == ours


def holds(vendor: Any, payload: Any) -> bool:
    """Does the vendor's record hold this payload? Every field we send must be there and equal (nested
    objects likewise, lists item by item); fields we do not send are ignored."""
    if isinstance(payload, dict):
        if not isinstance(vendor, dict):
            return False
        return all(key in vendor and holds(vendor[key], value) for key, value in payload.items())
    if isinstance(payload, list | tuple):
        if not isinstance(vendor, list | tuple) or len(vendor) != len(payload):
            return False
        return all(holds(v, p) for v, p in zip(vendor, payload, strict=True))
    return same_value(vendor, payload)


# --- the engine ----------------------------------------------------------------------------------------
def refusal(adapter: Any) -> str:
    """Why reconcile cannot run for this sync, and what to do instead."""
    name = f"{adapter.destination}.{adapter.entity}"
    reason = getattr(adapter, "read_back_refusal", "") or "the vendor offers no way to read them back"
    return (
        f"{name} cannot be reconciled: {reason}. Reconcile would not know what the vendor already holds, so "
        f"the next live run resends every record of its window. See what it would send first with a dry "
        f"run: trigger the DAG with the param dry_run = true (its load writes dry_run_payloads.jsonl), or "
        f"`python -m reverse_etl.cli reconcile {adapter.destination} {adapter.entity} --dry-run`."
    )


def reconcile(
    adapter: Any,
    hook: Any,
    ledger: Ledger,
    chunks: Callable[[], Iterable[list[dict]]],
    context: Any,
    *,
    dry_run: bool = False,
    on_resend: Callable[[str, str, dict], None] | None = None,
    on_held: Callable[[list[str]], None] | None = None,
    on_progress: Callable[[], None] | None = None,
) -> ReconcileReport:
    """Compare the current payloads of ``chunks()`` (lists of mapped rows, read twice) with the vendor's
    records and record the held ones delivered (unless ``dry_run``). ``on_resend(key, why, payload)``
    hears of every record the next run will send, ``on_held(keys)`` of the held ones. Sends nothing to the
    vendor."""
    if not getattr(adapter, "can_read_back", False):
        raise CannotReadBack(refusal(adapter))
    report = ReconcileReport()
    requests_before = _requests(hook)
    to_check: list[str] = []
    for rows in chunks():
        live = [row["_key"] for row in rows if not row.get("_deleted")]
        known = ledger.lookup(live)
        for row in rows:
            if row.get("_deleted"):
                continue
            state = known.get(row["_key"], {})
            if state.get("status") in (PENDING, IN_FLIGHT):
                report.in_motion += 1
                continue
            if state.get("status") == DELIVERED and state.get("delivered_hash") == payload_hash(
                adapter.build_payload(row, context)
            ):
                report.already += 1  # the ledger knows: no need to ask the vendor
                continue
            to_check.append(row["_key"])
    to_check = list(dict.fromkeys(to_check))
    vendor_records = adapter.read_back(hook, to_check) if to_check else {}
    wanted = set(to_check)
    vendor = getattr(adapter, "vendor_name", adapter.destination)
    detail = f"reconciled: {vendor} holds it"
    for rows in chunks():
        rows = [row for row in rows if row["_key"] in wanted and not row.get("_deleted")]
        if not rows:
            continue
        held: list[tuple[str, str]] = []
        for row in rows:
            key = row["_key"]
            payload = adapter.build_payload(row, context)
            digest = payload_hash(payload)
            report.checked += 1
            record = vendor_records.get(key)
            if record is None:
                report.missing += 1
                if on_resend:
                    on_resend(key, "missing", payload)
            elif not adapter.holds(record, payload):
                report.stale += 1
                if on_resend:
                    on_resend(key, "stale", payload)
            else:
                report.held += 1
                held.append((key, digest))
        if held and not dry_run:
            ledger.mark_reconciled(held, detail)
        if held and on_held:
            on_held([key for key, _ in held])
        if on_progress:
            on_progress()
    report.requests = _requests(hook) - requests_before
    return report


def _requests(hook: Any) -> int:
    """Requests the hook has made so far (HTTP hooks count them; the SFTP hook does not)."""
    return getattr(getattr(hook, "stats", None), "requests", 0)


# --- the command line ----------------------------------------------------------------------------------
def adapter_class(destination: str, entity: str) -> type:
    """The load operator of a sync (every vendor's operators module is imported to find it)."""
    import importlib

    from reverse_etl.errors import ConfigError
    from reverse_etl.operators.load import SyncLoadOperator

    for vendor in ("voucherify", "connectif", "salesmanago", "salesfire"):
        importlib.import_module(f"reverse_etl.operators.{vendor}")
    from reverse_etl.operators.splio import SplioReferralUploadOperator

    found: dict[tuple[str, str], type] = {
        (
            SplioReferralUploadOperator.destination,
            SplioReferralUploadOperator.entity,
        ): SplioReferralUploadOperator
    }
    todo = list(SyncLoadOperator.__subclasses__())
    while todo:
        cls = todo.pop()
        todo.extend(cls.__subclasses__())
        if cls.destination and cls.entity:
            found[(cls.destination, cls.entity)] = cls
    if (destination, entity) not in found:
        known = ", ".join(f"{d} {e}" for d, e in sorted(found))
        raise ConfigError(f"No sync {destination} {entity} to reconcile; the syncs are: {known}.")
    return found[(destination, entity)]


def run_command(
    destination: str,
    entity: str,
    *,
    window_start: str | None,
    window_end: str | None,
    dry_run: bool,
    conn_id: str | None,
    params: dict,
    url: str,
    out=None,
) -> int:
    """``python -m reverse_etl.cli reconcile``: map the window (default all time) through the sync's SQL
    file and checks, compare with the vendor, record the held records (unless ``dry_run``). Prints the
    summary and where the list of records the next run will send is; returns the exit code."""
    import json
    import sys

    from reverse_etl import settings
    from reverse_etl.extract import extract
    from reverse_etl.staging import JsonLinesSink, iter_valid, sync_dir
    from reverse_etl.validate import validate
    from reverse_etl.window import resolve_window

    out = out or sys.stdout
    cls = adapter_class(destination, entity)
    name = f"{destination}.{entity}"
    if not cls.can_read_back and not dry_run:
        print(refusal(cls), file=sys.stderr)
        return 2
    started_at = utc_now()
    run_id = f"reconcile__{started_at.strftime('%Y%m%dT%H%M%S%f')}"
    start = window_start or "1970-01-01"
    end = window_end or (dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1)).isoformat()
    window = resolve_window({"window_start": start, "window_end": end}, None, None)
    extracted = extract(
        destination=destination, entity=entity, window=window, dag_id="reconcile", run_id=run_id
    )
    manifest = validate(
        extract_manifest=extracted,
        dag_id="reconcile",
        run_id=run_id,
        max_rejected_share=1.0,
        record_rejections=False,
    )
    adapter = cls(task_id="reconcile", manifest=manifest, vendor_conn_id=conn_id)
    if hasattr(cls, "open_hook"):
        hook = cls.open_hook(conn_id)
    else:
        hook = cls.hook_class(conn_id or cls.hook_class.default_conn_name)
    ledger = Ledger(destination, entity, run_id, url=url)
    context = {"params": params, "run_id": run_id}
    chunk = settings.chunk_rows()

    def chunks() -> Iterable[list[dict]]:
        for batch in iter_valid(manifest, chunk):
            yield batch.to_pylist()

    resend_path = sync_dir("reconcile", run_id, entity) / "resend.jsonl"
    status = "success"
    with JsonLinesSink(resend_path) as resend:
        if not cls.can_read_back:  # dry run of a vendor we cannot read: everything would be resent
            report = ReconcileReport()
            for rows in chunks():
                for row in rows:
                    if not row.get("_deleted"):
                        report.checked += 1
                        report.missing += 1
                        resend.write(
                            {
                                "key": row["_key"],
                                "why": "unreadable",
                                "payload": adapter.build_payload(row, context),
                            }
                        )
            print(refusal(cls), file=sys.stderr)
        else:
            if not dry_run:
                ledger.acquire_lease(f"reconcile/{run_id}", ttl=settings.lease_seconds(), wait=0)
            try:
                report = reconcile(
                    adapter,
                    hook,
                    ledger,
                    chunks,
                    context,
                    dry_run=dry_run,
                    on_resend=lambda key, why, payload: resend.write(
                        {"key": key, "why": why, "payload": payload}
                    ),
                    on_progress=ledger.renew_lease,
                )
            except Exception:
                status = "failed"
                raise
            finally:
                if hasattr(hook, "flush_request_minutes"):  # an HTTP vendor's budget (not Splio's SFTP)
                    hook.flush_request_minutes()
                ledger.release_lease()
    summary = {
        "destination": destination,
        "entity": entity,
        "dry_run": dry_run,
        "window": window.as_dict(),
        "extracted": manifest.get("rows", 0),
        "valid": manifest.get("valid", 0),
        "rejected": manifest.get("rejected", 0),
        **report.as_dict(),
        "resend": str(resend_path),
    }
    if not dry_run:
        ledger.record_run(
            dag_id="reconcile",
            try_number=None,
            window=window.as_dict(),
            dry_run=False,
            status=status,
            started_at=started_at,
            report=summary,
        )
    print(report.summary(name, dry_run), file=out)
    print(f"records the next run will send: {resend_path}", file=out)
    print(json.dumps(summary, default=str), file=out)
    return 0
