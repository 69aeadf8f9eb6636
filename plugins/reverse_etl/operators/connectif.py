"""Connectif operators: contacts, products and purchases (one request per record, or CSV imports for
large deltas), coupons (imports into coupon sets) and exports back into the warehouse, all drawing on the
account's single bucket. Built-in Connectif fields are mapped in SQL without their ``_`` prefix
(``name`` for ``_name``: a leading ``_`` marks meta columns); custom fields go under ``custom__<field id>``.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import logging
import time
from collections.abc import Sequence
from typing import Any, ClassVar

from airflow.sdk import BaseOperator

from reverse_etl.batching import CsvSize
from reverse_etl.errors import VendorError, fail_fast
from reverse_etl.hooks.connectif import ConnectifHook
from reverse_etl.jobs import Finished
from reverse_etl.ledger import DELIVERED, FAILED, Outcome, Planned
from reverse_etl.operators.load import SyncLoadOperator
from reverse_etl.payload import row_to_payload
from reverse_etl.store import utc_now

log = logging.getLogger(__name__)


class _ConnectifLoad(SyncLoadOperator):
    """One request per record; above the connection's ``bulk_threshold`` pending records, CSV imports
    (``bulk_kind``) whose per-row errors land in the ledger."""

    destination = "connectif"
    hook_class = ConnectifHook
    vendor_name = "Connectif"
    read_back_refusal = "Connectif's exports give contacts and activities, not these records"
    batch_size = 1  # single-record endpoints: every answer is recorded as it comes
    max_batch_bytes = 45_000_000  # bytes of CSV per import file, under Connectif's 50 MB
    bulk_kind: ClassVar[str | None] = None
    key_column: ClassVar[str] = ""

    def send_one(self, hook: ConnectifHook, key: str, payload: dict, context: Any) -> None:
        raise NotImplementedError

    def batch_limit(self, context: Any) -> int | None:
        if not self.bulk_kind:
            return 1
        hook = self.hook_class(self.vendor_conn_id)
        if self.pending_count > hook.extra("bulk_threshold", 1000, int):
            return _import_rows(hook)
        return 1

    def body_size(self, hook: ConnectifHook) -> CsvSize:
        """An import file is cut on its CSV bytes (what ``to_csv`` writes), not on the payloads' JSON."""
        return CsvSize(self.csv_cells, hook.delimiter)

    def csv_cells(self, record: Planned) -> dict[str, str]:
        """One record's cells in its import file: the key column, then its fields as text."""
        return {self.key_column: record.key, **{k: _cell(v) for k, v in json.loads(record.payload).items()}}

    def send_upserts(self, hook: ConnectifHook, batch: list[Planned], context: Any) -> list[Outcome] | str:
        if len(batch) > 1:
            created = hook.create_import(self.bulk_kind, self.to_csv(batch, hook.delimiter))
            return f"import:{created['id']}"
        return self.send_each(
            batch, lambda record: self.send_one(hook, record.key, json.loads(record.payload), context)
        )

    def to_csv(self, batch: list[Planned], delimiter: str) -> bytes:
        """UTF-8 CSV whose header row holds Connectif field ids, the key column first."""
        rows = [self.csv_cells(record) for record in batch]
        columns = [self.key_column, *sorted({c for row in rows for c in row} - {self.key_column})]
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=columns, delimiter=delimiter, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        return out.getvalue().encode("utf-8")

    def collect(self, hook: ConnectifHook, job_ref: str, batch: list[Planned]) -> list[Outcome]:
        return self.import_outcomes(hook, hook.wait_import(job_ref.removeprefix("import:")), batch)

    def poll_jobs(self, hook: ConnectifHook, jobs: dict[str, list[Planned]]) -> Finished:
        """Every import in flight in one listing (``GET /imports/`` gives each import whole)."""
        refs = {ref.removeprefix("import:"): ref for ref in jobs}
        finished, unknown = hook.poll_imports(list(refs))
        found: Finished = {
            refs[i]: self.import_outcomes(hook, imp, jobs[refs[i]]) for i, imp in finished.items()
        }
        found.update(dict.fromkeys(refs[i] for i in unknown))
        return found

    def job_polling(self, hook: ConnectifHook) -> dict[str, Any]:
        every = hook.extra("import_poll_seconds", 30.0)
        return {"first": every, "longest": every, "timeout": hook.extra("import_timeout_seconds", 3600.0)}

    def max_jobs_in_flight(self, hook: ConnectifHook) -> int:
        # Connectif queues at most 10 imports per account (E0401), shared with every other task.
        return hook.extra("max_jobs_in_flight", 3, int)

    def import_outcomes(self, hook: ConnectifHook, found: dict, batch: list[Planned]) -> list[Outcome]:
        """A finished import's outcome per record: the rows of its error report fail, the rest arrived."""
        errors = self.row_errors(hook, found, batch)
        if found.get("status") != "finished" and not errors:
            reason = f"Connectif import {found.get('id')} ended {found.get('status')}"
            return [Outcome(r.key, FAILED, reason) for r in batch]
        return [
            Outcome(r.key, FAILED, errors[r.key]) if r.key in errors else Outcome(r.key, DELIVERED)
            for r in batch
        ]

    def row_errors(self, hook: ConnectifHook, found: dict, batch: list[Planned]) -> dict[str, str]:
        """Key -> message from the import's error report (JSON or CSV; rows by key, else by data-row number)."""
        url = found.get("errorReportFileUrl")
        if not found.get("errors") or not url:
            return {}
        raw = hook.download(url).decode("utf-8-sig")
        try:
            entries = json.loads(raw)
            entries = entries.get("errors", entries) if isinstance(entries, dict) else entries
        except ValueError:
            sample = raw.split("\n", 1)[0]
            entries = list(
                csv.DictReader(
                    io.StringIO(raw), delimiter=";" if sample.count(";") > sample.count(",") else ","
                )
            )
        keys = [r.key for r in batch]
        errors: dict[str, str] = {}
        for entry in entries:
            lowered = {str(k).lower().lstrip("_"): v for k, v in entry.items()}
            message = next(
                (str(lowered[k]) for k in ("message", "error", "detail", "reason") if lowered.get(k)),
                "rejected",
            )
            key = lowered.get("key") or lowered.get(self.key_column.lstrip("_").lower())
            if key is None and str(lowered.get("row", "")).isdigit():
                index = int(lowered["row"]) - 1
                key = keys[index] if 0 <= index < len(keys) else None
            if lowered.get("field"):
                message = f"{entry.get('field')}: {message}"
            if key is not None:
                errors[str(key)] = f"Connectif import {found.get('id')}: {message}"
        return errors


