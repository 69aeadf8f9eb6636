"""The Great Expectations side of validate: a suite run as GX sub-suites, one per column group.

``SuiteRunner`` turns a suite file's expectations into GX expectations (clear errors for malformed ones),
runs them on a pandas frame or over a staged Parquet file, and returns every failing row with each rule
it broke and the offending value.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
import types
from collections.abc import Iterator
from typing import Any

from reverse_etl.errors import ConfigError

KEY_NOT_NULL = {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "_key"}}


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


GX_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
# GX's package logger, and a module of it that sets its own level to INFO when imported (called again after)
GX_LOGGERS = ("great_expectations", "great_expectations.data_context.types.base")


def quiet_gx_logs() -> None:
    """Great Expectations' own loggers at ``RETL_GX_LOG_LEVEL`` (WARNING by default). At INFO its import
    and each validate write a few dozen lines into every validate task's log, among them a DuckDB
    "Binder Error" for every data source: GX tries PostgreSQL's ``pg_collation`` query first, then falls
    back by itself. Noise an operator would chase; validate logs its own summary."""
    level = os.environ.get("RETL_GX_LOG_LEVEL", "WARNING").strip().upper()
    if level not in GX_LOG_LEVELS:
        raise ConfigError(
            f"RETL_GX_LOG_LEVEL={level!r} is not a log level: set it to one of {', '.join(GX_LOG_LEVELS)}"
        )
    for name in GX_LOGGERS:
        logging.getLogger(name).setLevel(level)


def defer_gx_imports() -> None:
    """Before the first ``import great_expectations``: its loggers quieted (``quiet_gx_logs``), and its
    rarely used heavy imports left for later."""
    if "great_expectations" not in sys.modules:
        for name in DEFERRED_GX_IMPORTS:
            sys.modules.setdefault(name, _DeferredModule(name))
    quiet_gx_logs()


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

        quiet_gx_logs()  # again: importing GX set one of its loggers back to INFO
        pandas_execution_engine.HASH_THRESHOLD = GX_HASH_THRESHOLD
        context = gx.get_context(mode="ephemeral")
        # An ephemeral context keeps nothing, yet writes its whole config as YAML to an in-memory store on
        # every data source change (7 times per validate over DuckDB: 0.05 s of its 0.35 s fixed cost).
        context._save_project_config = _keep_nothing
        context.variables.progress_bars = ProgressBarsConfig(globally=False)
        asset = context.data_sources.add_pandas("retl").add_dataframe_asset("chunk")
        self._batch_definition = asset.add_batch_definition_whole_dataframe("whole")
        self._context = context
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
        for ordinal, expectation in enumerate(self.suite.expectations):
            # GX orders a run's results its own way; the id names the suite entry a result is for.
            expectation.id = f"00000000-0000-0000-0000-{ordinal:012d}"
        self.name = name
        by_columns: dict[tuple[str, ...], list[int]] = {}
        for ordinal, config in enumerate(configs):
            # A row_condition reads columns of its own: such an expectation sees the whole frame.
            reads = () if config.kwargs.get("row_condition") else _named_columns(config.kwargs)
            by_columns.setdefault(reads, []).append(ordinal)
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

    def iter_failures(self, url: str, parameters: dict | None, block_rows: int) -> Iterator[tuple[int, dict]]:
        """``(end, failures)`` for a staged Parquet file, in order: row position -> failed expectations for
        the rows before ``end`` not yet given, deleted rows skipped. A local file runs in GX's SQL engine on
        DuckDB (``gx_duckdb``: one GX validation for the whole file); others in its pandas engine, block
        by block (``iter_pandas_failures``)."""
        from reverse_etl import gx_duckdb

        if gx_duckdb.usable(url, self.suite.expectations):
            yield from self.iter_sql_failures(url, parameters, block_rows)
        else:
            yield from self.iter_pandas_failures(url, parameters, block_rows)

    def iter_sql_failures(
        self, url: str, parameters: dict | None, block_rows: int
    ) -> Iterator[tuple[int, dict]]:
        """The whole suite in one GX validation over the file in DuckDB, then the failing rows of the rules
        that failed (GX's ``unexpected_index_query``), sorted by position, ``block_rows`` at a time."""
        import pyarrow.parquet as pq

        from reverse_etl.gx_duckdb import StagedFile, value_of
        from reverse_etl.staging import as_path

        with as_path(url).open("rb") as handle:
            total = pq.ParquetFile(handle).metadata.num_rows
        with StagedFile(self._context, url) as staged:
            queries, failures = self._sql_verdict(staged, parameters)
            pending: dict[int, list[dict]] = {}
            for rows in staged.failing_rows(queries, block_rows) if queries else ():
                last = rows[-1][0]
                for position, ordinal, value in rows:
                    pending.setdefault(position, []).append({**failures[ordinal], "value": value_of(value)})
                # The last row's failures may go on in the next batch: keep it back.
                done = {p: f for p, f in pending.items() if p < last}
                pending = {last: pending[last]}
                if done:
                    yield last, done
            yield total, pending

    def iter_sql_rejections(self, url: str, parameters: dict | None, batch_rows: int, superseded_sql):
        """Lists of ``quarantine_lines.Rejected`` for every row of a local staged file that fails the suite
        (one GX validation in DuckDB), has no key, or is superseded (``superseded_sql(source)``: their
        positions and keys), in file order. DuckDB joins GX's failing rows to the whole rows and writes
        their quarantine lines, so each reaches Python as one string."""
        from reverse_etl.gx_duckdb import StagedFile
        from reverse_etl.quarantine_lines import NO_KEY, SUPERSEDED, Rejected, rule_of

        with StagedFile(self._context, url) as staged:
            queries, failures = self._sql_verdict(staged, parameters)
            rules_of: dict[tuple, tuple] = {}  # (ordinals, superseded) -> the rules, in the line's order
            for batch in staged.rejected_rows(queries, failures, superseded_sql, batch_rows):
                columns = batch.to_pydict()
                out = []
                for position, ordinals, superseded, key, deleted, line in zip(
                    columns["_retl_pos"],
                    columns["_retl_ordinals"],
                    columns["_retl_superseded"],
                    columns["_retl_key"],
                    columns["_retl_deleted"],
                    columns["_retl_line"],
                    strict=True,
                ):
                    shape = (tuple(ordinals or ()), superseded)
                    rules = rules_of.get(shape)
                    if rules is None:
                        found = [rule_of(failures[o]) for o in shape[0]] + (
                            [rule_of(SUPERSEDED)] if superseded else []
                        )
                        rules = rules_of[shape] = tuple(found or [rule_of(NO_KEY)])
                    out.append(Rejected(position, key, bool(deleted), superseded, rules, line))
                yield out

    def _sql_verdict(self, staged, parameters: dict | None) -> tuple[list[tuple], dict[int, dict]]:
        """GX's verdict on the staged file: ``(ordinal, failing-row query, column)`` per failed rule, and
        what a failure of each says (expectation, column, rule)."""
        result = staged.validate(self.suite, parameters)
        if any(_raised(item.exception_info) for item in result.results):
            # One rule DuckDB cannot run fails GX's shared query for all: run them alone to name it.
            import copy

            import great_expectations as gx

            for expectation in self.suite.expectations:
                staged.rollback()
                single = copy.copy(expectation)
                single.id = None
                alone = gx.ExpectationSuite(name=f"{self.name} [check]", expectations=[single])
                for item in staged.validate(alone, parameters).results:
                    self._raise_if_broken(item, "unexpected_index_query")
        if len(result.results) != len(self.suite.expectations):
            raise RuntimeError(
                f"GX returned {len(result.results)} results for {len(self.suite.expectations)} expectations"
            )
        queries, failures = [], {}
        for item in result.results:
            self._raise_if_broken(item, "unexpected_index_query")
            if item.success:
                continue
            config = item.expectation_config
            ordinal = int(config.id.rsplit("-", 1)[1])
            column = config.kwargs.get("column") or config.kwargs.get("column_list")
            queries.append(
                (ordinal, item.result["unexpected_index_query"], column if isinstance(column, str) else None)
            )
            failures[ordinal] = {  # the pandas engine's order of keys: the quarantine reads the same
                "expectation": config.type,
                "column": column,
                "value": None,
                "rule": (config.meta or {}).get("rule"),
            }
        return sorted(queries), failures

    def iter_pandas_failures(
        self, url: str, parameters: dict | None, block_rows: int
    ) -> Iterator[tuple[int, dict]]:
        """``(end, failures)`` per block of a staged Parquet file, in GX's pandas engine.

        A block is whole row groups (the staged file has one per chunk) adding up to ``block_rows``; in a
        block the suite runs one column group at a time, on only its columns. Memory holds one block of a
        few columns and its failures, and GX's fixed cost per expectation and call (it rebuilds its metric
        graph, about 7 ms) is paid per block, not per chunk. A sub-suite that reads no column sees all.
        """
        import pyarrow.parquet as pq

        from reverse_etl.staging import as_path

        with as_path(url).open("rb") as handle:
            parquet = pq.ParquetFile(handle)
            offset, groups, rows = 0, [], 0
            sizes = [parquet.metadata.row_group(i).num_rows for i in range(parquet.metadata.num_row_groups)]
            for index, size in enumerate(sizes):
                groups.append(index)
                rows += size
                if rows < block_rows and index < len(sizes) - 1:
                    continue
                found: list[tuple[int, int, dict]] = []
                for group in self.groups:
                    columns = group[0]
                    read = list(dict.fromkeys([*columns, "_deleted"])) if columns else None
                    table = parquet.read_row_groups(groups, columns=read)
                    live = _live_positions(table)
                    if len(live):
                        table = table if len(live) == table.num_rows else table.take(live)
                        part = (table.select(list(columns)) if columns else table).to_pandas()
                        part.index = live + offset
                        found.extend(self._run(group, part, parameters))
                offset += rows
                groups, rows = [], 0
                yield offset, _by_row(found)

    def file_failures(self, url: str, parameters: dict | None, block_rows: int) -> dict[int, list[dict]]:
        """Row position -> failed expectations for a whole staged Parquet file (see ``iter_failures``)."""
        failed: dict[int, list[dict]] = {}
        for _, block in self.iter_failures(url, parameters, block_rows):
            failed.update(block)
        return failed

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

    def _raise_if_broken(self, item, rows_key: str = "unexpected_index_list") -> None:
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
        if not item.success and item.result.get(rows_key) is None:
            raise ConfigError(
                f"Expectation suite {self.source}: {config.type}({config.kwargs}) failed on the whole chunk; only "
                "row-level (column map) expectations can quarantine rows (a date rule whose bounds are "
                "date-time text on a DATE column, or date text on a TIMESTAMP column, also ends here)."
            )


def _keep_nothing() -> None:
    """What saving an ephemeral GX context's config does here: nothing reads it back."""


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
        return _short(str(info.get("exception_message")))
    for value in info.values():
        if isinstance(value, dict) and value.get("raised_exception"):
            return _short(str(value.get("exception_message")))
    return None


def _short(message: str) -> str:
    """DuckDB's own words from a GX SQL error (GX wraps them in the query and a traceback)."""
    import re

    found = [m.strip() for m in re.findall(r"\(_duckdb\.\w+\) ([^\n\"]+)", message)]
    # The first failure aborts the transaction; the later queries only say so.
    causes = [m for m in found if not m.startswith("TransactionContext")] or found
    return causes[0] if causes else message


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
