"""Turn a mapped row into a vendor payload, and hash it so unchanged records can be skipped.

The SQL mapping names payload fields; ``a__b`` nests as ``{"a": {"b": ...}}``; columns starting with ``_``
are meta columns and never sent; ``x__json`` holds JSON text (arrays built in SQL) sent as ``x``. NULL means "not given" and is left out, so a NULL in the warehouse never
wipes a field at the vendor.
"""

from __future__ import annotations

import datetime as dt
import decimal
import functools
import hashlib
import json
from json.encoder import c_make_encoder, encode_basestring
from typing import Any

NEST = "__"
JSON_SUFFIX = "__json"


_AS_IS = frozenset((str, int, float, bool))  # JSON-ready already: most values of most rows


def _plain(value: Any) -> Any:
    if type(value) in _AS_IS:
        return value
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:  # naive means UTC: the same text as through astimezone, a third the cost
            return value.isoformat() + "Z"
        return value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items() if v is not None}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


@functools.lru_cache(maxsize=4096)
def _column(column: str) -> tuple[tuple[str, ...], str, bool] | None:
    """Where a column goes in the payload, ``(parents, leaf, holds JSON)``; None for a meta column. Worked
    out once per column name, not once per row."""
    if column.startswith("_"):
        return None
    is_json = column.endswith(JSON_SUFFIX)
    *parents, leaf = column.removesuffix(JSON_SUFFIX).split(NEST)
    return tuple(parents), leaf, is_json


@functools.lru_cache(maxsize=256)
def _builder(columns: tuple[str, ...]):
    """A function that builds the payload of rows of this shape, written out once per shape: the rows of a
    chunk share one, and a straight run of statements per column took half the time of a loop over the
    columns (parents, leaf, JSON flag unpacked for every value of every row)."""
    lines = ["def build(row):", "    payload = {}"]
    for column in columns:
        where = _column(column)
        if where is None:
            continue
        parents, leaf, is_json = where
        lines.append(f"    v = row[{column!r}]")
        lines.append("    if v is not None:")
        if is_json:
            lines.append("        if isinstance(v, str):")
            lines.append("            v = _loads(v)")
        target = "payload" + "".join(f".setdefault({parent!r}, {{}})" for parent in parents)
        lines.append(f"        {target}[{leaf!r}] = v if type(v) in _AS_IS else _plain(v)")
    lines.append("    return payload")
    scope = {"_AS_IS": _AS_IS, "_plain": _plain, "_loads": json.loads}
    exec("\n".join(lines), scope)  # column names go in as repr() literals: nothing of the data runs
    return scope["build"]


def row_to_payload(row: dict) -> dict:
    """Nest ``a__b`` columns, drop meta columns and NULLs, make dates JSON-ready."""
    return _builder(tuple(row))(row)


_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _one_encoder():
    """``_ENCODER.encode`` without its per-call set-up: ``JSONEncoder.encode`` builds a new C encoder (and
    a float formatter and a circular-reference memo) for every call, which was a third of encoding a
    million small payloads (5.0 s against 3.4 s). Built once here with the same settings, so the text is
    the same byte for byte (tests/unit/test_payload_window.py compares them). No circular-reference memo:
    payloads are built from rows and cannot contain themselves."""
    if c_make_encoder is None:  # a Python without the json C accelerator
        return _ENCODER.encode
    e = _ENCODER
    encoder = c_make_encoder(
        None, e.default, encode_basestring, None, e.key_separator, e.item_separator, True, False, True
    )
    return lambda payload: "".join(encoder(payload, 0))


_encode = _one_encoder()


def canonical_json(payload: dict) -> str:
    return _encode(payload)


def payload_hash(payload: dict) -> str:
    return serialise(payload)[1]


def serialise(payload: dict) -> tuple[str, str]:
    """``(canonical JSON, its SHA-256)`` from one serialisation: the plan stores the text and compares the
    hash, and serialising twice was a third of planning a million records."""
    text = _encode(payload)
    return text, hashlib.sha256(text.encode("utf-8")).hexdigest()
