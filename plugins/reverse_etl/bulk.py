"""Bulk writes and reads of the ledger, per dialect, on the driver's own cursor.

A million-record load writes every record three times (plan, in flight, answer) and one event per answer.
Through SQLAlchemy each row costs its own parameter processing; here each call is one statement run on the
DBAPI cursor inside the caller's SQLAlchemy transaction:

- SQLite: the rows as one JSON array bound to one statement that reads it with ``json_each`` (SQLite runs
  it in one call without the GIL; ``executemany`` binds and steps a row at a time, a fifth slower), or
  ``executemany`` where per-row values would need many statements (an update's many distinct errors);
- PostgreSQL: one statement per call whatever the row count, the varying values sent as arrays and
  expanded by ``unnest`` (``INSERT ... SELECT ... ON CONFLICT DO UPDATE``, ``UPDATE ... FROM unnest``).

Each function takes the constants of the call (scope, run, time) once and the per-record values as
columns (lists of equal length). Statements say nothing the SQLAlchemy versions did not: same rows, same
events, in the same order.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator, Sequence
from typing import Any

LOOKUP_COLUMNS = ("record_key", "status", "payload_hash", "delivered_hash")
_SQLITE_IN = 500  # keys per lookup statement on SQLite (bound variables: at most 32,766 since 3.32)
_PG_ANY = 20_000  # keys per lookup statement on PostgreSQL (one array)


# rows for json_each: NaN and infinities refused (JSON has none), text as it is (SQLite reads UTF-8 JSON)
_JSON_ROWS = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))
# characters of JSON per statement: at most 256 MB of UTF-8, under SQLite's 1 GB cap on a bound value (a
# chunk of 50,000 rows with 20 kB payloads would pass it), and SQLite parses it in one piece
_ONE_STEP_CHARS = 64_000_000


def _json_parts(rows: list) -> Iterator[str]:
    """``rows`` as JSON arrays of at most ``_ONE_STEP_CHARS`` characters (one row may be longer), in order:
    an array too long is halved until its halves fit."""
    pending = [rows]
    while pending:
        part = pending.pop()
        text = _JSON_ROWS.encode(part)
        if len(text) <= _ONE_STEP_CHARS or len(part) == 1:
            yield text
        else:
            half = len(part) // 2
            pending += [part[half:], part[:half]]  # the first half is popped first


def _cursor(conn):
    """The DBAPI cursor of a SQLAlchemy connection, inside its transaction."""
    return conn.connection.dbapi_connection.cursor()


def _sqlite_value(value: Any) -> Any:
    # the text SQLAlchemy's DateTime stores on SQLite (always with microseconds), so both read the same
    if isinstance(value, dt.datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S.%f")
    return value


def _sqlite_insert_json(cur, table: str, const: dict[str, Any], columns: dict[str, list], tail: str) -> None:
    """``INSERT ... SELECT`` of ``const`` and each row's ``columns`` from one JSON array bound to
    ``json_each(?)`` (one statement per part of ``_json_parts``, in order); ``tail`` ends the statement."""
    picks = ", ".join(f"json_extract(value, '$[{i}]')" for i in range(len(columns)))
    sql = (
        f"INSERT INTO {table} ({', '.join([*const, *columns])}) SELECT {', '.join('?' * len(const))}"
        f"{', ' if const else ''}{picks} FROM json_each(?) {tail}"
    )
    fixed = tuple(_sqlite_value(v) for v in const.values())
    for part in _json_parts(list(zip(*columns.values(), strict=True))):
        cur.execute(sql, (*fixed, part))


def _rounds(keys: Sequence[str]) -> Iterator[list[int]]:
    """Positions of ``keys`` in rounds of distinct keys, in order: one statement may touch a row once on
    PostgreSQL, where one statement per row touched a key twice (rare: a vendor answering a key twice)."""
    if len(set(keys)) == len(keys):
        yield list(range(len(keys)))
        return
    pending = list(range(len(keys)))
    while pending:
        seen: set[str] = set()
        now, later = [], []
        for i in pending:
            (later if keys[i] in seen else now).append(i)
            seen.add(keys[i])
        yield now
        pending = later


# per-key values (an update's ``error``) in at most this many groups go as one statement per group
_SQLITE_GROUPS = 8


def _sqlite_groups(keys: list[str], columns: dict[str, list]) -> list[tuple[tuple, list[str]]] | None:
    """The keys of an update as ``(per-key values, keys)`` groups, each a set of distinct keys that one
    ``record_key IN (json_each(?))`` statement updates at once (a fifth less time than a statement per
    row, and without the GIL); a key given twice goes in a later group, so it is updated twice in order,
    as row by row. None when the per-key values take more than ``_SQLITE_GROUPS`` groups."""
    groups: list[tuple[tuple, list[str]]] = []
    for positions in _rounds(keys):
        layer: dict[tuple, list[str]] = {}
        for i in positions:
            layer.setdefault(tuple(v[i] for v in columns.values()), []).append(keys[i])
        groups += layer.items()
        if len(groups) > _SQLITE_GROUPS:
            return None
    return groups


def _pg_type(values: list) -> str:
    sample = next((v for v in values if v is not None), "")
    if isinstance(sample, bool | int):
        return "integer[]"
    if isinstance(sample, dt.datetime):
        return "timestamp[]"
    return "text[]"


def lookup(conn, dialect: str, table: str, scope: tuple[str, str], keys: list[str]) -> dict[str, dict]:
    """``{key: {record_key, status, payload_hash, delivered_hash}}`` of the known ``keys`` of one sync."""
    found: dict[str, dict] = {}
    cols = ", ".join(LOOKUP_COLUMNS)
    cur = _cursor(conn)
    try:
        if dialect == "postgresql":
            sql = (
                f"SELECT {cols} FROM {table} WHERE destination = %s AND entity = %s "
                "AND record_key = ANY(%s::text[])"
            )
            step = _PG_ANY
        else:
            step = _SQLITE_IN
        for i in range(0, len(keys), step):
            part = keys[i : i + step]
            if dialect != "postgresql":
                sql = (
                    f"SELECT {cols} FROM {table} WHERE destination = ? AND entity = ? "
                    f"AND record_key IN ({','.join('?' * len(part))})"
                )
                cur.execute(sql, (*scope, *part))
            else:
                cur.execute(sql, (*scope, part))
            for row in cur.fetchall():
                found[row[0]] = dict(zip(LOOKUP_COLUMNS, row, strict=True))
    finally:
        cur.close()
    return found


def status_page(
    conn, dialect: str, table: str, scope: tuple[str, str], status: str, after: str, limit: int
) -> list[tuple]:
    """``(record_key, operation, payload_hash, payload, error)`` of the next ``limit`` records in ``status``
    after key ``after``, in key order (keyset paging through ``ix_sync_ledger_status``): plain tuples, as
    SQLAlchemy's rows cost a second of a million-record delivery."""
    mark = "%s" if dialect == "postgresql" else "?"
    sql = (
        f"SELECT record_key, operation, payload_hash, payload, error FROM {table} "
        f"WHERE destination = {mark} AND entity = {mark} AND status = {mark} AND record_key > {mark} "
        f"ORDER BY record_key LIMIT {int(limit)}"
    )
    cur = _cursor(conn)
    try:
        cur.execute(sql, (*scope, status, after))
        return cur.fetchall()
    finally:
        cur.close()


