"""Validate: run the sync's Great Expectations suite chunk by chunk and quarantine the rows that fail.

Each failing row goes to ``quarantine.jsonl`` with every expectation it broke and the offending value,
and into the ledger as ``rejected`` with the rules only (the state store keeps no copy of bad personal data;
the values stay in the quarantine file); the positions of the rejected rows go to ``rejected_rows.parquet``,
and the load reads the staged extract without them (``staging.iter_valid``). Two rows with the same key: the
newer (``_updated_at``, then file order) goes on, the older is quarantined as superseded. If the rejected
share passes the threshold the task fails, after the quarantine is written, so nothing is lost and a
broken upstream is noticed. Deleted rows only need a key: they skip the payload checks.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import sys
import time
import types
from collections import Counter
from pathlib import Path
from typing import Any

from reverse_etl import settings
from reverse_etl.errors import ConfigError, RejectedShareExceeded
from reverse_etl.extract import sql_path

log = logging.getLogger(__name__)

KEY_NOT_NULL = {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "_key"}}


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


def _expectation_problem(exc: Exception) -> str:
    """GX's complaint about one expectation, on one line."""
    if isinstance(exc, KeyError):
        return f"it has no {exc}"
    if type(exc).__name__ == "ExpectationNotFoundError":
        return "unknown expectation type (see the Great Expectations gallery for the names)"
    errors = getattr(exc, "errors", None)
    if callable(errors):  # pydantic: one entry per bad kwarg
        try:
            return "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errors())
        except (KeyError, TypeError):
            pass
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


# Imported by ``import great_expectations`` for a few expectations only (KL divergence, KS tests) and used
# inside their functions: about 1 s of every validate task's start (scipy.stats 0.6-0.9 s, altair 0.3 s).
DEFERRED_GX_IMPORTS = ("scipy.stats", "altair")


class _DeferredModule(types.ModuleType):
    """Stands in ``sys.modules`` for a module until something reads one of its attributes, then imports
    it and hands every attribute over: code that never touches it never pays its import."""

    def __init__(self, name: str):
        super().__init__(name)
        self.__spec__ = None  # read by every `import name`: found here without importing the module

    def __getattr__(self, attr: str) -> Any:
        real = self.__dict__.get("_real")
        if real is None:
            if sys.modules.get(self.__name__) is self:
                del sys.modules[self.__name__]
            real = self.__dict__["_real"] = importlib.import_module(self.__name__)
        return getattr(real, attr)


def defer_gx_imports() -> None:
    """Before the first ``import great_expectations``: leave its rarely used heavy imports for later."""
    if "great_expectations" in sys.modules:
        return
    for name in DEFERRED_GX_IMPORTS:
        sys.modules.setdefault(name, _DeferredModule(name))


def _named_columns(kwargs: dict) -> tuple[str, ...]:
    """The columns one expectation reads: ``column``, ``column_list`` or ``column_A`` / ``column_B``."""
    named = [kwargs["column"]] if "column" in kwargs else list(kwargs.get("column_list") or [])
    named += [kwargs[k] for k in ("column_A", "column_B") if k in kwargs]
    return tuple(dict.fromkeys(named))


# Great Expectations fingerprints every pandas batch it builds (``hash_pandas_dataframe``, twice per
# validation: the batch, then the validator's own copy of it) unless the frame passes this size. The
# fingerprint is a batch marker nobody here reads, and hashing was a third of the time GX spent per chunk.
GX_HASH_THRESHOLD = 0

# COMPLETE lists every failing row (``unexpected_index_list``) and its value; the query string that repeats
# the index list (``df.filter(items=[...])``) costs one more pass over the frame per expectation, unused.
RESULT_FORMAT = {"result_format": "COMPLETE", "return_unexpected_index_query": False}


