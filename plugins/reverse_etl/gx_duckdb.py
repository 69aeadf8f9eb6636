"""Great Expectations' SQL execution engine on DuckDB, over the staged Parquet file.

The suite runs once per file in GX's ``SqlAlchemyExecutionEngine``: every rule is pushed into DuckDB as GX
writes it (GX bundles the counts of all rules into a few aggregate queries), with the ``BOOLEAN_ONLY``
result format, which is also the cheapest. For the rules that failed, GX's own ``unexpected_index_query``
(``return_unexpected_index_query``, keyed by the row's position in the file) selects the failing rows; DuckDB
runs those queries together, sorted by position, and hands them over in batches, so memory holds one batch.

The view ``staged`` (the file's live rows, ``_pos`` = position in the file) lives in a small DuckDB file in a
temporary folder, the database GX's connection string names; the rows stay in the Parquet file.

Three gaps of GX 1.x with DuckDB (``duckdb-engine``) are closed here, without changing what GX computes:
  * GX reads a query's rows after giving its connection back, which DuckDB's driver has then closed (the
    rows come back empty); for SQLite and SQL Server GX keeps one connection open instead: DuckDB joins them.
  * GX knows DuckDB's dialect by no module, so regex rules say "not supported"; DuckDB takes PostgreSQL's
    ``~`` / ``!~`` (RE2 syntax, as PostgreSQL's is POSIX: the suites' regexes read the same in both).
  * GX's failing-row query takes DuckDB's ``$1`` placeholder for a value already filled in when the value
    is ``1``: the query is written with SQLAlchemy's literal values instead.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

# GX's result format for the one pass: pass/fail per rule, and the SQL that selects a rule's failing rows.
RESULT_FORMAT = {
    "result_format": "BOOLEAN_ONLY",
    "unexpected_index_column_names": ["_pos"],
    "return_unexpected_index_query": True,
}
_names = itertools.count()
# Rejected rows whose lines (1-3 KB each for customers) DuckDB sorts at once: validate's memory grows with
# this and the width of a row, not with the rows rejected.
WINDOW_ROWS = 20_000


class _DialectName(str):
    """A dialect name where GX expects its ``GXSqlDialect`` enum (a str with a ``value``)."""

    @property
    def value(self) -> str:
        return str(self)


def enable_duckdb() -> None:
    """Let GX keep one DuckDB connection for a batch, as it does for SQLite, and write DuckDB's failing-row
    queries with SQLAlchemy's literal values (idempotent)."""
    from great_expectations.execution_engine import sqlalchemy_execution_engine as sa_engine
    from great_expectations.expectations.metrics import util
    from great_expectations.expectations.metrics.column_map_metrics import column_values_unique
    from great_expectations.expectations.metrics.map_metric_provider import map_condition_auxilliary_methods

    if "duckdb" in [str(d) for d in sa_engine._PERSISTED_CONNECTION_DIALECTS]:
        return
    sa_engine._PERSISTED_CONNECTION_DIALECTS = (
        *sa_engine._PERSISTED_CONNECTION_DIALECTS,
        _DialectName("duckdb"),
    )
    gx_to_string = util.sqlalchemy_select_to_sql_string

    def to_string(engine, select_statement) -> str:
        # GX fills DuckDB's ``$1`` placeholders itself only when it recognises them; it takes ``$1`` for
        # a filled-in ``1`` (``length(b) > $1`` for ``max_value: 1``). SQLAlchemy's literals are always right.
        if engine.dialect_name == "duckdb":
            return util._fallback_to_literal_binds(engine, select_statement) + ";"
        return gx_to_string(engine=engine, select_statement=select_statement)

    for module in (util, column_values_unique, map_condition_auxilliary_methods):
        module.sqlalchemy_select_to_sql_string = to_string


def usable(url: str, expectations: list) -> bool:
    """Local staged files, and suites whose row conditions are not pandas expressions."""
    from reverse_etl.staging import as_path, is_local

    if not is_local(as_path(url)):
        return False
    return not any(
        e.configuration.kwargs.get("row_condition")
        and e.configuration.kwargs.get("condition_parser") == "pandas"
        for e in expectations
    )