class ConnectifContactsOperator(_ConnectifLoad):
    """``PATCH /contacts/{email}`` (creates the contact when absent)."""

    entity = "contacts"
    bulk_kind = "contacts"
    key_column = "_email"
    builtin: ClassVar[tuple[str, ...]] = (
        "name",
        "surname",
        "birthdate",
        "emailStatus",
        "mobilePhone",
        "mobilePhoneStatus",
        "newsletterSubscriptionStatus",
        "smsSubscriptionStatus",
        "points",
    )

    can_read_back = True

    def read_back(self, hook: ConnectifHook, keys: list[str]) -> dict[str, dict]:
        """One contacts export (``POST /exports/``, polled, its file downloaded without our key): a few
        requests whatever the number of contacts. Cells are text, empty meaning no value."""
        import tempfile

        wanted = set(keys)
        created = hook.create_export("contacts")
        found = hook.wait_export(str(created["id"]))
        if found.get("status") != "finished" or not found.get("fileUrl"):
            raise VendorError(
                f"Connectif contacts export {found.get('id')} ended {found.get('status')} without a file; "
                "run reconcile again."
            )
        held: dict[str, dict] = {}
        with tempfile.TemporaryDirectory(prefix="retl-reconcile-") as tmp:
            path = f"{tmp}/contacts.csv"
            hook.download_to(found["fileUrl"], path)
            with open(path, encoding="utf-8-sig", newline="") as handle:
                reader = csv.DictReader(handle, delimiter=found.get("delimiter") or hook.delimiter)
                for row in reader:
                    key = (row.get(self.key_column) or "").strip().lower()
                    if key in wanted:
                        held[key] = {k: (v if v != "" else None) for k, v in row.items()}
        return held

    def build_payload(self, row: dict, context: Any) -> dict:
        mapped = row_to_payload(row)
        custom = mapped.pop("custom", {})
        return {**{f"_{k}" if k in self.builtin else k: v for k, v in mapped.items()}, **custom}

    def send_one(self, hook: ConnectifHook, key: str, payload: dict, context: Any) -> None:
        hook.patch_contact(key, payload)