class SuiteRunner:
    """A Great Expectations suite bound to an ephemeral context, reused for every chunk.

    The suite runs as one GX sub-suite per set of columns its expectations read, each on a frame of just
    those columns: GX's pandas engine copies the whole frame for every metric of a column expectation
    (the non-null filter, then the failing rows), so a narrow frame makes that copy one column wide. The
    expectations, their results and the order of a row's failures are the suite's own.
    """

    def __init__(self, name: str, expectations: list[dict], source: str | None = None):
        os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
        defer_gx_imports()
        import great_expectations as gx
        from great_expectations.data_context.types.base import ProgressBarsConfig
        from great_expectations.execution_engine import pandas_execution_engine
        from great_expectations.expectations.expectation_configuration import ExpectationConfiguration

        pandas_execution_engine.HASH_THRESHOLD = GX_HASH_THRESHOLD
        context = gx.get_context(mode="ephemeral")
        context.variables.progress_bars = ProgressBarsConfig(globally=False)
        asset = context.data_sources.add_pandas("retl").add_dataframe_asset("chunk")
        self._batch_definition = asset.add_batch_definition_whole_dataframe("whole")
        self.source = source or f"suite '{name}'"
        configs = []
        for number, entry in enumerate([KEY_NOT_NULL, *expectations]):
            try:
                config = ExpectationConfiguration(
                    type=entry["type"], kwargs=entry.get("kwargs", {}), meta=entry.get("meta") or {}
                )
                config.to_domain_obj()
                configs.append(config)
            except Exception as exc:
                entry = entry if isinstance(entry, dict) else {}
                what = entry.get("type")
                kwargs = entry.get("kwargs")
                column = kwargs.get("column") if isinstance(kwargs, dict) else None
                raise ConfigError(
                    f"Expectation suite {self.source}: expectation #{number} {what!r}"
                    f"{f' on column {column!r}' if column else ''} is malformed: "
                    f"{_expectation_problem(exc)}. Fix the file."
                ) from exc
        self.suite = gx.ExpectationSuite(name=name, expectations=[c.to_domain_obj() for c in configs])
        self.name = name
        by_columns: dict[tuple[str, ...], list[int]] = {}
        for ordinal, config in enumerate(configs):
            by_columns.setdefault(_named_columns(config.kwargs), []).append(ordinal)
        # (columns, suite ordinals, GX sub-suite); no columns (a table expectation) means the whole frame.
        self.groups = [
            (
                columns,
                ordinals,
                gx.ExpectationSuite(
                    name=f"{name} [{', '.join(columns) or 'table'}]",
                    expectations=[configs[i].to_domain_obj() for i in ordinals],
                ),
            )
            for columns, ordinals in by_columns.items()
        ]

    @property
    def columns(self) -> list[str]:
        """Every column an expectation reads (``_key`` included)."""
        return list(dict.fromkeys(c for columns, _, _ in self.groups for c in columns))

    def check_columns(self, columns: list[str], sql_file: object) -> None:
        """Every column an expectation names must be selected by the SQL mapping: say which is not."""
        for expectation in self.suite.expectations:
            missing = [c for c in _named_columns(expectation.configuration.kwargs) if c not in columns]
            if missing:
                raise ConfigError(
                    f"Expectation suite {self.source}: {expectation.expectation_type} names column "
                    f"{missing[0]!r}, which {sql_file} does not select (it selects {', '.join(columns)}). "
                    "Fix the suite or the mapping."
                )

    def failures(self, frame, parameters: dict | None = None) -> dict[int, list[dict]]:
        """Row index -> failed expectations (type, column, value) for one pandas frame. ``parameters`` fill
        the suite's ``{"$PARAMETER": name}`` values (see ``suite_parameters``)."""
        found: list[tuple[int, int, dict]] = []
        for group in self.groups:
            columns = group[0]
            part = frame[[c for c in columns if c in frame.columns]] if columns else frame
            found.extend(self._run(group, part, parameters))
        return _by_row(found)

    def file_failures(
        self, url: str, parameters: dict | None, block_rows: int, table_rows: int
    ) -> dict[int, list[dict]]:
        """Row position -> failed expectations for a staged Parquet file, deleted rows skipped.

        One column group at a time, reading only its columns in blocks of ``block_rows``: memory holds one
        block of a few columns, and GX's fixed cost per expectation and call (it rebuilds its metric graph,
        about 7 ms) is paid per block, not per chunk. Expectations on no column see every column, in
        blocks of ``table_rows``.
        """
        from reverse_etl.staging import iter_parquet

        found: list[tuple[int, int, dict]] = []
        for group in self.groups:
            columns = group[0]
            read = list(dict.fromkeys([*columns, "_deleted"])) if columns else None
            offset = 0
            for batch in iter_parquet(url, block_rows if columns else table_rows, columns=read):
                live = _live_positions(batch)
                if len(live):
                    table = batch if len(live) == batch.num_rows else batch.take(live)
                    part = (table.select(list(columns)) if columns else table).to_pandas()
                    part.index = live + offset
                    found.extend(self._run(group, part, parameters))
                offset += batch.num_rows
        return _by_row(found)

    def _run(self, group: tuple, part, parameters: dict | None) -> list[tuple[int, int, dict]]:
        """One GX sub-suite on one pandas frame: ``(row, suite ordinal, failure)`` per broken rule."""
        _, ordinals, suite = group
        batch = self._batch_definition.get_batch(batch_parameters={"dataframe": part})
        result = batch.validate(suite, result_format=RESULT_FORMAT, expectation_parameters=parameters or {})
        for item in result.results:
            self._raise_if_broken(item)
        if len(result.results) != len(ordinals):
            raise RuntimeError(f"GX returned {len(result.results)} results for {len(ordinals)} expectations")
        found = []
        for ordinal, item in zip(ordinals, result.results, strict=True):
            if item.success:
                continue
            config = item.expectation_config
            indexes = item.result["unexpected_index_list"]
            column = config.kwargs.get("column") or config.kwargs.get("column_list")
            # One lookup per expectation: a row-by-row ``frame.at`` dominated when many rows fail.
            values = part[column].loc[indexes].tolist() if isinstance(column, str) else [None] * len(indexes)
            rule = (config.meta or {}).get("rule")
            found.extend(
                (
                    int(row),
                    ordinal,
                    {"expectation": config.type, "column": column, "value": _jsonable(value), "rule": rule},
                )
                for row, value in zip(indexes, values, strict=True)
            )
        return found

    def _raise_if_broken(self, item) -> None:
        """A result that could not run, or that cannot name rows, is a suite problem: say which."""
        config = item.expectation_config
        message = _raised(item.exception_info)
        if message:
            raise ConfigError(
                f"Expectation suite {self.source}: {config.type}({config.kwargs}) could not run: {message} "
                "(a $PARAMETER compared with a column of another type? DATE columns take "
                "window_end_date, TIMESTAMP columns window_end)"
                if "compare" in message
                else f"Expectation suite {self.source}: {config.type}({config.kwargs}) could not run: {message}"
            )
        if not item.success and item.result.get("unexpected_index_list") is None:
            raise ConfigError(
                f"Expectation suite {self.source}: {config.type}({config.kwargs}) failed on the whole chunk; only "
                "row-level (column map) expectations can quarantine rows (a date rule whose bounds are "
                "date-time text on a DATE column, or date text on a TIMESTAMP column, also ends here)."
            )