def upsert(
    conn,
    dialect: str,
    table: str,
    key_columns: Sequence[str],
    const: dict[str, Any],
    columns: dict[str, list],
    update: Sequence[str],
    *,
    one_step: bool = False,
) -> int:
    """Insert rows (``const`` values for every row plus one value per row of each of ``columns``), or update
    ``update`` of the rows already there (conflict on ``key_columns``); returns the rows written.

    ``one_step`` (SQLite; PostgreSQL's statement is one step already): the rows go as one JSON array bound to
    one ``INSERT ... SELECT ... FROM json_each(?)`` (a few when the array is very long: ``_json_parts``),
    which SQLite runs in one call without the GIL, for a caller on a thread beside busy Python code.
    ``executemany`` takes the GIL back after every row and, beside a thread that never lets go of it, waits
    up to the 5 ms switch interval each time: a million rows took 527 s beside a busy thread against 7.4 s
    alone, and the JSON statement 10.3 s against 10.1 s alone."""
    names = [*const, *columns]
    n = len(next(iter(columns.values()))) if columns else 0
    if not n:
        return 0
    conflict = ", ".join(key_columns)
    cur = _cursor(conn)
    try:
        if dialect == "postgresql":
            sets = ", ".join(f"{c} = EXCLUDED.{c}" for c in update)
            varying = list(columns)
            key = "record_key" if "record_key" in columns else varying[0]
            keys = columns[key]
            if len(set(keys)) != len(keys):  # the last of a key wins, as row by row
                last = {k: i for i, k in enumerate(keys)}
                keep = sorted(last.values())
                columns = {c: [v[i] for i in keep] for c, v in columns.items()}
            arrays = ", ".join(f"%s::{_pg_type(v)}" for v in columns.values())
            sql = (
                f"INSERT INTO {table} ({', '.join(names)}) SELECT {', '.join(['%s'] * len(const))}"
                f"{', ' if const else ''}{', '.join('u.' + c for c in varying)} "
                f"FROM unnest({arrays}) AS u({', '.join(varying)}) "
                f"ON CONFLICT ({conflict}) DO UPDATE SET {sets}"
            )
            cur.execute(sql, (*const.values(), *columns.values()))
        else:
            on_conflict = f"ON CONFLICT ({conflict}) DO UPDATE SET " + ", ".join(
                f"{c} = excluded.{c}" for c in update
            )
            if one_step:  # WHERE true: without it SQLite cannot parse the upsert after a SELECT
                _sqlite_insert_json(cur, table, const, columns, f"WHERE true {on_conflict}")
            else:
                fixed = tuple(_sqlite_value(v) for v in const.values())
                sql = f"INSERT INTO {table} ({', '.join(names)}) VALUES ({', '.join('?' * len(names))}) {on_conflict}"
                cur.executemany(sql, (fixed + row for row in zip(*columns.values(), strict=True)))
    finally:
        cur.close()
    return n