class ConnectifProductsOperator(_ConnectifLoad):
    """``PATCH /products/product-id/{id}`` (upsert by the store's product id)."""

    entity = "products"
    bulk_kind = "products"
    key_column = "productId"

    def send_one(self, hook: ConnectifHook, key: str, payload: dict, context: Any) -> None:
        hook.patch_product(key, payload)


class ConnectifPurchasesOperator(_ConnectifLoad):
    """``POST /purchases/`` once its contact and products exist (the DAG orders the loads). Backfill runs,
    and runs with the param ``historical_import``, send ``triggerPurchaseEvent=false`` so old purchases
    fire no automations."""

    entity = "purchases"

    def send_one(self, hook: ConnectifHook, key: str, payload: dict, context: Any) -> None:
        run_type = str(getattr(context.get("dag_run"), "run_type", "") or "")
        historical = "backfill" in run_type or bool(context["params"].get("historical_import"))
        hook.post_purchase(payload, trigger_event=not historical)


class ConnectifCouponsOperator(_ConnectifLoad):
    """New coupon codes into their coupon sets: one CSV import (``type=coupons``, ``couponSetId``) per set,
    whatever the delta's size; Connectif has no single-coupon endpoint we know of. The ledger key is the
    code and the payload only its set, so a code goes once, whatever else changes about it. A code the set
    already holds (an import lost before it was recorded, or loaded by hand) counts as delivered."""

    entity = "coupons"
    bulk_kind = "coupons"

    def batch_limit(self, context: Any) -> int | None:
        return _import_rows(self.hook_class(self.vendor_conn_id))

    def body_size(self, hook: ConnectifHook) -> CsvSize:
        column = hook.extras.get("coupon_code_column", "code")  # the file's one column: the codes
        return CsvSize(lambda record: {column: record.key}, hook.delimiter)

    def batch_group(self, record: Planned) -> str | None:
        return json.loads(record.payload)["couponSetId"]

    def send_upserts(self, hook: ConnectifHook, batch: list[Planned], context: Any) -> list[Outcome] | str:
        column = hook.extras.get("coupon_code_column", "code")
        out = io.StringIO()
        writer = csv.writer(out, delimiter=hook.delimiter, lineterminator="\n")
        writer.writerow([column])
        writer.writerows([record.key] for record in batch)
        created = hook.create_import(
            "coupons",
            out.getvalue().encode("utf-8"),
            override_existing=False,
            coupon_set_id=self.batch_group(batch[0]),
        )
        return f"import:{created['id']}"

    def import_outcomes(self, hook: ConnectifHook, found: dict, batch: list[Planned]) -> list[Outcome]:
        exists = hook.extras.get("coupon_exists_pattern", "already exists")
        return [
            Outcome(o.key, DELIVERED) if o.status == FAILED and exists in (o.error or "") else o
            for o in super().import_outcomes(hook, found, batch)
        ]


