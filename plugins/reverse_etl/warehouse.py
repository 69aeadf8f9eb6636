"""Warehouse access: one hook, DuckDB or PostgreSQL, streaming query results as Arrow batches, and
loading vendor exports (CSV files) back into tables."""

from __future__ import annotations

import csv
import datetime as dt
import logging
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseHook

from reverse_etl.errors import ConfigError

if TYPE_CHECKING:
    import pyarrow as pa

log = logging.getLogger(__name__)
SUPPORTED = ("duckdb", "postgres")


class WarehouseHook(BaseHook):
    """Reads the warehouse named by an Airflow connection.

    ``duckdb``: ``host`` (or extra ``path``) is the database file, opened read-only.
    ``postgres``: the usual host/port/login/password/schema (database); extra ``search_path`` optional.
    """

    conn_name_attr = "warehouse_conn_id"
    default_conn_name = "retl_warehouse"
    conn_type = "duckdb"
    hook_name = "Reverse ETL warehouse"

    def __init__(self, warehouse_conn_id: str = default_conn_name) -> None:
        super().__init__()
        self.warehouse_conn_id = warehouse_conn_id
        self._conn: Any = None

    @property
    def connection(self):
        if self._conn is None:
            try:
                self._conn = self.get_connection(self.warehouse_conn_id)
            except Exception as exc:  # Airflow raises its own not-found type, which varies by version
                raise ConfigError(
                    f"Warehouse connection '{self.warehouse_conn_id}' is not defined. Create it in the UI or "
                    f"set AIRFLOW_CONN_{self.warehouse_conn_id.upper()} (see docs/configuration.md)."
                ) from exc
            if self._conn.conn_type not in SUPPORTED:
                raise ConfigError(
                    f"Warehouse connection '{self.warehouse_conn_id}' has type '{self._conn.conn_type}'; "
                    f"supported types are {', '.join(SUPPORTED)}."
                )
        return self._conn

    @property
    def dialect(self) -> str:
        return self.connection.conn_type

    def stream(self, sql: str, chunk_rows: int, source: Path | None = None) -> Iterator[pa.RecordBatch]:
        """Yield the query's rows as Arrow record batches of at most ``chunk_rows`` rows.

        ``source``: the SQL file the query was rendered from; the database's refusal of the query (syntax,
        unknown table or column, a failing cast) becomes a ConfigError naming that file, its first line
        and the line of the file; connection failures pass through (they are retried).
        """
        try:
            if self.dialect == "duckdb":
                yield from self._stream_duckdb(sql, chunk_rows)
            else:
                yield from self._stream_postgres(sql, chunk_rows)
        except Exception as exc:
            if source is None or not _refused_query(exc):
                raise
            raise ConfigError(mapping_error(source, self.dialect, exc)) from exc

    def _duckdb_path(self) -> str:
        conn = self.connection
        path = conn.extra_dejson.get("path") or conn.host
        if not path:
            raise ConfigError(
                f"Warehouse connection '{self.warehouse_conn_id}' needs the DuckDB file in 'host'."
            )
        return path

    def _duckdb_connect(self, read_only: bool):
        """DuckDB lets one process write a file and nobody read it meanwhile: wait for the lock (a load of
        an export takes seconds) up to ``RETL_DUCKDB_LOCK_WAIT_SECONDS`` (120)."""
        import duckdb

        from reverse_etl.progress import Wait

        path = self._duckdb_path()
        wait = Wait(
            f"the DuckDB lock on '{path}'",
            float(os.environ.get("RETL_DUCKDB_LOCK_WAIT_SECONDS", "120")),
            logger=log,
        )
        while True:
            try:
                con = duckdb.connect(path, read_only=read_only)
            except duckdb.IOException as exc:
                if "lock" not in str(exc).lower() or wait.expired:
                    raise ConfigError(f"Cannot open the DuckDB warehouse '{path}': {exc}") from exc
                pid = re.search(r"PID (\d+)", str(exc))
                wait.sleep(
                    1.0, f"held by {f'process {pid[1]}' if pid else 'another process'} (an export load?)"
                )
                continue
            wait.done()
            return con

    def _stream_duckdb(self, sql: str, chunk_rows: int) -> Iterator[pa.RecordBatch]:
        con = self._duckdb_connect(read_only=True)
        try:
            reader = con.sql(sql).to_arrow_reader(chunk_rows)
            yield from reader
        finally:
            con.close()

    def postgres_dsn(self) -> dict:
        conn = self.connection
        return {
            "host": conn.host or "127.0.0.1",
            "port": conn.port or 5432,
            "user": conn.login or "postgres",
            "password": conn.password or None,
            "dbname": conn.schema or "postgres",
        }

    def _stream_postgres(self, sql: str, chunk_rows: int) -> Iterator[pa.RecordBatch]:
        import psycopg2

        search_path = self.connection.extra_dejson.get("search_path")
        with psycopg2.connect(**self.postgres_dsn()) as pg:
            if search_path:
                with pg.cursor() as cur:
                    cur.execute("SELECT set_config('search_path', %s, false)", (search_path,))
            # A named cursor is server-side: rows arrive chunk by chunk, memory stays flat.
            with pg.cursor(name="retl_extract") as cur:
                cur.itersize = chunk_rows
                cur.execute(sql)
                schema = None
                while rows := cur.fetchmany(chunk_rows):
                    if schema is None:
                        schema = _arrow_schema(cur.description)
                    columns = list(zip(*rows, strict=True))
                    yield _record_batch(schema, columns)
                if schema is None and cur.description:
                    schema = _arrow_schema(cur.description)
                    yield _record_batch(schema, [[] for _ in schema])
        pg.close()

    def load_csv(
        self,
        table: str,
        csv_path: str,
        *,
        delimiter: str,
        stamps: dict[str, str],
        labels: dict[str, str] | None = None,
        replace_rows_where: dict[str, tuple[str, str]] | None = None,
    ) -> int:
        """Load a CSV file (header row, UTF-8) into ``table`` as text columns plus ``stamps`` (timestamp
        columns such as ``_exported_at``), in one transaction; returns the table's row count afterwards.

        Without ``replace_rows_where`` the table becomes exactly the file (a snapshot). With it, rows whose
        stamp columns lie within the given ``(low, high)`` bounds are deleted first, so loading the same
        window again replaces that window's rows instead of doubling them; new columns are added.
        """
        with open(csv_path, encoding="utf-8-sig", newline="") as f:
            header = next(csv.reader(f, delimiter=delimiter), None)
        if not header:
            raise ValueError(f"{csv_path} has no header row: nothing to load into {table}")
        if len(set(header)) != len(header):
            raise ValueError(f"{csv_path} repeats a column name in its header: {header}")
        if set(header) & (set(stamps) | set(labels or {})):
            raise ValueError(f"{csv_path} has columns named like ours: {sorted({*stamps, *(labels or {})})}")
        extra = {
            **{k: ("TIMESTAMP", v) for k, v in stamps.items()},
            **{k: ("TEXT", v) for k, v in (labels or {}).items()},
        }
        if self.dialect == "duckdb":
            return self._load_csv_duckdb(table, csv_path, header, delimiter, extra, replace_rows_where)
        return self._load_csv_postgres(table, csv_path, header, delimiter, extra, replace_rows_where)

    @staticmethod
    def _stamped_select(
        header: list[str], extra: dict[str, tuple[str, str]], placeholder: str
    ) -> tuple[str, list]:
        columns = [
            *(_ident(c) for c in header),
            *(f"CAST({placeholder} AS {kind}) AS {_ident(c)}" for c, (kind, _) in extra.items()),
        ]
        return f"SELECT {', '.join(columns)} FROM _incoming", [value for _, value in extra.values()]

    def _load_csv_duckdb(self, table, csv_path, header, delimiter, extra, replace_rows_where) -> int:
        target = _qualified(table)
        columns = "{" + ", ".join(f"{_literal(c)}: 'VARCHAR'" for c in header) + "}"
        con = self._duckdb_connect(read_only=False)
        try:
            con.execute("BEGIN TRANSACTION")
            con.execute(
                f"CREATE TEMP TABLE _incoming AS SELECT * FROM read_csv({_literal(csv_path)}, "
                f"delim={_literal(delimiter)}, header=true, quote='\"', escape='\"', columns={columns}, "
                "auto_detect=false, strict_mode=true)"
            )
            select, values = self._stamped_select(header, extra, "?")
            if replace_rows_where is None:
                con.execute(f"CREATE OR REPLACE TABLE {target} AS {select}", values)
            else:
                con.execute(f"CREATE TABLE IF NOT EXISTS {target} AS {select} LIMIT 0", values)
                have = {r[0] for r in con.execute(f"SELECT * FROM {target} LIMIT 0").description}
                for column in [*header, *extra]:
                    if column not in have:
                        kind = extra[column][0] if column in extra else "TEXT"
                        con.execute(f"ALTER TABLE {target} ADD COLUMN {_ident(column)} {kind}")
                where, bounds = _bounds_sql(replace_rows_where, "?")
                con.execute(f"DELETE FROM {target} WHERE {where}", bounds)
                con.execute(f"INSERT INTO {target} BY NAME {select}", values)
            count = con.execute(f"SELECT count(*) FROM {target}").fetchone()[0]
            con.execute("COMMIT")
            return count
        finally:
            con.close()

    def _load_csv_postgres(self, table, csv_path, header, delimiter, extra, replace_rows_where) -> int:
        import psycopg2

        target = _qualified(table)
        pg = psycopg2.connect(**self.postgres_dsn())
        try:
            with pg, pg.cursor() as cur:
                search_path = self.connection.extra_dejson.get("search_path")
                if search_path:
                    cur.execute("SELECT set_config('search_path', %s, true)", (search_path,))
                cur.execute(
                    "CREATE TEMP TABLE _incoming ("
                    + ", ".join(f"{_ident(c)} TEXT" for c in header)
                    + ") ON COMMIT DROP"
                )
                with open(csv_path, encoding="utf-8-sig", newline="") as f:
                    cur.copy_expert(
                        f"COPY _incoming FROM STDIN WITH (FORMAT csv, HEADER true, DELIMITER {_literal(delimiter)})",
                        f,
                    )
                select, values = self._stamped_select(header, extra, "%s")
                if replace_rows_where is None:
                    cur.execute(f"DROP TABLE IF EXISTS {target}")
                    cur.execute(f"CREATE TABLE {target} AS {select}", values)
                else:
                    cur.execute(f"CREATE TABLE IF NOT EXISTS {target} AS {select} WITH NO DATA", values)
                    for column in [*header, *extra]:
                        kind = extra[column][0] if column in extra else "TEXT"
                        cur.execute(f"ALTER TABLE {target} ADD COLUMN IF NOT EXISTS {_ident(column)} {kind}")
                    where, bounds = _bounds_sql(replace_rows_where, "%s")
                    cur.execute(f"DELETE FROM {target} WHERE {where}", bounds)
                    names = ", ".join(_ident(c) for c in [*header, *extra])
                    cur.execute(f"INSERT INTO {target} ({names}) {select}", values)
                cur.execute(f"SELECT count(*) FROM {target}")
                return cur.fetchone()[0]
        finally:
            pg.close()


