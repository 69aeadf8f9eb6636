"""Validate: run the sync's Great Expectations suite over the staged extract and quarantine the rows that fail.

Each failing row goes to ``quarantine.jsonl`` with every expectation it broke and the offending value,
and into the ledger as ``rejected`` with the rules only (the state store keeps no copy of bad personal data;
the values stay in the quarantine file); the positions of the rejected rows go to ``rejected_rows.parquet``,
and the load reads the staged extract without them (``staging.iter_valid``). Two rows with the same key: the
newer (``_updated_at``, then file order) goes on, the older is quarantined as superseded. If the rejected
share passes the threshold the task fails, after the quarantine is written, so nothing is lost and a
broken upstream is noticed. Deleted rows only need a key: they skip the payload checks.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from pathlib import Path

from reverse_etl import gc_tuning, settings
from reverse_etl.errors import ConfigError, RejectedShareExceeded
from reverse_etl.extract import sql_path

# SuiteRunner and defer_gx_imports are imported from here too (tests, benchmarks): the runner lives in gx_suite.
from reverse_etl.gx_suite import SuiteRunner, defer_gx_imports  # noqa: F401
from reverse_etl.quarantine_lines import Rejected, complete, ledger_reason, line, rule_of

log = logging.getLogger(__name__)


def suite_path(destination: str, entity: str) -> Path:
    return settings.include_dir() / "expectations" / destination / f"{entity}.json"


def load_suite_config(destination: str, entity: str) -> dict:
    path = suite_path(destination, entity)
    shown = settings.shown(path)
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"No expectation suite for {destination}.{entity}: expected {shown}.") from exc
    except json.JSONDecodeError as exc:
        raise ConfigError(f"Expectation suite {shown} is not valid JSON: {exc}. Fix the file.") from exc
    if not isinstance(config, dict) or not isinstance(config.get("expectations"), list):
        raise ConfigError(f"Expectation suite {shown} needs an 'expectations' list.")
    return config


def suite_parameters(window: dict | None) -> dict[str, str]:
    """Values a suite can name as ``{"$PARAMETER": ...}``, from the run's window (UTC).

    GX compares a date column only with date text and a timestamp column only with date-time text, so both
    forms are given: ``window_start`` / ``window_end`` (``2026-11-30T00:00:00``) for timestamps, and
    ``window_start_date`` / ``window_end_date`` (``2026-11-30``) for dates. Rules such as "an order is not
    dated after the window" or "a birthdate is not in the future" use them, so a backfill is judged by its
    own window, not by today.
    """
    import datetime as dt

    values: dict[str, str] = {}
    for name in ("start", "end"):
        raw = (window or {}).get(name)
        if not raw:
            continue
        moment = dt.datetime.fromisoformat(raw)
        if moment.tzinfo:
            moment = moment.astimezone(dt.UTC).replace(tzinfo=None)
        values[f"window_{name}"] = moment.strftime("%Y-%m-%dT%H:%M:%S")
        values[f"window_{name}_date"] = moment.strftime("%Y-%m-%d")
    return values


def personal_fields(destination: str, entity: str) -> frozenset[str] | None:
    """The columns the suite's ``meta.personal_fields`` names (``_key`` when the key is personal, e.g. an
    email); None when the suite does not say, and then every value counts as personal."""
    declared = load_suite_config(destination, entity).get("meta", {}).get("personal_fields")
    return frozenset(declared) if isinstance(declared, list) else None


def superseded_sql(
    source: str, names: set[str] | list[str], key: str = "_key", updated: str = "_updated_at"
) -> str:
    """The query of rows whose key appears again in a newer row (``file_row_number``, ``k``) of ``source``,
    a ``read_parquet(..., file_row_number = true)``; ``names``: the file's columns.

    Keys are grouped by their 64-bit hash, not their text: a million keys take a few MB instead of about
    100 MB. A hash shared by two keys only makes both candidates; the ranking is by the key itself."""
    order = f"{updated} DESC NULLS LAST, file_row_number DESC" if updated in names else "file_row_number DESC"
    return f"""
        WITH dup AS (SELECT hash({key}) AS h FROM {source} WHERE {key} IS NOT NULL GROUP BY h HAVING count(*) > 1)
        SELECT file_row_number, {key} AS k FROM {source}
        WHERE {key} IS NOT NULL AND hash({key}) IN (SELECT h FROM dup)
        QUALIFY row_number() OVER (PARTITION BY {key} ORDER BY {order}) > 1
    """


def superseded_rows(url: str, names: set[str] | list[str]) -> dict[int, str]:
    """Positions of rows whose key appears again in a newer row; DuckDB does it out of core."""
    import duckdb

    from reverse_etl.staging import duckdb_source

    con = duckdb.connect()
    try:
        con.execute("SET memory_limit='512MB'")
        con.execute("SET preserve_insertion_order=false")
        source = duckdb_source(con, url)
        rows = con.execute(
            superseded_sql("read_parquet($source, file_row_number = true)", names), {"source": source}
        ).fetchall()
    finally:
        con.close()
    return {int(pos): str(k) for pos, k in rows}


# Quarantined rows handled at once (their lines, ledger entries). A line holds the whole row, about 1-3 KB;
# Python holds a batch's lines a few times over (Arrow, str, the joined write): at 1M customers (25,000
# rejected) batches of 5,000 rows put validate's peak 50-70 MB above the extract's, 1,000 rows 0-40 MB.
REJECTED_BATCH_ROWS = 1000


def _pandas_rejections(runner, url: str, parameters: dict, chunk_rows: int, names: list[str]):
    """Lists of ``Rejected`` as ``SuiteRunner.iter_sql_rejections`` gives them, for files GX's SQL engine
    does not read (object storage, pandas row conditions): the suite in GX's pandas engine block by
    block, whole rows read back chunk by chunk, their lines written here."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    from reverse_etl.staging import iter_parquet

    superseded = superseded_rows(url, names)
    blocks = runner.iter_failures(url, parameters, chunk_rows * BLOCK_CHUNKS)
    pending: dict[int, list[dict]] = {}
    judged = offset = 0  # rows the suite has been run on so far; rows read back so far
    for batch in iter_parquet(url, chunk_rows):
        size = batch.num_rows
        while judged < offset + size:
            judged, block = next(blocks)
            pending.update(block)
        failures = {}
        for position in pending:  # ascending: blocks come in order, rows sorted within each
            if position >= offset + size:
                break
            failures[position] = pending[position]
        for position in failures:
            del pending[position]
        keys = {p: k for p, k in superseded.items() if offset <= p < offset + size}
        for position in keys:
            failures.setdefault(position, [])
        for position in np.flatnonzero(pc.is_null(batch.column("_key")).to_numpy(zero_copy_only=False)):
            failures.setdefault(int(position) + offset, [])
        positions = sorted(failures)
        # One columnar take for the chunk's failed rows: row-by-row pandas access dominated at scale.
        rows = batch.take(pa.array([p - offset for p in positions])).to_pylist() if positions else []
        out = []
        for p, row in zip(positions, rows, strict=True):
            reasons = complete(failures[p], keys.get(p))
            rules = tuple(rule_of(f) for f in reasons)
            out.append(
                Rejected(
                    p, row["_key"], bool(row["_deleted"]), p in keys, rules, line(row["_key"], reasons, row)
                )
            )
        yield out
        offset += size