def update(
    conn,
    dialect: str,
    table: str,
    scope: tuple[str, str],
    keys: list[str],
    const: dict[str, Any],
    columns: dict[str, list] | None = None,
    expressions: Sequence[str] = (),
) -> int:
    """Set ``const`` values, per-key ``columns`` values and SQL ``expressions`` (``"attempts = attempts + 1"``)
    on the rows of these keys of one sync (absent keys are skipped, as an UPDATE skips them)."""
    columns = columns or {}
    if not keys:
        return 0
    cur = _cursor(conn)
    try:
        if dialect == "postgresql":
            sets = [f"{c} = %s" for c in const] + [f"{c} = u.{c}" for c in columns] + list(expressions)
            # expressions name the table's own columns: qualify them so u's cannot be meant
            sql = (
                f"UPDATE {table} AS t SET {', '.join(sets)} "
                f"FROM unnest(%s::text[]{''.join(f', %s::{_pg_type(v)}' for v in columns.values())}) "
                f"AS u(record_key{''.join(', ' + c for c in columns)}) "
                "WHERE t.destination = %s AND t.entity = %s AND t.record_key = u.record_key"
            )
            for positions in _rounds(keys):
                if len(positions) == len(keys):
                    values = [keys, *columns.values()]
                else:
                    values = [[v[i] for i in positions] for v in (keys, *columns.values())]
                cur.execute(sql, (*const.values(), *values, *scope))
        else:
            fixed = tuple(_sqlite_value(v) for v in const.values())
            sets = [f"{c} = ?" for c in (*const, *columns)] + list(expressions)
            groups = _sqlite_groups(keys, columns)
            if groups is None:  # many distinct per-key values (errors): one row at a time
                sql = (
                    f"UPDATE {table} SET {', '.join(sets)} "
                    "WHERE destination = ? AND entity = ? AND record_key = ?"
                )
                cur.executemany(
                    sql,
                    ((*fixed, *row[1:], *scope, row[0]) for row in zip(keys, *columns.values(), strict=True)),
                )
            else:
                sql = (
                    f"UPDATE {table} SET {', '.join(sets)} WHERE destination = ? AND entity = ? "
                    "AND record_key IN (SELECT value FROM json_each(?))"
                )
                for values, group in groups:
                    for part in _json_parts(group):
                        cur.execute(sql, (*fixed, *values, *scope, part))
    finally:
        cur.close()
    return len(keys)


def insert(conn, dialect: str, table: str, const: dict[str, Any], columns: dict[str, list]) -> int:
    """Plain inserts (events), in the order given: ids grow in that order on both stores."""
    names = [*const, *columns]
    n = len(next(iter(columns.values()))) if columns else 0
    if not n:
        return 0
    cur = _cursor(conn)
    try:
        if dialect == "postgresql":
            varying = list(columns)
            arrays = ", ".join(f"%s::{_pg_type(v)}" for v in columns.values())
            sql = (
                f"INSERT INTO {table} ({', '.join(names)}) SELECT {', '.join(['%s'] * len(const))}"
                f"{', ' if const else ''}{', '.join('u.' + c for c in varying)} "
                f"FROM unnest({arrays}) WITH ORDINALITY AS u({', '.join(varying)}, n) ORDER BY u.n"
            )
            cur.execute(sql, (*const.values(), *columns.values()))
        else:  # read in order (ids grow as given): a sixth less time than a row at a time
            _sqlite_insert_json(cur, table, const, columns, "ORDER BY key")
    finally:
        cur.close()
    return n


def analyze(conn, dialect: str, table: str) -> None:
    """Refresh the planner's statistics after a bulk write: PostgreSQL plans a lookup of 1,000 keys in a
    table it believes empty (no autovacuum, or not yet) as a scan of every row."""
    cur = _cursor(conn)
    try:
        if dialect == "postgresql":
            cur.execute(f"ANALYZE {table}")
        else:
            cur.execute("PRAGMA analysis_limit = 1000")
            cur.execute("PRAGMA optimize")
    finally:
        cur.close()