def _refused_query(exc: BaseException) -> bool:
    """The database refused the query itself (DB-API ProgrammingError or DataError), not the connection."""
    import sys

    for name in ("duckdb", "psycopg2"):
        module = sys.modules.get(name)
        if module is not None and isinstance(exc, (module.ProgrammingError, module.DataError)):
            return True
    return False


def mapping_error(source: Path, dialect: str, exc: BaseException) -> str:
    """``include/sql/x/y.sql`` line 12: the database's first line, and what to do."""
    from reverse_etl import settings

    text = str(exc).strip()  # DuckDB and PostgreSQL both add "LINE n: ..." under a syntax error
    first = text.splitlines()[0] if text else type(exc).__name__
    line = re.search(r"^LINE (\d+):", text, re.MULTILINE)
    where = f" (line {line.group(1)})" if line else ""
    return (
        f"SQL mapping {settings.shown(source)}{where} does not run on the {dialect} warehouse: {first.strip().rstrip('.!')}. "
        "Fix the file (run it against the warehouse to check)."
    )


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _qualified(table: str) -> str:
    return ".".join(_ident(part) for part in table.split("."))


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _bounds_sql(bounds: dict[str, tuple[str, str]], placeholder: str) -> tuple[str, list]:
    clauses, values = [], []
    for column, (low, high) in bounds.items():
        clauses.append(
            f"{_ident(column)} >= CAST({placeholder} AS TIMESTAMP) AND {_ident(column)} <= CAST({placeholder} AS TIMESTAMP)"
        )
        values += [low, high]
    return " AND ".join(clauses), values