def _by_row(found: list[tuple[int, int, dict]]) -> dict[int, list[dict]]:
    """Row -> its failures in the suite's order, whichever sub-suite found them."""
    failed: dict[int, list[dict]] = {}
    for row, _, failure in sorted(found, key=lambda f: (f[0], f[1])):
        failed.setdefault(row, []).append(failure)
    return failed


def _live_positions(batch):
    """Positions (in the batch) of the rows that are not soft-deleted: deleted rows skip the suite."""
    import numpy as np

    deleted = batch.column("_deleted").fill_null(False).to_numpy(zero_copy_only=False).astype(bool)
    return np.flatnonzero(~deleted)


def _raised(info: dict | None) -> str | None:
    """The exception message of a GX result, if it raised: GX nests it per metric when a metric fails."""
    if not info:
        return None
    if info.get("raised_exception"):
        return str(info.get("exception_message"))
    for value in info.values():
        if isinstance(value, dict) and value.get("raised_exception"):
            return str(value.get("exception_message"))
    return None


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


def _jsonable(value: Any) -> Any:
    if value is None:
        return None
    if type(value) in (
        str,
        int,
        bool,
    ):  # most failing values: skip pandas' isna (a third of a second per 20k)
        return value
    try:
        import pandas as pd

        if pd.isna(value):
            return None
    except (TypeError, ValueError):
        pass
    if hasattr(value, "item"):
        return value.item()
    return value if isinstance(value, int | float | str | bool) else str(value)


def rule_label(failure: dict) -> str:
    """What a broken rule is called on the page and in the ledger: the suite's words and the column."""
    return f"{failure.get('rule') or failure['expectation']} on {failure['column']}"


def describe(failures: list[dict], *, values: bool = True) -> str:
    """One readable line: every rule the row broke, with the value (quarantine) or without it (ledger)."""
    if not values:
        return "; ".join(dict.fromkeys(rule_label(f) for f in failures))
    return "; ".join(
        f"{rule_label(f)}: {json.dumps(f['value'], ensure_ascii=False, default=str)[:120]}" for f in failures
    )


def personal_fields(destination: str, entity: str) -> frozenset[str] | None:
    """The columns the suite's ``meta.personal_fields`` names (``_key`` when the key is personal, e.g. an
    email); None when the suite does not say, and then every value counts as personal."""
    declared = load_suite_config(destination, entity).get("meta", {}).get("personal_fields")
    return frozenset(declared) if isinstance(declared, list) else None