def _quoted(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class StagedFile:
    """A staged Parquet file seen by GX as the DuckDB view ``staged``; a context manager."""

    def __init__(self, context, url: str):
        import duckdb

        from reverse_etl import settings
        from reverse_etl.staging import as_path

        self.memory_limit = settings.validate_memory()
        self.parquet = as_path(url).path
        self.folder = Path(tempfile.mkdtemp(prefix="retl-gx-"))
        self.database = self.folder / "staged.duckdb"
        con = duckdb.connect(str(self.database))
        try:
            con.execute(
                "CREATE VIEW staged AS SELECT *, file_row_number AS _pos FROM "
                f"read_parquet({_quoted(self.parquet)}, file_row_number = true) WHERE NOT coalesce(_deleted, false)"
            )
        finally:
            con.close()
        enable_duckdb()
        self.context = context
        self.name = f"staged-{next(_names)}"
        source = context.data_sources.add_sql(
            self.name,
            connection_string=f"duckdb:///{self.database}",
            # DuckDB takes 80% of the machine's memory by default. The rules stream; the quarantined rows
            # are sorted a window at a time (``rejected_rows``, ``settings.validate_memory``).
            kwargs={"connect_args": {"config": {"memory_limit": self.memory_limit}}},
        )
        self.batch_definition = source.add_table_asset(
            "staged", table_name="staged"
        ).add_batch_definition_whole_table("whole")
        self.engine = None

    def validate(self, suite, parameters: dict | None):
        """GX's validation result of ``suite`` over the file's live rows (one batch, every rule at once)."""
        import sqlalchemy.dialects.postgresql

        batch = self.batch_definition.get_batch()
        self.engine = batch.data.execution_engine
        if self.engine.dialect_module is None:  # DuckDB speaks PostgreSQL's regex operators
            self.engine.dialect_module = sqlalchemy.dialects.postgresql
        return batch.validate(suite, result_format=RESULT_FORMAT, expectation_parameters=parameters or {})

    def rollback(self) -> None:
        """After a failed query DuckDB refuses the next ones on that connection until a rollback."""
        if self.engine is not None and self.engine._connection is not None:
            self.engine._connection.rollback()

    def _failed_sql(self, queries: list[tuple[int, str, str | None]]) -> str:
        """GX's failing-row queries as one: ``(_pos, ordinal, value as JSON text)``."""
        parts = []
        for ordinal, query, column in queries:
            value = f"to_json({_identifier(column)})::VARCHAR" if column else "NULL::VARCHAR"
            parts.append(
                f"SELECT _pos, {ordinal} AS ordinal, {value} AS value FROM ({query.strip().rstrip(';')}) AS q{ordinal}"
            )
        if not parts:
            return "SELECT NULL::BIGINT AS _pos, NULL::INTEGER AS ordinal, NULL::VARCHAR AS value WHERE false"
        return " UNION ALL ".join(parts)

    def failing_rows(
        self, queries: list[tuple[int, str, str | None]], batch_rows: int
    ) -> Iterator[list[tuple]]:
        """``(position, ordinal, value as JSON)`` of GX's failing-row queries (``(ordinal, query, column)``),
        sorted by position then ordinal, in batches; DuckDB sorts out of core."""
        # On GX's own connection (DuckDB opens a database file once per process, with one configuration).
        result = self.engine._connection.exec_driver_sql(
            self._failed_sql(queries) + " ORDER BY _pos, ordinal"
        )
        try:
            while rows := result.fetchmany(batch_rows):
                yield [tuple(row) for row in rows]
        finally:
            result.close()

    def rejected_rows(self, queries: list[tuple], failures: dict[int, dict], superseded_sql, batch_rows: int):
        """Arrow batches of the rows to quarantine, in file order: ``_retl_pos``, ``_retl_ordinals`` (the
        rules failed, suite order), ``_retl_superseded`` (true when a newer row has the key), ``_retl_key``,
        ``_retl_deleted`` and ``_retl_line``, the row's quarantine line (``quarantine_lines``).
        Rows that fail, lack a key or are superseded; nothing else. ``failures``: ordinal -> the fixed
        fields of a failure of that rule; ``superseded_sql(source)``: the query of superseded rows
        (``file_row_number``, ``k``) of ``source``."""
        import duckdb

        from reverse_etl.quarantine_lines import line_sql

        source = f"read_parquet({_quoted(self.parquet)}, file_row_number = true)"
        cursor = self.engine._connection.connection.dbapi_connection.cursor()
        # First the rejected positions alone, with the rules each broke (narrow: about 100 bytes a row, held
        # as Arrow; as a DuckDB temporary table it added 30 MB at 100k rows); then their whole rows and
        # lines, sorted a window of WINDOW_ROWS rejected rows at a time, each window's scan reading only its
        # row groups. Sorting every line at once held them all: 250,000 rejected rows of 1M did not fit
        # 128 MB (now they do, and the process peaks at 644 MB against 813 MB with 256 MB).
        positions = f"""
            WITH failed AS ({self._failed_sql(queries)}),
            judged AS (
                SELECT _pos, list(ordinal ORDER BY ordinal) AS ordinals, list(value ORDER BY ordinal) AS vals
                FROM failed GROUP BY _pos
            ),
            superseded AS ({superseded_sql(source)}),
            rejected AS (
                SELECT _pos AS pos FROM judged
                UNION SELECT file_row_number FROM superseded
                UNION SELECT file_row_number FROM {source} WHERE _key IS NULL
            )
            SELECT rejected.pos, judged.ordinals, judged.vals, superseded.k
            FROM rejected
            LEFT JOIN judged ON judged._pos = rejected.pos
            LEFT JOIN superseded ON superseded.file_row_number = rejected.pos
        """
        starts = f"""
            SELECT pos FROM (SELECT pos, row_number() OVER (ORDER BY pos) - 1 AS n FROM retl_rejected)
            WHERE n % {WINDOW_ROWS} = 0 ORDER BY pos
        """
        try:
            # One thread: the quarantined rows' queries hold less at once (the rules ran before on every
            # thread). At 1M rows (25,000 rejected), two threads took 1.23 s against 1.67 s for a third
            # more of DuckDB's memory (2026-12-03).
            cursor.execute("SET threads = 1")
            cursor.register("retl_rejected", cursor.sql(positions).to_arrow_table())
            first = [row[0] for row in cursor.sql(starts).fetchall()]
            # The lines are written after the join, for the rejected rows only: a join that carried them
            # past a million rows took 1.9 s against 0.05 s.
            row_json = self._row_json(cursor, source)
            for start, end in itertools.zip_longest(first, first[1:]):
                window = f">= {start}" if end is None else f"BETWEEN {start} AND {end - 1}"
                sql = f"""
                    SELECT _retl_pos, _retl_ordinals, _retl_superseded, _retl_key, _retl_deleted,
                           {line_sql("_retl_key", "_retl_ordinals", "vals", "k", "_retl_row", failures)} AS _retl_line
                    FROM (
                        SELECT r.pos AS _retl_pos, r.ordinals AS _retl_ordinals, r.vals, r.k,
                               r.k IS NOT NULL AS _retl_superseded, s._key AS _retl_key,
                               s._deleted AS _retl_deleted, {row_json} AS _retl_row
                        FROM {source} AS s JOIN retl_rejected AS r ON r.pos = s.file_row_number
                        WHERE s.file_row_number {window} AND r.pos {window}
                    )
                    ORDER BY _retl_pos
                """
                yield from cursor.sql(sql).to_arrow_reader(batch_rows)
        except duckdb.OutOfMemoryException as exc:
            from reverse_etl.errors import ConfigError

            raise ConfigError(
                f"Validate ran out of memory writing the quarantined rows: DuckDB may use "
                f"{self.memory_limit} (RETL_VALIDATE_MEMORY), and sorting the rejected rows with their "
                "lines needs more (very wide rows, or a great many rows failing the checks). Set "
                "RETL_VALIDATE_MEMORY higher on the workers (e.g. 1GB), or fix the upstream rows that fail "
                "the checks, then clear the task."
            ) from exc
        finally:
            cursor.close()

    @staticmethod
    def _row_json(cursor, source: str) -> str:
        """The whole row as JSON text, written by DuckDB as Python's ``json`` (``default=str``) writes it:
        dates as ISO text; decimals and timestamps cast to Python's text for them. Only the spacing differs."""
        columns = cursor.sql(f"DESCRIBE SELECT * EXCLUDE (file_row_number) FROM {source}").fetchall()
        fields = []
        for name, kind, *_ in columns:
            value = f"s.{_identifier(name)}"
            if kind.upper().startswith("DECIMAL"):
                value = f"CAST({value} AS VARCHAR)"
            elif kind.upper() == "TIMESTAMP":  # Python drops zero microseconds and keeps trailing zeros
                value = (
                    f"CASE WHEN microsecond({value}) = 0 THEN strftime({value}, '%Y-%m-%d %H:%M:%S') "
                    f"ELSE strftime({value}, '%Y-%m-%d %H:%M:%S.%f') END"
                )
            fields.append(f"{_identifier(name)} := {value}")
        return f"to_json(struct_pack({', '.join(fields)}))::VARCHAR"

    def close(self) -> None:
        if self.engine is not None:
            if self.engine._connection is not None:
                self.engine._connection.close()
                self.engine._connection = None
            self.engine.close()
        with contextlib.suppress(Exception):  # the context is ephemeral: a leftover datasource costs nothing
            self.context.data_sources.delete(self.name)
        shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self) -> StagedFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def value_of(text: str | None):
    """A failing value back from its JSON (DuckDB's ``to_json``: dates and times as ISO text)."""
    return None if text is None else json.loads(text)