class ConnectifExportOperator(BaseOperator):
    """Connectif's data back next to ours: request each export, poll it, stream the file down and load it
    into ``<export_table_prefix><type>`` in the warehouse (text columns plus ``_export_id`` and time
    stamps). ``contacts`` is a snapshot that replaces the table; ``activities`` covers the run's window
    (in parts of at most 31 days, Connectif's limit) and replaces that window's rows, so reruns and
    retries never double them.

    :param exports: export types; ``None`` takes the DAG param ``exports``, then the connection extra.
    """

    template_fields: Sequence[str] = ("vendor_conn_id", "warehouse_conn_id", "exports")
    ui_color = "#f3ecfb"
    max_days = 31

    def __init__(
        self,
        *,
        vendor_conn_id: str,
        warehouse_conn_id: str | None = None,
        exports: list[str] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.vendor_conn_id = vendor_conn_id
        self.warehouse_conn_id = warehouse_conn_id
        self.exports = exports

    @fail_fast()
    def execute(self, context: Any) -> dict:
        from airflow.sdk.exceptions import AirflowSkipException

        from reverse_etl import settings
        from reverse_etl.warehouse import WarehouseHook
        from reverse_etl.window import resolve_window

        params = context["params"]
        hook = ConnectifHook(self.vendor_conn_id)
        wanted = self.exports if self.exports is not None else params.get("exports")
        if wanted is None:
            wanted = hook.extras.get("exports", [])
        if not wanted:
            raise AirflowSkipException(
                "no Connectif exports asked for: set the param 'exports' or the connection extra 'exports'"
            )
        if params.get("dry_run"):
            raise AirflowSkipException(f"dry run: would export {wanted} into the warehouse")
        window = resolve_window(params, context.get("data_interval_start"), context.get("data_interval_end"))
        warehouse = WarehouseHook(self.warehouse_conn_id or settings.export_conn_id())
        table_prefix = hook.extras.get("export_table_prefix", "connectif_")
        report: dict[str, Any] = {}
        try:
            for kind in wanted:
                table = f"{table_prefix}{kind}"
                if kind == "activities":
                    report[kind] = [
                        self._export(hook, warehouse, kind, table, part)
                        for part in self._parts(window.start, window.end)
                    ]
                else:
                    report[kind] = [self._export(hook, warehouse, kind, table, None)]
        finally:
            hook.flush_request_minutes()
        report["requests"] = hook.stats.requests
        report["throttled"] = hook.stats.throttled
        log.info("connectif exports: %s", json.dumps(report, default=str))
        return report

    def _parts(self, start: dt.datetime, end: dt.datetime) -> list[tuple[dt.datetime, dt.datetime]]:
        step = dt.timedelta(days=self.max_days)
        parts = []
        while start < end:
            parts.append((start, min(end, start + step)))
            start += step
        return parts

    def _export(self, hook: ConnectifHook, warehouse: Any, kind: str, table: str, part: tuple | None) -> dict:
        import tempfile

        started = time.monotonic()
        filters = bounds = None
        stamps = {"_exported_at": utc_now().isoformat()}
        if part is not None:
            # Our windows are half-open; Connectif's toDate is taken as inclusive: stop 1 ms short.
            last = part[1] - dt.timedelta(milliseconds=1)
            filters = {"fromDate": _iso_z(part[0]), "toDate": _iso_z(last)}
            span = (_naive(part[0]).isoformat(), _naive(part[1]).isoformat())
            stamps.update(_window_start=span[0], _window_end=span[1])
            bounds = {"_window_start": span, "_window_end": span}  # a rerun replaces windows inside it
        created = hook.create_export(kind, filters)
        log.info("connectif export %s (%s, %s) requested", created.get("id"), kind, filters or "all")
        found = hook.wait_export(str(created["id"]))
        if found.get("status") != "finished" or not found.get("fileUrl"):
            raise VendorError(
                f"Connectif export {found.get('id')} ({kind}) ended {found.get('status')} without a file; "
                "the task's retry requests a new one."
            )
        with tempfile.TemporaryDirectory(prefix="retl-export-") as tmp:
            path = f"{tmp}/{kind}.csv"
            size = hook.download_to(found["fileUrl"], path)
            table_rows = warehouse.load_csv(
                table,
                path,
                delimiter=found.get("delimiter") or hook.delimiter,
                stamps=stamps,
                labels={"_export_id": str(found.get("id"))},
                replace_rows_where=bounds,
            )
        result = {
            "export_id": found.get("id"),
            "table": table,
            "rows": found.get("total"),
            "bytes": size,
            "table_rows": table_rows,
            "window": filters,
            "seconds": round(time.monotonic() - started, 3),
        }
        log.info("connectif export %s loaded into %s: %s", found.get("id"), table, result)
        return result


def _cell(value: Any) -> str:
    """A payload value as an import cell: lists joined by ``|`` (Connectif's list fields), the rest as text."""
    return "|".join(map(str, value)) if isinstance(value, list) else str(value)


def _import_rows(hook: ConnectifHook) -> int | None:
    """Rows per import file: the extra ``import_rows`` when set (0 or absent: files are cut at 45 MB only)."""
    return hook.extra("import_rows", 0, int) or None


def _naive(value: dt.datetime) -> dt.datetime:
    return value.astimezone(dt.UTC).replace(tzinfo=None) if value.tzinfo else value


def _iso_z(value: dt.datetime) -> str:
    return _naive(value).isoformat(timespec="milliseconds") + "Z"
