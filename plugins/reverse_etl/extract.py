"""Extract: render the sync's SQL for the window and stream the rows into staged Parquet.

The SQL file is the field mapping. Besides the payload columns it must return the meta columns
``_key`` (the record's key at the vendor, text) and ``_deleted`` (true when the row was soft-deleted);
``_updated_at`` is optional and decides which of two rows with the same key wins.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from reverse_etl import settings
from reverse_etl.errors import ConfigError
from reverse_etl.window import Window

log = logging.getLogger(__name__)

META_COLUMNS = ("_key", "_deleted")


def sql_path(destination: str, entity: str) -> Path:
    return settings.include_dir() / "sql" / destination / f"{entity}.sql"


def render_sql(destination: str, entity: str, window: Window, dialect: str, **params: object) -> str:
    """Render ``include/sql/<destination>/<entity>.sql`` with the window; unknown variables are errors."""
    import jinja2

    path = sql_path(destination, entity)
    if not path.exists():
        raise ConfigError(
            f"No SQL mapping for {destination}.{entity}: expected the file {settings.shown(path)}."
        )
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=True)
    try:
        template = env.from_string(path.read_text(encoding="utf-8"))
        return template.render(
            window_start=window.sql_literal("start"),
            window_end=window.sql_literal("end"),
            dialect=dialect,
            **params,
        )
    except jinja2.TemplateError as exc:
        line = f" (line {exc.lineno})" if getattr(exc, "lineno", None) else ""
        raise ConfigError(f"SQL mapping {settings.shown(path)}{line} does not render: {exc}.") from exc


def extract(
    *,
    destination: str,
    entity: str,
    window: Window,
    dag_id: str,
    run_id: str,
    warehouse_conn_id: str | None = None,
    chunk_rows: int | None = None,
    sql_params: dict | None = None,
) -> dict:
    """Stream the delta into ``<staging>/<dag>/<run>/<entity>/extract.parquet``; return its manifest."""
    import pyarrow.compute as pc

    from reverse_etl.staging import ParquetSink, sync_dir
    from reverse_etl.warehouse import WarehouseHook

    started = time.monotonic()
    chunk_rows = chunk_rows or settings.chunk_rows()
    hook = WarehouseHook(warehouse_conn_id or settings.warehouse_conn_id())
    sql = render_sql(destination, entity, window, hook.dialect, **(sql_params or {}))
    out = sync_dir(dag_id, run_id, entity) / "extract.parquet"
    sink = None
    deletes = 0
    try:
        for batch in hook.stream(sql, chunk_rows, source=sql_path(destination, entity)):
            if sink is None:
                missing = [c for c in META_COLUMNS if c not in batch.schema.names]
                if missing:
                    raise ConfigError(
                        f"SQL mapping {settings.shown(sql_path(destination, entity))} must select the "
                        f"columns {', '.join(missing)}."
                    )
                sink = ParquetSink(out, batch.schema)
            sink.write(batch)
            deletes += int(pc.sum(batch.column("_deleted")).as_py() or 0)
            if sink.rows and sink.rows % (chunk_rows * 10) < batch.num_rows:
                log.info("%s.%s: extracted %d rows so far", destination, entity, sink.rows)
    finally:
        if sink is not None:
            sink.close()
    rows = sink.rows if sink else 0
    if sink is None:
        out = None
    log.info(
        "%s.%s: extracted %d rows (%d deletes) for %s", destination, entity, rows, deletes, window.as_dict()
    )
    return {
        "destination": destination,
        "entity": entity,
        "window": window.as_dict(),
        "path": str(out) if out else None,
        "rows": rows,
        "deletes": deletes,
        "seconds": round(time.monotonic() - started, 3),
    }
