"""Turn a mapped row into a vendor payload, and hash it so unchanged records can be skipped.

The SQL mapping names payload fields; ``a__b`` nests as ``{"a": {"b": ...}}``; columns starting with ``_``
are meta columns and never sent; ``x__json`` holds JSON text (arrays built in SQL) sent as ``x``. NULL means "not given" and is left out, so a NULL in the warehouse never
wipes a field at the vendor.
"""

from __future__ import annotations

import datetime as dt
import decimal
import hashlib
import json
from typing import Any

NEST = "__"
JSON_SUFFIX = "__json"


def _plain(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
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


def row_to_payload(row: dict) -> dict:
    """Nest ``a__b`` columns, drop meta columns and NULLs, make dates JSON-ready."""
    payload: dict[str, Any] = {}
    for column, value in row.items():
        if column.startswith("_") or value is None:
            continue
        if column.endswith(JSON_SUFFIX):
            column = column.removesuffix(JSON_SUFFIX)
            value = json.loads(value) if isinstance(value, str) else value
        target = payload
        *parents, leaf = column.split(NEST)
        for parent in parents:
            target = target.setdefault(parent, {})
        target[leaf] = _plain(value)
    return payload


def canonical_json(payload: dict) -> str:
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def payload_hash(payload: dict) -> str:
    return hashlib.sha256(canonical_json(payload).encode("utf-8")).hexdigest()