def superseded_rows(url: str, key: str = "_key", updated: str = "_updated_at") -> dict[int, str]:
    """Positions of rows whose key appears again in a newer row; DuckDB does it out of core."""
    import duckdb

    from reverse_etl.staging import as_path

    path = as_path(url)
    con = duckdb.connect()
    try:
        con.execute("SET memory_limit='512MB'")
        con.execute("SET preserve_insertion_order=false")
        if path.protocol not in ("", "file", "local"):
            con.register_filesystem(path.fs)
        source = str(path) if path.protocol not in ("", "file", "local") else path.path
        names = {r[0] for r in con.execute("DESCRIBE SELECT * FROM read_parquet(?)", [source]).fetchall()}
        order = (
            f"{updated} DESC NULLS LAST, file_row_number DESC" if updated in names else "file_row_number DESC"
        )
        rows = con.execute(
            f"""
            WITH t AS (SELECT {key} AS k, * FROM read_parquet(?, file_row_number = true) WHERE {key} IS NOT NULL),
                 dup AS (SELECT k FROM t GROUP BY k HAVING count(*) > 1)
            SELECT file_row_number, k FROM t SEMI JOIN dup USING (k)
            QUALIFY row_number() OVER (PARTITION BY k ORDER BY {order}) > 1
            """,
            [source],
        ).fetchall()
    finally:
        con.close()
    return {int(pos): str(k) for pos, k in rows}


# Great Expectations runs over blocks of this many chunks (``RETL_CHUNK_ROWS``), one column group at a time:
# its cost per call is about 7 ms per expectation whatever the rows, and a block of one or two columns is
# small (500,000 rows of a text column: about 10 MB in Arrow, a few times that while GX filters it).
BLOCK_CHUNKS = 10


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
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

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
        names = pq.ParquetFile(handle).schema_arrow.names
    runner.check_columns(names, settings.shown(sql_path(destination, entity)))
    parameters = suite_parameters(extract_manifest.get("window"))
    superseded = superseded_rows(extract_manifest["path"])
    # The suite's verdicts first (only the failing rows are kept), then one pass in chunks over whole rows.
    failed = runner.file_failures(extract_manifest["path"], parameters, chunk_rows * BLOCK_CHUNKS, chunk_rows)
    failed_rows = sorted(failed)
    next_failed = 0
    folder = sync_dir(dag_id, run_id, entity)
    ledger = Ledger(destination, entity, run_id)
    offset = 0
    rejected: list[int] = []
    rejected_deletes = 0
    broken: Counter[tuple[str, str]] = Counter()  # (rule, column) -> rows that broke it
    with JsonLinesSink(folder / "quarantine.jsonl") as quarantine:
        for batch in iter_parquet(extract_manifest["path"], chunk_rows):
            size = batch.num_rows
            failures = {}
            while next_failed < len(failed_rows) and failed_rows[next_failed] < offset + size:
                failures[failed_rows[next_failed]] = failed.pop(failed_rows[next_failed])
                next_failed += 1
            for position, key in superseded.items():
                if offset <= position < offset + size:
                    failures.setdefault(position, []).append(
                        {
                            "expectation": "unique_key",
                            "column": "_key",
                            "value": key,
                            "rule": "duplicate key: superseded by a newer row with the same key",
                        }
                    )
            for position in np.flatnonzero(pc.is_null(batch.column("_key")).to_numpy(zero_copy_only=False)):
                failures.setdefault(
                    int(position) + offset,
                    [{"expectation": KEY_NOT_NULL["type"], "column": "_key", "value": None, "rule": None}],
                )
            rejected_for_ledger = []
            positions = sorted(failures)
            # One columnar take for the block's failed rows: row-by-row pandas access dominated at scale.
            rows = batch.take(pa.array([p - offset for p in positions])).to_pylist() if positions else []
            for position, row in zip(positions, rows, strict=True):
                reasons = failures[position]
                quarantine.write(
                    {"record_key": row["_key"], "reason": describe(reasons), "failures": reasons, "row": row}
                )
                broken.update({(rule_label(f), f["column"]) for f in reasons})
                rejected_deletes += bool(row["_deleted"])
                if row["_key"] is not None and position not in superseded:
                    rejected_for_ledger.append((str(row["_key"]), describe(reasons, values=False)))
            if rejected_for_ledger and record_rejections:
                ledger.mark_rejected(rejected_for_ledger)
            rejected.extend(positions)
            offset += size
            if offset % (chunk_rows * 10) < size:
                log.info("%s.%s: validated %d rows so far", destination, entity, offset)
        manifest["quarantine_path"] = str(quarantine.path)
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
