"""Erasures: records we delivered that are gone from the source (a hard delete, e.g. a GDPR erasure).

A delta only sees rows that exist, so a row deleted outright never reaches the vendor as a delete. The
sweep compares every key the source holds (``include/sql/<destination>/<entity>.keys.sql``, not window
bound) with the keys the ledger holds as delivered, and reports the difference: the load deletes them.

Memory stays bounded: source keys stream from the warehouse in chunks into a DuckDB database in a
temporary folder (which spills to disk), the ledger's keys arrive in keyset pages, and the
anti-join runs inside DuckDB. Python holds one chunk at a time.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from reverse_etl import settings
from reverse_etl.errors import ConfigError, SyncError

log = logging.getLogger(__name__)

REASON = "gone from the source (erased in the warehouse)"
SAMPLE = 5
DEFAULT_MAX_SHARE = 0.05


class ErasureRefused(SyncError):
    """Too many delivered records are gone from the source at once: probably a broken source, not a wave
    of erasures. No retry helps; a person decides (and raises the limit for one run if it is real)."""


def keys_sql_path(destination: str, entity: str) -> Path:
    return settings.include_dir() / "sql" / destination / f"{entity}.keys.sql"


def render_keys_sql(destination: str, entity: str, dialect: str) -> str:
    """Render the keys SQL; it knows the dialect but no window (it must select every present record)."""
    import jinja2

    path = keys_sql_path(destination, entity)
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=True)
    try:
        return env.from_string(path.read_text(encoding="utf-8")).render(dialect=dialect)
    except jinja2.TemplateError as exc:
        raise ConfigError(
            f"Cannot render {settings.shown(path)}: {exc}. A keys file selects the _key of every record in the source and "
            "takes no window."
        ) from exc


@dataclass
class Scan:
    """What one sweep found. ``erased`` keys stay in DuckDB; ``batches`` streams them in key order."""

    source_keys: int = 0
    delivered: int = 0
    erased: int = 0
    sample: list[str] = field(default_factory=list)
    keys_path: str | None = None  # every erased key, one JSON line each, for people to read
    _con: object = None

    @property
    def share(self) -> float:
        return self.erased / self.delivered if self.delivered else 0.0

    def as_dict(self) -> dict:
        return {
            "source_keys": self.source_keys,
            "delivered": self.delivered,
            "erased": self.erased,
            "share": round(self.share, 6),
            "sample": self.sample,
            "keys_path": self.keys_path,
        }

    def batches(self, rows: int) -> Iterator[list[str]]:
        reader = self._con.sql("SELECT k FROM erased ORDER BY k").to_arrow_reader(rows)
        for batch in reader:
            yield [str(k) for k in batch.column(0).to_pylist()]

    def refusal(self, name: str, max_share: float) -> str | None:
        """The message that stops the sweep, or None when it may delete."""
        if self.delivered and not self.source_keys and max_share < 1:
            return (
                f"{name}: the keys query returned no keys at all, while the ledger holds {self.delivered} "
                "records as delivered; deleting them all would empty the vendor. Nothing was deleted. Check "
                "the warehouse connection and the source table; if the source really is empty and every "
                "record must go, run once with the DAG param max_erasure_share set to 1 (or turn the "
                "sweep off for a run with detect_erasures=false)."
            )
        if self.share > max_share:
            return (
                f"{name}: {self.erased} of {self.delivered} delivered records ({self.share:.1%}) are gone "
                f"from the source, above the limit of {max_share:.1%} (e.g. {', '.join(self.sample)}). "
                "Nothing was deleted. If the source lost rows by mistake (a failed load, a truncated table, a "
                "changed key in the SQL), fix it and rerun. If the erasure is deliberate, trigger a run with "
                f"the DAG param max_erasure_share set to at least {self.share:.4f} (e.g. "
                f'{{"max_erasure_share": {min(1.0, _ceil(self.share)):g}}}); detect_erasures=false skips the '
                "sweep."
            )
        return None


def _ceil(share: float) -> float:
    """The share rounded up to two decimals, a value a person can type."""
    import math

    return math.ceil(share * 100) / 100


class ErasureSweep:
    """Context manager owning the temporary DuckDB database of one sweep."""

    def __init__(self, destination: str, entity: str, *, chunk_rows: int | None = None) -> None:
        self.destination = destination
        self.entity = entity
        self.chunk_rows = chunk_rows or settings.chunk_rows()
        self._tmp: tempfile.TemporaryDirectory | None = None
        self._con = None

    def __enter__(self) -> ErasureSweep:
        import duckdb

        self._tmp = tempfile.TemporaryDirectory(prefix="retl-erasures-")
        self._con = duckdb.connect(str(Path(self._tmp.name) / "keys.duckdb"))
        self._con.execute(f"SET temp_directory = '{Path(self._tmp.name) / 'spill'}'")
        self._con.execute("SET preserve_insertion_order = false")
        self._con.execute("CREATE TABLE source_keys (k VARCHAR)")
        self._con.execute("CREATE TABLE delivered (k VARCHAR)")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._con is not None:
            self._con.close()
        if self._tmp is not None:
            self._tmp.cleanup()

    def scan(self, ledger, batches, on_progress=None) -> Scan:
        """Load the source's key batches (Arrow, a ``_key`` column) and the ledger's delivered keys, then
        anti-join them in DuckDB."""
        import pyarrow as pa

        con = self._con
        result = Scan(_con=con)
        for batch in batches:
            if "_key" not in batch.schema.names:
                raise ConfigError(
                    f"{settings.shown(keys_sql_path(self.destination, self.entity))} must select the column _key."
                )
            keys = pa.table({"k": batch.column("_key").cast(pa.string())})
            con.register("chunk", keys)
            con.execute("INSERT INTO source_keys SELECT k FROM chunk WHERE k IS NOT NULL")
            con.unregister("chunk")
            result.source_keys += keys.num_rows
            if on_progress:
                on_progress()
        for keys in ledger.iter_delivered_keys(self.chunk_rows):
            chunk = pa.table({"k": pa.array(keys, pa.string())})
            con.register("chunk", chunk)
            con.execute("INSERT INTO delivered SELECT k FROM chunk")
            con.unregister("chunk")
            result.delivered += len(keys)
            if on_progress:
                on_progress()
        con.execute(
            "CREATE TABLE erased AS SELECT d.k FROM delivered d "
            "WHERE NOT EXISTS (SELECT 1 FROM source_keys s WHERE s.k = d.k)"
        )
        result.erased = con.execute("SELECT count(*) FROM erased").fetchone()[0]
        result.sample = [
            r[0] for r in con.execute(f"SELECT k FROM erased ORDER BY k LIMIT {SAMPLE}").fetchall()
        ]
        return result


def stream_source_keys(destination: str, entity: str, chunk_rows: int, warehouse_conn_id: str | None = None):
    """The source's keys as Arrow batches, straight from the warehouse."""
    from reverse_etl.warehouse import WarehouseHook

    hook = WarehouseHook(warehouse_conn_id or settings.warehouse_conn_id())
    sql = render_keys_sql(destination, entity, hook.dialect)
    yield from hook.stream(sql, chunk_rows, source=keys_sql_path(destination, entity))
