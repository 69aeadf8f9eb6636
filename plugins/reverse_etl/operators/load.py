"""The generic load: plan against the ledger, deliver what changed in batches, report.

A vendor adapter subclasses ``SyncLoadOperator`` and implements ``send_upserts`` (returning per-record
outcomes, or a job reference for async vendor jobs), ``collect`` (for async jobs) and ``send_deletes``.
Everything else is here: unchanged-skip, resume, batch splitting on whole-batch rejection, dry runs,
progress logs and the report.

Resume: records are written ``pending`` (with their payload) before anything is sent, async jobs are
recorded ``in_flight`` (each job's records under its reference) before they are polled, and every answer is
recorded batch by batch. A retried or later run polls unfinished jobs first, then sends whatever is still
pending: nothing twice, nothing skipped.

Batches are cut on the bytes the vendor receives (``max_batch_bytes``, measured by the adapter's
``body_size``, see ``reverse_etl.batching``), and async jobs overlap: up to ``max_jobs_in_flight`` wait at
the vendor while the load sends the next batches, all polled together (see ``reverse_etl.jobs``).

Erasures: after the delta, a sync that can delete and has ``include/sql/<destination>/<entity>.keys.sql``
deletes the records it delivered that are gone from the source (see ``reverse_etl.erasures``), under the
same lease and through the same pending/deleted ledger states.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

from airflow.sdk import BaseOperator

from reverse_etl import gc_tuning, settings
from reverse_etl.batching import Batcher, BodySize, JsonArraySize
from reverse_etl.errors import VendorAuthError, VendorNotFound, VendorRejected, fail_fast
from reverse_etl.jobs import Finished, InFlightJobs
from reverse_etl.leases import holder_of
from reverse_etl.ledger import DELETE, DELETED, DELIVERED, FAILED, UPSERT, Ledger, Outcome, Planned
from reverse_etl.payload import row_to_payload, serialise
from reverse_etl.store import utc_now
from reverse_etl.tasks import skip_unless_selected

log = logging.getLogger(__name__)
# Refused records logged one by one per load; past it one line points to where they all are (a bad
# mapping can fail every record of a million-record load: a log of a million warnings helps nobody).
FAILURES_LOGGED = 20


class SyncLoadOperator(BaseOperator):
    """Deliver the validated rows of one sync to its vendor.

    :param manifest: the validate task's manifest (XCom): where the valid rows are and the counts so far.
    :param vendor_conn_id: the vendor account's Airflow connection.
    """

    template_fields: Sequence[str] = ("manifest", "vendor_conn_id")
    ui_color = "#e8f1fb"

    destination: ClassVar[str] = ""
    entity: ClassVar[str] = ""
    hook_class: ClassVar[type] = type(None)
    batch_size: ClassVar[int | None] = 100  # records per request; None: only max_batch_bytes cuts
    max_batch_bytes: ClassVar[int] = 9_000_000  # request body bytes, as ``body_size`` measures them
    delete_batch_size: ClassVar[int | None] = None  # deletes recorded per batch; None: as upserts
    supports_delete: ClassVar[bool] = False
    # Facts such as events: once delivered never sent again, even changed or with full_resync (the vendor
    # would record a second event).
    send_once: ClassVar[bool] = False

    def __init__(self, *, manifest: Any, vendor_conn_id: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.manifest = manifest
        self.vendor_conn_id = vendor_conn_id

    # --- vendor adapter API ------------------------------------------------------------------------------
    def build_payload(self, row: dict, context: Any) -> dict:
        """Row (as mapped by the SQL file) to the vendor payload; override to add vendor framing."""
        return row_to_payload(row)

    def send_upserts(self, hook: Any, batch: list[Planned], context: Any) -> list[Outcome] | str:
        raise NotImplementedError

    def collect(self, hook: Any, job_ref: str, batch: list[Planned]) -> list[Outcome]:
        """Wait for one job and return its records' outcomes (``batch`` holds keys, not payloads)."""
        raise NotImplementedError(f"{type(self).__name__} sends no async jobs")

    def poll_jobs(self, hook: Any, jobs: dict[str, list[Planned]]) -> Finished:
        """One round of polling: the finished jobs among ``jobs`` with their outcomes (None for a job the
        vendor does not know). This default waits for the oldest job with ``collect``; adapters whose vendor
        lists jobs override it to ask about all of them at once (and set ``job_polling``'s ``blocking``)."""
        ref, batch = next(iter(jobs.items()))
        try:
            return {ref: self.collect(hook, ref, batch)}
        except VendorNotFound:
            return {ref: None}

    def job_polling(self, hook: Any) -> dict[str, Any]:
        """How jobs are polled: ``blocking`` (``poll_jobs`` waits itself), else ``first``/``longest`` seconds
        between polls and the ``timeout`` without news (see ``reverse_etl.jobs.InFlightJobs``)."""
        return {"blocking": True}

    def max_jobs_in_flight(self, hook: Any) -> int:
        """Jobs that may wait at the vendor at once while the load sends more."""
        return 1

    def body_size(self, hook: Any) -> BodySize:
        """How a request body grows with each record: a JSON array of the payloads by default."""
        return JsonArraySize()

    def send_deletes(self, hook: Any, batch: list[Planned], context: Any) -> list[Outcome]:
        raise NotImplementedError(f"{type(self).__name__} cannot delete")

    # Reconcile (see ``reverse_etl.reconcile``): adapters that can read their records back set
    # ``can_read_back`` and implement ``read_back``; the others say why not in ``read_back_refusal``.
    can_read_back: ClassVar[bool] = False
    read_back_refusal: ClassVar[str] = ""
    vendor_name: ClassVar[str] = ""

    def read_back(self, hook: Any, keys: list[str]) -> dict[str, dict]:
        """The vendor's records of these keys, ``{key: record}`` (absent keys left out), read as cheaply as
        the vendor allows (a listing or one lookup per key). Never writes to the vendor."""
        raise NotImplementedError(f"{type(self).__name__} cannot read its records back")

    def holds(self, vendor_record: dict, payload: dict) -> bool:
        """Does the vendor's record hold this payload? Override where the vendor answers in other shapes."""
        from reverse_etl.reconcile import holds

        return holds(vendor_record, payload)

    def batch_limit(self, context: Any) -> int:
        """Records per batch; the ledger records answers batch by batch. ``self.pending_count`` (records
        waiting to be sent, set before delivery) lets an adapter switch to a bulk path for large deltas."""
        return self.batch_size

    @staticmethod
    def send_each(
        batch: list[Planned], send: Callable[[Planned], None], done: str = DELIVERED
    ) -> list[Outcome]:
        """One request per record: a refusal fails that record alone, with the vendor's message; a record
        already absent at the vendor counts as deleted when deleting (the goal is reached)."""
        outcomes = []
        for record in batch:
            try:
                send(record)
            except VendorNotFound as exc:
                if done != DELETED:
                    outcomes.append(Outcome(record.key, FAILED, str(exc)))
                    continue
            except VendorRejected as exc:
                outcomes.append(Outcome(record.key, FAILED, str(exc)))
                continue
            outcomes.append(Outcome(record.key, done))
        return outcomes

    def batch_group(self, record: Planned) -> str | None:
        """Records of different groups never share a batch (e.g. one import per coupon set)."""
        return None

    # --- engine ------------------------------------------------------------------------------------------
    @fail_fast()
    def execute(self, context: Any) -> dict:
        started = time.monotonic()
        started_at = utc_now()
        params = context["params"]
        skip_unless_selected(params, self.entity)
        dry_run = bool(params.get("dry_run"))
        full_resync = bool(params.get("full_resync"))
        manifest = self.manifest or {}
        ledger = Ledger(self.destination, self.entity, context["run_id"])
        hook = self.hook_class(self.vendor_conn_id)
        self._dry_run_held: set[str] = set()
        counts = {
            "extracted": manifest.get("rows", 0),
            "valid": manifest.get("valid", 0),
            "rejected": manifest.get("rejected", 0),
            "unchanged_skipped": 0,
            "to_send": 0,
            "to_delete": 0,
            "deletes_skipped": 0,
            "carried_over": 0,
            "sent": 0,
            "deleted": 0,
            "erased": 0,
            "failed": 0,
            "previously_failed": 0,
            "resumed_jobs": 0,
        }
        status, error = "success", None
        try:
            if not dry_run:
                ledger.acquire_lease(
                    holder_of(context, self.task_id),
                    ttl=settings.lease_seconds(),
                    wait=settings.lease_wait_seconds(),
                )
                self._resume_jobs(hook, ledger, counts)
            if params.get("reconcile"):
                self._reconcile(hook, ledger, manifest, counts, context, dry_run=dry_run)
            self._plan(ledger, manifest, counts, context, dry_run=dry_run, full_resync=full_resync)
            if not dry_run:
                done = self._deliver(hook, ledger, counts, context)
                counts["carried_over"] = max(0, done - counts["to_send"] - counts["to_delete"])
            self._sweep_erasures(hook, ledger, counts, context, dry_run=dry_run)
        except Exception as exc:
            status, error = "failed", f"{type(exc).__name__}: {exc}"
            raise
        finally:
            if hasattr(hook, "flush_request_minutes"):  # the account's requests per minute (HTTP vendors)
                hook.flush_request_minutes()
            ledger.release_lease()
            report = {
                "destination": self.destination,
                "entity": self.entity,
                "dry_run": dry_run,
                "status": status,
                "error": error,
                "window": manifest.get("window"),
                **counts,
                **hook.stats.as_dict(),
                "quarantine": manifest.get("quarantine_path"),
                "quarantine_rules": manifest.get("quarantine_rules", []),
                "seconds": round(time.monotonic() - started, 3),
            }
            # Kept even when the load fails: what was delivered before the failure stays visible.
            ledger.record_run(
                dag_id=context["dag"].dag_id,
                try_number=getattr(context.get("ti"), "try_number", None),
                window=manifest.get("window") or {},
                dry_run=dry_run,
                status=status,
                started_at=started_at,
                report=report,
            )
        log.info("%s.%s report: %s", self.destination, self.entity, json.dumps(report, default=str))
        return report

    def _plan(
        self, ledger: Ledger, manifest: dict, counts: dict, context: Any, *, dry_run: bool, full_resync: bool
    ) -> None:
        """Decide per valid row: unchanged (skip), upsert or delete; persist the plan unless dry run."""
        from reverse_etl.planning import PlanRules, plan

        rules = PlanRules(
            send_once=self.send_once,
            supports_delete=self.supports_delete,
            held=self._dry_run_held,
            full_resync=full_resync,
            serialised=lambda row: self._serialised(row, context),
        )
        plan(ledger, manifest, counts, rules, dry_run=dry_run)

    def _serialised(self, row: dict, context: Any) -> tuple[dict, str, str]:
        payload = self.build_payload(row, context)
        return (payload, *serialise(payload))

    def _reconcile(
        self, hook: Any, ledger: Ledger, manifest: dict, counts: dict, context: Any, *, dry_run: bool
    ) -> None:
        """The param ``reconcile``: record delivered what the vendor already holds, before planning, so
        this run sends only what the vendor lacks or holds in an older version (after a lost state store)."""
        from airflow.sdk.exceptions import AirflowFailException

        from reverse_etl import reconcile
        from reverse_etl.staging import iter_valid

        name = f"{self.destination}.{self.entity}"
        if not self.can_read_back:
            if dry_run:
                log.warning("%s", reconcile.refusal(self))
                counts["reconciled"] = {"refused": self.read_back_refusal}
                return
            raise AirflowFailException(reconcile.refusal(self))
        if not manifest.get("valid_path"):
            counts["reconciled"] = reconcile.ReconcileReport().as_dict()
            return
        chunk = settings.chunk_rows()
        result = reconcile.reconcile(
            self,
            hook,
            ledger,
            lambda: (batch.to_pylist() for batch in iter_valid(manifest, chunk)),
            context,
            dry_run=dry_run,
            # A dry run records nothing: its plan leaves the held records out of the preview instead.
            on_held=self._dry_run_held.update if dry_run else None,
            on_progress=ledger.renew_lease,
        )
        counts["reconciled"] = result.as_dict()
        log.info("%s", result.summary(name, dry_run))

    def _jobs(self, hook: Any, ledger: Ledger, counts: dict) -> InFlightJobs:
        """The tracker of this load's async jobs: each answer goes to the ledger as it comes."""

        def on_done(ref: str, batch: list[Planned], outcomes: list[Outcome] | None) -> None:
            if outcomes is None:
                log.warning(
                    "vendor job %s is unknown to the vendor: its %d records go back to pending",
                    ref,
                    len(batch),
                )
                ledger.return_to_pending(ref, f"vendor job {ref} unknown to the vendor: to send again")
                return
            self._apply(ledger, outcomes, counts)

        return InFlightJobs(
            lambda jobs: self.poll_jobs(hook, jobs),
            on_done,
            what=f"{self.vendor_name or self.destination} jobs of {self.destination}.{self.entity}",
            logger=log,
            **self.job_polling(hook),
        )

    def _resume_jobs(self, hook: Any, ledger: Ledger, counts: dict) -> None:
        """Poll the vendor jobs a previous try started, all together: their records must not be sent again."""
        jobs = self._jobs(hook, ledger, counts)
        for job_ref, batch in ledger.in_flight().items():
            counts["resumed_jobs"] += 1
            log.info(
                "%s.%s: resuming vendor job %s (%d records)",
                self.destination,
                self.entity,
                job_ref,
                len(batch),
            )
            jobs.add(job_ref, batch)
        jobs.wait()

    def _sweep_erasures(
        self, hook: Any, ledger: Ledger, counts: dict, context: Any, *, dry_run: bool
    ) -> None:
        """Delete the records we delivered that are gone from the source (hard deletes leave no delta).

        Refuses, without deleting anything, when more than ``max_erasure_share`` of the delivered records
        would go at once, or when the source has no keys at all: a broken source must not empty a vendor.
        """
        from reverse_etl import erasures

        params = context["params"]
        if not self.supports_delete or not params.get("detect_erasures", True):
            return
        if not erasures.keys_sql_path(self.destination, self.entity).exists():
            return
        from airflow.sdk.exceptions import AirflowFailException

        from reverse_etl.staging import JsonLinesSink, sync_dir

        name = f"{self.destination}.{self.entity}"
        max_share = float(params.get("max_erasure_share", erasures.DEFAULT_MAX_SHARE))
        chunk = settings.chunk_rows()
        with erasures.ErasureSweep(self.destination, self.entity, chunk_rows=chunk) as sweep:
            scan = sweep.scan(
                ledger,
                erasures.stream_source_keys(self.destination, self.entity, chunk),
                on_progress=ledger.renew_lease,
            )
            if scan.erased:
                with JsonLinesSink(
                    sync_dir(context["dag"].dag_id, context["run_id"], self.entity) / "erased_keys.jsonl"
                ) as keys_file:
                    for keys in scan.batches(chunk):
                        for key in keys:
                            keys_file.write({"key": key, "reason": erasures.REASON})
                scan.keys_path = str(keys_file.path)
            counts["erasures"] = scan.as_dict()
            refusal = scan.refusal(name, max_share)
            log.info(
                "%s erasures: %d of %d delivered records are gone from the source (%d source keys)%s%s",
                name,
                scan.erased,
                scan.delivered,
                scan.source_keys,
                f", e.g. {', '.join(scan.sample)}" if scan.sample else "",
                f"; all in {scan.keys_path}" if scan.keys_path else "",
            )
            if refusal:
                counts["erasures"]["refused"] = refusal
            if dry_run:
                counts["erased"] = scan.erased  # would delete; nothing planned
                if refusal:
                    log.warning("dry run; a live run would refuse: %s", refusal)
                return
            if refusal:
                raise AirflowFailException(refusal)
            for keys in scan.batches(chunk):
                ledger.plan([Planned(key, DELETE, None, None, erasures.REASON) for key in keys])
                ledger.renew_lease()
            counts["erased"] = scan.erased
        if counts["erased"]:
            self._deliver(hook, ledger, counts, context)

    def _deliver(self, hook: Any, ledger: Ledger, counts: dict, context: Any) -> int:
        """Send every pending record (this run's and any earlier run's); return how many were answered."""
        with gc_tuning.fewer_passes():
            return self._deliver_pages(hook, ledger, counts, context)

    def _deliver_pages(self, hook: Any, ledger: Ledger, counts: dict, context: Any) -> int:
        total = counts["to_send"] + counts["to_delete"]
        done = 0
        last_log = time.monotonic()
        self.pending_count = ledger.count_status("pending")
        limit = self.batch_limit(context)
        delete_limit = self.delete_batch_size or limit or 1000
        jobs = self._jobs(hook, ledger, counts)
        room = max(1, self.max_jobs_in_flight(hook))
        batcher = Batcher(limit, self.max_batch_bytes, lambda: self.body_size(hook), self.batch_group)

        def send(batch: list[Planned]) -> int:
            outcomes, started = self._send(hook, ledger, batch, context)
            self._apply(ledger, outcomes, counts)
            for ref, records in started:
                jobs.add(ref, records)
            jobs.wait(until=room - 1)  # a free slot for the next job
            return len(batch)

        for page in ledger.iter_status("pending", max(settings.chunk_rows(), (limit or 0) * 10)):
            for record in page:
                if record.operation == UPSERT:
                    full = batcher.add(record)
                    if full:
                        done += send(full)
            deletes = [p for p in page if p.operation == DELETE]
            for i in range(0, len(deletes), delete_limit):
                batch = deletes[i : i + delete_limit]
                reasons = {p.key: p.reason for p in batch if p.reason}
                outcomes = [
                    Outcome(o.key, o.status, o.error or reasons.get(o.key)) if o.status == DELETED else o
                    for o in self.send_deletes(hook, batch, context)
                ]
                self._apply(ledger, outcomes, counts)
                done += len(batch)
            if time.monotonic() - last_log > 10:
                last_log = time.monotonic()
                log.info(
                    "%s.%s: %d/%d records handed over (%d jobs in flight; %d requests, %d 429s so far)",
                    self.destination,
                    self.entity,
                    done,
                    total,
                    len(jobs),
                    hook.stats.requests,
                    hook.stats.throttled,
                )
        for batch in batcher.rest():
            done += send(batch)
        jobs.wait()
        return done

    def _send(
        self, hook: Any, ledger: Ledger, batch: list[Planned], context: Any
    ) -> tuple[list[Outcome], list[tuple[str, list[Planned]]]]:
        """Send a batch: the outcomes answered at once, and the vendor jobs started (recorded in flight). If
        the vendor refuses the batch whole, split it until the bad records are isolated."""
        try:
            result = self.send_upserts(hook, batch, context)
        except VendorAuthError:
            raise
        except VendorRejected as exc:
            if len(batch) == 1:
                return [Outcome(batch[0].key, FAILED, str(exc))], []
            middle = len(batch) // 2
            log.warning(
                "%s.%s: batch of %d refused (%s); splitting", self.destination, self.entity, len(batch), exc
            )
            first, first_jobs = self._send(hook, ledger, batch[:middle], context)
            second, second_jobs = self._send(hook, ledger, batch[middle:], context)
            return first + second, first_jobs + second_jobs
        if isinstance(result, str):
            ledger.mark_in_flight([p.key for p in batch], result)
            return [], [(result, batch)]
        return result, []

    def _masked(self, outcome: Outcome) -> tuple[str, str | None]:
        """A refused record's key and the vendor's message as the task log shows them: personal data masked
        as on the Reverse ETL page (a personal key; emails the vendor quotes, "Contact j@x.com does not
        exist"). The ledger keeps both whole, for ``reverse_etl.cli failed``."""
        from reverse_etl.ui.quarantine import mask_emails, masker

        if getattr(self, "_log_masker", None) is None:
            self._log_masker = masker(self.destination, self.entity, reveal=False)
        return self._log_masker.key(outcome.key), mask_emails(outcome.error)

    def _apply(self, ledger: Ledger, outcomes: list[Outcome], counts: dict) -> None:
        ledger.apply(outcomes)
        ledger.renew_lease()
        for outcome in outcomes:
            if outcome.status == DELIVERED:
                counts["sent"] += 1
            elif outcome.status == DELETED:
                counts["deleted"] += 1
            elif outcome.status == FAILED:
                counts["failed"] += 1
                if counts["failed"] <= FAILURES_LOGGED:
                    key, error = self._masked(outcome)
                    log.warning("%s.%s record %s failed: %s", self.destination, self.entity, key, error)
                elif counts["failed"] == FAILURES_LOGGED + 1:
                    log.warning(
                        "%s.%s: more than %d records failed; the others are counted in the report, not "
                        "logged one by one. The ledger keeps every message: python -m reverse_etl.cli "
                        "failed %s %s, or the Reverse ETL page",
                        self.destination,
                        self.entity,
                        FAILURES_LOGGED,
                        self.destination,
                        self.entity,
                    )
