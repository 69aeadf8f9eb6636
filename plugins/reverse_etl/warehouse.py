"""Source warehouse access: one hook, DuckDB or PostgreSQL, streaming query results as Arrow batches."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseHook

from reverse_etl.errors import ConfigError

if TYPE_CHECKING:
    import pyarrow as pa

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
                    f"set AIRFLOW_CONN_{self.warehouse_conn_id.upper()} (see README, 'Connections')."
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

    def stream(self, sql: str, chunk_rows: int) -> Iterator[pa.RecordBatch]:
        """Yield the query's rows as Arrow record batches of at most ``chunk_rows`` rows."""
        if self.dialect == "duckdb":
            yield from self._stream_duckdb(sql, chunk_rows)
        else:
            yield from self._stream_postgres(sql, chunk_rows)

    def _duckdb_path(self) -> str:
        conn = self.connection
        path = conn.extra_dejson.get("path") or conn.host
        if not path:
            raise ConfigError(
                f"Warehouse connection '{self.warehouse_conn_id}' needs the DuckDB file in 'host'."
            )
        return path

    def _stream_duckdb(self, sql: str, chunk_rows: int) -> Iterator[pa.RecordBatch]:
        import duckdb

        path = self._duckdb_path()
        try:
            con = duckdb.connect(path, read_only=True)
        except duckdb.IOException as exc:
            raise ConfigError(f"Cannot open the DuckDB warehouse '{path}': {exc}") from exc
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