# PostgreSQL type OIDs -> Arrow types; anything else travels as text.
_PG_TYPES = {
    16: "bool_",
    20: "int64",
    21: "int64",
    23: "int64",
    700: "float64",
    701: "float64",
    1700: "float64",
    1082: "date32",
    1114: "timestamp",
    1184: "timestamptz",
}


def _arrow_schema(description) -> pa.Schema:
    import pyarrow as pa

    def arrow_type(oid: int) -> pa.DataType:
        name = _PG_TYPES.get(oid, "string")
        if name == "timestamp":
            return pa.timestamp("us")
        if name == "timestamptz":
            return pa.timestamp("us", tz="UTC")
        return getattr(pa, name)()

    return pa.schema([(col.name, arrow_type(col.type_code)) for col in description])


def _record_batch(schema: pa.Schema, columns: list) -> pa.RecordBatch:
    import pyarrow as pa

    arrays = []
    for field, values in zip(schema, columns, strict=True):
        if pa.types.is_string(field.type):
            values = [
                None if v is None else (v.isoformat() if isinstance(v, dt.date) else str(v)) for v in values
            ]
        elif pa.types.is_floating(field.type):
            values = [None if v is None else float(v) for v in values]
        arrays.append(pa.array(values, type=field.type))
    return pa.RecordBatch.from_arrays(arrays, schema=schema)
