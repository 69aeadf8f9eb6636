"""The load's plan: for each valid row, skip it (unchanged, delivered once, refused as it is), or plan an
upsert or a delete in the ledger as ``pending``, before anything is sent.

The staged rows are read chunk by chunk; the ledger writes one chunk's plan on a thread while the next chunk
is read, its payloads built and its keys looked up.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from reverse_etl import gc_tuning, settings
from reverse_etl.ledger import DELETE, DELIVERED, FAILED, PENDING, UPSERT, Ledger, Planned

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PlanRules:
    """What a load decides by: its operator's class settings and the run's params."""

    send_once: bool  # facts (events): once delivered, never sent again
    supports_delete: bool
    held: set[str]  # keys a dry run's reconcile found the vendor holding: not previewed
    full_resync: bool  # send even what the ledger says is delivered unchanged or refused as it is
    serialised: Callable[[dict], tuple[dict, str, str]]  # row -> (payload, its text, its hash)


def plan(ledger: Ledger, manifest: dict, counts: dict, rules: PlanRules, *, dry_run: bool) -> None:
    """Plan every valid row of ``manifest`` (``counts`` updated); a dry run writes the payloads it would
    send to ``dry_run_payloads.jsonl`` instead of the ledger."""
    with gc_tuning.paused():  # a quarter of a million-record load's CPU was the collector's (gc_tuning)
        _plan_chunks(ledger, manifest, counts, rules, dry_run=dry_run)


def _plan_chunks(ledger: Ledger, manifest: dict, counts: dict, rules: PlanRules, *, dry_run: bool) -> None:
    from reverse_etl.staging import JsonLinesSink, as_path, iter_valid

    if not manifest.get("valid_path"):
        return
    preview = (
        JsonLinesSink(as_path(manifest["valid_path"]).parent / "dry_run_payloads.jsonl") if dry_run else None
    )
    # The store writes chunk N's plan on a thread while this one reads chunk N+1, builds its payloads and
    # looks its keys up: one statement per chunk on either store (``Ledger.plan``), which runs without the
    # GIL (a statement per row took the GIL back after each row and ran in turn with this thread). A key of
    # chunk N+1 that chunk N planned reads as chunk N's plan left it (pending, with its hash), whether or
    # not the lookup saw that write: a key seen twice is decided as one chunk at a time decided it.
    writer = None if dry_run else ThreadPoolExecutor(1, thread_name_prefix="ledger-plan")
    written = None
    writing: dict[str, Planned] = {}  # the chunk being written, by key
    try:
        for batch in iter_valid(manifest, settings.chunk_rows()):
            rows = batch.to_pylist()
            built = (
                None
                if rules.send_once  # built after the lookup: the delivered ones are never built
                else [
                    None if row.get("_deleted") or row["_key"] in rules.held else rules.serialised(row)
                    for row in rows
                ]
            )
            known = ledger.lookup([r["_key"] for r in rows])
            if writing:
                for row in rows:
                    if (mine := writing.get(row["_key"])) is not None:
                        state = {**known.get(mine.key, {}), "status": PENDING}
                        known[mine.key] = {**state, "payload_hash": mine.payload_hash}
            planned: list[Planned] = []
            for i, row in enumerate(rows):
                key = row["_key"]
                state = known.get(key, {})
                if row.get("_deleted"):
                    if not rules.supports_delete or not state.get("delivered_hash"):
                        counts["deletes_skipped"] += 1  # never sent by us (or already deleted): leave it
                        continue
                    counts["to_delete"] += 1
                    planned.append(Planned(key, DELETE, None, None))
                    continue
                if rules.send_once and state.get("status") == DELIVERED:
                    counts["unchanged_skipped"] += 1
                    continue
                if key in rules.held:  # reconcile in a dry run: the vendor holds it
                    counts["unchanged_skipped"] += 1
                    continue
                payload, text, digest = built[i] if built else rules.serialised(row)
                if (
                    not rules.full_resync
                    and state.get("status") == DELIVERED
                    and state.get("delivered_hash") == digest
                ):
                    counts["unchanged_skipped"] += 1
                    continue
                if (
                    not rules.full_resync
                    and state.get("status") == FAILED
                    and state.get("payload_hash") == digest
                ):
                    # The vendor refused exactly this payload: resent once it changes, or with full_resync.
                    counts["previously_failed"] += 1
                    continue
                counts["to_send"] += 1
                planned.append(Planned(key, UPSERT, digest, text))
                if preview is not None:
                    preview.write({"key": key, "payload": payload})
            if written is not None:
                written.result()
                written, writing = None, {}
            if planned and writer is not None:
                written = writer.submit(ledger.plan, planned)
                writing = {p.key: p for p in planned}
            gc_tuning.collect_young()
        if written is not None:
            written.result()
    finally:
        if writer is not None:
            writer.shutdown(wait=True)  # a failing chunk still lets the previous chunk's plan finish
        if preview is not None:
            preview.close()
            counts["dry_run_payloads"] = str(preview.path)
    log.info(
        "%s.%s plan: %d to send, %d to delete, %d unchanged",
        ledger.destination,
        ledger.entity,
        counts["to_send"],
        counts["to_delete"],
        counts["unchanged_skipped"],
    )
