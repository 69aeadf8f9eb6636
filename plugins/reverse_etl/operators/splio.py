"""Splio Referral: the window's valid referral contacts as CSV files on Splio's SFTP server.

The file is the window's delta: every valid, not deleted row, whether or not an earlier run sent it, so a
rerun of a window builds the same file and replaces it (same name, renamed over it) instead of adding a
second copy. Earlier parts of the window that the new upload does not have are removed. Each record's
delivery (with the file name) goes into the ledger for "what happened to record X". Uploads hold the
ledger's lease of the sync, as loads do: two runs at once upload one after the other.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from airflow.sdk import BaseOperator

from reverse_etl.csvfile import window_regex
from reverse_etl.errors import fail_fast
from reverse_etl.leases import holder_of
from reverse_etl.ledger import Ledger
from reverse_etl.store import utc_now

log = logging.getLogger(__name__)


class SplioReferralUploadOperator(BaseOperator):
    """Build the CSV parts of the window and upload them through ``SplioSFTPHook``.

    :param manifest: the validate task's manifest (XCom).
    :param vendor_conn_id: the SFTP connection (file settings are its extras, see the hook).
    """

    template_fields: Sequence[str] = ("manifest", "vendor_conn_id")
    ui_color = "#fdf3e7"
    destination = "splio_referral"
    entity = "referral_contacts"
    default_pattern = "referral_contacts_{date}{part}.csv"
    vendor_name = "Splio"
    can_read_back = True
    key_column = "unique_id"  # the file's column holding the record key (``_key``)

    @staticmethod
    def open_hook(conn_id: str | None) -> Any:
        """The SFTP hook (imported here: DAG files must not import the SFTP provider)."""
        from reverse_etl.hooks.splio import SplioSFTPHook

        return SplioSFTPHook(conn_id or SplioSFTPHook.default_conn_name)

    # --- reconcile: the files we uploaded are still on Splio's server ---------------------------------
    def build_payload(self, row: dict, context: Any) -> dict:
        """The record as one file line: the mapping's columns (``_`` meta columns left out)."""
        from reverse_etl.payload import row_to_payload

        return row_to_payload(row)

    def holds(self, vendor_record: dict, payload: dict) -> bool:
        from reverse_etl.reconcile import holds

        return holds(vendor_record, payload)

    def read_back(self, hook: Any, keys: list[str]) -> dict[str, dict]:
        """Every line of every window's file on the server (the newest file's line wins), by key."""
        import re

        from reverse_etl.csvfile import window_regex

        pattern = hook.extra("file_pattern", self.default_pattern)
        any_date = re.compile(window_regex(pattern, "00000000").pattern.replace("00000000", r"\d{8}"))
        wanted = set(keys)
        held: dict[str, dict] = {}
        for name, row in hook.read_files(any_date, hook.extra("delimiter", ";")):
            key = row.get(self.key_column)
            if key in wanted:
                held[key] = {**row, "_file": name}
        return held

    def __init__(self, *, manifest: Any, vendor_conn_id: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.manifest = manifest
        self.vendor_conn_id = vendor_conn_id

    @fail_fast()
    def execute(self, context: Any) -> dict:
        from reverse_etl.hooks.splio import SplioSFTPHook
        from reverse_etl.tasks import skip_unless_selected

        started = time.monotonic()
        started_at = utc_now()
        params = context["params"]
        skip_unless_selected(params, self.entity)
        dry_run = bool(params.get("dry_run"))
        if params.get("reconcile"):
            log.info(
                "reconcile: nothing to do for Splio Referral in a run; a window's file is rebuilt whole and "
                "every line uploaded is recorded delivered (the CLI's reconcile rebuilds older windows' history)"
            )
        manifest = self.manifest or {}
        hook = SplioSFTPHook(self.vendor_conn_id or SplioSFTPHook.default_conn_name)
        window = manifest.get("window") or {}
        date = dt.datetime.fromisoformat(window["start"]).strftime("%Y%m%d") if window else "nodate"
        pattern = hook.extra("file_pattern", self.default_pattern)
        max_lines = hook.extra("max_lines", 200_000, int)
        report: dict[str, Any] = {
            "destination": self.destination,
            "entity": self.entity,
            "dry_run": dry_run,
            "status": "success",
            "error": None,
            "window": window,
            "extracted": manifest.get("rows", 0),
            "valid": manifest.get("valid", 0),
            "rejected": manifest.get("rejected", 0),
            "to_send": 0,
            "sent": 0,
            "deletes_skipped": 0,
            "failed": 0,
            "files": [],
            "bytes": 0,
            "folded_line_breaks": 0,
            "neutralised_formulas": 0,
            "quarantine": manifest.get("quarantine_path"),
            "quarantine_rules": manifest.get("quarantine_rules", []),
        }
        ledger = Ledger(self.destination, self.entity, context["run_id"])
        try:
            parts = self._build(hook, manifest, report, context, max_lines)
            names = self._names(hook, pattern, date, len(parts))
            if not parts:
                log.info("no changes in the window %s: no file uploaded", window)
            elif dry_run:
                log.info(
                    "dry run: would upload %s (%d rows), built in %s",
                    names,
                    report["to_send"],
                    parts[0].parent,
                )
                report["dry_run_files"] = [str(p) for p in parts]
                report["files"] = names
            else:
                # One upload at a time into the folder: every upload sweeps the temporary files it finds
                # there, so another run's upload in progress would be removed under it.
                from reverse_etl import settings

                ledger.acquire_lease(
                    holder_of(context, self.task_id),
                    ttl=settings.lease_seconds(),
                    wait=settings.lease_wait_seconds(),
                )
                for path, name in zip(parts, names, strict=True):
                    report["bytes"] += hook.upload(str(path), name)
                    log.info("uploaded %s (%d bytes)", name, path.stat().st_size)
                    ledger.renew_lease()
                report["files"] = names
                report["removed"] = hook.remove_others(window_regex(pattern, date), set(names))
                report["sent"] = self._record_delivery(ledger, manifest, names, max_lines - 1)
        except Exception as exc:
            report.update(status="failed", error=f"{type(exc).__name__}: {exc}")
            raise
        finally:
            ledger.release_lease()
            report["seconds"] = round(time.monotonic() - started, 3)
            ledger.record_run(
                dag_id=context["dag"].dag_id,
                try_number=getattr(context.get("ti"), "try_number", None),
                window=window,
                dry_run=dry_run,
                status=report["status"],
                started_at=started_at,
                report=report,
            )
        log.info("%s.%s report: %s", self.destination, self.entity, json.dumps(report, default=str))
        return report

    def _build(self, hook: Any, manifest: dict, report: dict, context: Any, max_lines: int) -> list[Path]:
        """Stream the valid rows into CSV parts in the staging folder (a local one when staging is remote)."""
        import tempfile

        from reverse_etl import settings
        from reverse_etl.csvfile import CsvParts
        from reverse_etl.staging import is_local, iter_valid, sync_dir

        if not manifest.get("valid_path") or not manifest.get("valid"):
            return []
        staging = sync_dir(context["dag"].dag_id, context["run_id"], self.entity)
        folder = (
            Path(staging.path) / "upload"
            if is_local(staging)
            else Path(tempfile.mkdtemp(prefix="retl-splio-"))
        )
        for old in folder.glob("part-*"):
            old.unlink()  # a retry rebuilds the parts from scratch
        writer = None
        for batch in iter_valid(manifest, settings.chunk_rows()):
            if writer is None:
                columns = [c for c in batch.schema.names if not c.startswith("_")]
                writer = CsvParts(
                    folder,
                    header=columns,
                    delimiter=hook.extra("delimiter", ";"),
                    max_lines=max_lines,
                    gzipped=hook.gzipped,
                )
            deleted = batch.column("_deleted").to_pylist() if "_deleted" in batch.schema.names else None
            values = [batch.column(c).to_pylist() for c in columns]
            for i, row in enumerate(zip(*values, strict=True)):
                if deleted is not None and deleted[i]:
                    report["deletes_skipped"] += 1  # Splio Referral files carry no deletes
                    continue
                writer.write(list(row))
        if writer is None or not writer.rows:
            return []
        parts = writer.close()
        report["to_send"] = writer.rows
        report["folded_line_breaks"] = writer.stats.folded
        report["neutralised_formulas"] = writer.stats.neutralised
        return parts

    def _names(self, hook: Any, pattern: str, date: str, parts: int) -> list[str]:
        from reverse_etl.csvfile import file_names
        from reverse_etl.errors import ConfigError

        if not parts:
            return []
        try:
            return file_names(pattern, date, parts, hook.gzipped)
        except (ValueError, KeyError, IndexError) as exc:
            raise ConfigError(
                f"SFTP connection '{hook.ssh_conn_id}': extra file_pattern {pattern!r} is unusable ({exc}); "
                "it takes {date} (YYYYMMDD, the window's start) and {part} (empty, or _01, _02... when split)."
            ) from exc

    def _record_delivery(self, ledger: Ledger, manifest: dict, names: list[str], rows_per_part: int) -> int:
        """Every row that went up is delivered, with the file it went in (rows fill the parts in order)."""
        from reverse_etl import settings
        from reverse_etl.staging import iter_valid

        sent = 0
        for batch in iter_valid(manifest, settings.chunk_rows(), columns=["_key", "_deleted"]):
            pairs = zip(batch.column("_key").to_pylist(), batch.column("_deleted").to_pylist(), strict=True)
            keys = [str(key) for key, deleted in pairs if not deleted]
            if not keys:
                continue
            ledger.mark_delivered(
                [(key, f"sftp:{names[index // rows_per_part]}") for index, key in enumerate(keys, start=sent)]
            )
            sent += len(keys)
        return sent