# Great Expectations runs over blocks of this many chunks (``RETL_CHUNK_ROWS``), one column group at a time:
# its cost per call is about 7 ms per expectation whatever the rows. 200,000 rows take 15% less than 100,000
# and as much as 500,000 (1M customers: 3.0, 3.5, 3.0 s CPU); memory holds one block's failing rows.
BLOCK_CHUNKS = 4


def validate(
    *,
    extract_manifest: dict,
    dag_id: str,
    run_id: str,
    max_rejected_share: float,
    chunk_rows: int | None = None,
    record_rejections: bool = True,
) -> dict:
    """Split the extracted rows into valid and quarantined; return the manifest for the load.

    The valid rows are the staged extract minus the rejected rows: ``valid_path`` is the extract and
    ``rejected_rows_path`` lists the positions to skip; read them with ``staging.iter_valid(manifest)``.
    ``record_rejections=False`` (dry runs) writes the quarantine file but leaves the ledger untouched.
    """
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from reverse_etl import gx_duckdb
    from reverse_etl.ledger import Ledger
    from reverse_etl.staging import JsonLinesSink, as_path, iter_parquet, sync_dir, write_positions

    started = time.monotonic()
    destination, entity = extract_manifest["destination"], extract_manifest["entity"]
    manifest = {
        **extract_manifest,
        "valid": 0,
        "rejected": 0,
        "valid_path": None,
        "rejected_rows_path": None,
        "quarantine_path": None,
        "quarantine_rules": [],
    }
    if not extract_manifest.get("path") or not extract_manifest.get("rows"):
        log.info("%s.%s: nothing extracted, nothing to validate", destination, entity)
        return manifest
    chunk_rows = chunk_rows or settings.chunk_rows()
    config = load_suite_config(destination, entity)
    runner = SuiteRunner(
        config.get("name") or f"{destination}.{entity}",
        config["expectations"],
        settings.shown(suite_path(destination, entity)),
    )
    with as_path(extract_manifest["path"]).open("rb") as handle:
        staged = pq.ParquetFile(handle)
        names, total_rows = staged.schema_arrow.names, staged.metadata.num_rows
    runner.check_columns(names, settings.shown(sql_path(destination, entity)))
    parameters = suite_parameters(extract_manifest.get("window"))
    url = extract_manifest["path"]
    if gx_duckdb.usable(url, runner.suite.expectations):
        rejections = runner.iter_sql_rejections(
            url, parameters, REJECTED_BATCH_ROWS, lambda source: superseded_sql(source, names)
        )
    else:
        rejections = _pandas_rejections(runner, url, parameters, chunk_rows, names)
    folder = sync_dir(dag_id, run_id, entity)
    ledger = Ledger(destination, entity, run_id)
    rejected: list[int] = []
    rejected_deletes = 0
    broken: Counter[tuple[str, str]] = Counter()  # (rule, column) -> rows that broke it
    reasons_of: dict[tuple, str] = {}  # the ledger's reason per set of rules broken
    # The collector every 100,000 allocations instead of 700 (``gc_tuning``) for GX's pandas engine, whose
    # quarantined rows make many short-lived objects (measured when the SQL path made them too: validate's
    # CPU at 1M rows, 5 interleaved pairs, 4.57 s against 4.75 s). DuckDB's ready lines make few.
    with gc_tuning.fewer_passes(), JsonLinesSink(folder / "quarantine.jsonl") as quarantine:
        for batch in rejections:
            quarantine.write_lines([r.line for r in batch])
            rejected_for_ledger = []
            for found in batch:
                broken.update(set(found.rules))
                rejected_deletes += found.deleted
                if found.key is not None and not found.superseded:
                    reason = reasons_of.get(found.rules)
                    if reason is None:
                        reason = reasons_of[found.rules] = ledger_reason(label for label, _ in found.rules)
                    rejected_for_ledger.append((str(found.key), reason))
                rejected.append(found.position)
            if rejected_for_ledger and record_rejections:
                ledger.mark_rejected(rejected_for_ledger)
        manifest["quarantine_path"] = str(quarantine.path)
    offset = total_rows
    manifest["quarantine_rules"] = [
        {"rule": rule, "column": column, "rows": rows} for (rule, column), rows in broken.most_common()
    ]
    manifest["rejected"] = len(rejected)
    manifest["valid"] = offset - len(rejected)
    # No second copy of the valid rows: the load reads the staged extract and skips the rejected positions.
    manifest["valid_path"] = extract_manifest["path"]
    if rejected:
        manifest["rejected_rows_path"] = str(write_positions(folder / "rejected_rows.parquet", rejected))
    deletes = extract_manifest.get("deletes")
    if deletes is None:
        deletes = sum(
            int(pc.sum(b.column("_deleted")).as_py() or 0)
            for b in iter_parquet(extract_manifest["path"], chunk_rows, columns=["_deleted"])
        )
    manifest["valid_deletes"] = deletes - rejected_deletes
    manifest["validate_seconds"] = round(time.monotonic() - started, 3)
    share = manifest["rejected"] / max(1, extract_manifest["rows"])
    log.info(
        "%s.%s: %d valid, %d rejected (%.2f%%); quarantine: %s",
        destination,
        entity,
        manifest["valid"],
        manifest["rejected"],
        share * 100,
        manifest["quarantine_path"],
    )
    if share > max_rejected_share:
        raise RejectedShareExceeded(
            manifest,
            f"{destination}.{entity}: {manifest['rejected']} of {extract_manifest['rows']} rows ({share:.1%}) failed "
            f"the data-quality checks, above the {max_rejected_share:.1%} threshold. They are quarantined in "
            f"{manifest['quarantine_path']}; fix the upstream, or raise the DAG param 'max_rejected_share'.",
        )
    return manifest
