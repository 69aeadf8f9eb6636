"""The quarantine's line format, written by Python (GX's pandas engine) or by DuckDB (its SQL engine).

One JSON object per rejected row, keys in this order, Python's spacing (``", "``, ``": "``)::

    {"record_key": ..., "reason": "<rule> on <column>: <value as JSON, 120 characters at most>; ...",
     "failures": [{"expectation": ..., "column": ..., "value": ..., "rule": ...}, ...], "row": {...}}

The failures come in the suite's order, then the superseded-duplicate entry, or the missing-key entry
for a row that broke nothing else (a deleted row without a key). With DuckDB the lines are built in the
rows query, so a million rows' rejects never pass through Python one by one: the fixed parts of each
failure are encoded here by Python's encoder and only the values are DuckDB's ``to_json``, which writes
text as Python's ``json.dumps(..., ensure_ascii=False)`` does, except that it spells control characters'
escapes in capitals (``\\u001F``). The whole row is DuckDB's JSON in both cases (``gx_duckdb``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import NamedTuple

from reverse_etl.gx_suite import KEY_NOT_NULL

SUPERSEDED_RULE = "duplicate key: superseded by a newer row with the same key"
VALUE_CHARS = 120  # of a value's JSON in the reason
SUPERSEDED = {"expectation": "unique_key", "column": "_key", "value": None, "rule": SUPERSEDED_RULE}
NO_KEY = {"expectation": KEY_NOT_NULL["type"], "column": "_key", "value": None, "rule": None}

_encode = json.JSONEncoder(ensure_ascii=False, default=str).encode


class Rejected(NamedTuple):
    """One quarantined row as validate needs it, whichever engine found it."""

    position: int  # in the staged file
    key: object
    deleted: bool
    superseded: bool  # a newer row has the key: the ledger hears of the newer one only
    rules: tuple[tuple[str, object], ...]  # ``rule_of`` each failure, in the line's order
    line: str  # the quarantine line, without its newline


def rule_label(failure: dict) -> str:
    """What a broken rule is called on the page and in the ledger: the suite's words and the column."""
    return f"{failure.get('rule') or failure['expectation']} on {failure['column']}"


def rule_of(failure: dict) -> tuple[str, object]:
    """``(label, column)`` of a failure, as rules are counted (``counted_column``)."""
    return rule_label(failure), counted_column(failure["column"])


def counted_column(column: object) -> object:
    """A multi-column rule's ``column_list`` as a tuple, so that its failures can be counted."""
    return tuple(column) if isinstance(column, list) else column


def describe(failures: list[dict]) -> str:
    """The quarantine's reason: every rule the row broke, with its value (the ledger's: ``ledger_reason``)."""
    return "; ".join(f"{rule_label(f)}: {_encode(f['value'])[:VALUE_CHARS]}" for f in failures)


def ledger_reason(labels: Iterable[str]) -> str:
    """The ledger's reason: the rules broken, each once, without values (the store keeps no bad data)."""
    return "; ".join(dict.fromkeys(labels))


def complete(failures: list[dict], superseded_key: object | None) -> list[dict]:
    """The suite's failures plus the superseded entry, or the missing-key entry when there is nothing."""
    if superseded_key is not None:
        failures.append({**SUPERSEDED, "value": superseded_key})
    if not failures:
        failures.append(dict(NO_KEY))
    return failures


def line(key: object, failures: list[dict], row: dict | str) -> str:
    """One line in Python; ``row`` as a dict, or as JSON text already."""
    head = {"record_key": key, "reason": describe(failures), "failures": failures}
    if isinstance(row, str):
        return _encode(head)[:-1] + ', "row": ' + row + "}"
    return _encode({**head, "row": row})


# -- the same lines in DuckDB SQL ---------------------------------------------------------------------


def _sql_text(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _json_sql(expression: str) -> str:
    """A value's JSON text in DuckDB, ``null`` for NULL."""
    return f"coalesce(to_json({expression})::VARCHAR, 'null')"


def _texts_sql(texts: list[str]) -> str:
    return "([" + ", ".join(_sql_text(t) for t in texts) + "]::VARCHAR[])"


def _fixed_parts(failure: dict) -> tuple[str, str, str]:
    """What Python writes of a failure around its value: the object before and after the value's JSON,
    and the reason's label."""
    marker = '"value": '
    before, after = _encode({**failure, "value": None}).split(marker + "null", 1)
    return before + marker, after, rule_label(failure) + ": "


def _failure_sql(failure: dict, value_json: str) -> tuple[str, str]:
    """``(object, reason part)`` of one failure as DuckDB expressions, its value's JSON being ``value_json``."""
    before, after, label = (_sql_text(t) for t in _fixed_parts(failure))
    return f"{before} || {value_json} || {after}", f"{label} || left({value_json}, {VALUE_CHARS})"


def line_sql(key: str, ordinals: str, values: str, superseded_key: str, row: str, failures: dict) -> str:
    """The whole line as a DuckDB expression over the columns named: ``ordinals`` / ``values``: the rules
    a row broke (suite ordinals, ascending; NULL for none) and their values' JSON text; ``superseded_key``:
    the key when a newer row has it, else NULL; ``row``: the row's JSON text. ``failures``: ordinal -> the
    fixed fields of a failure of that rule. Python writes every fixed part (``_fixed_parts``) once; DuckDB
    looks them up by ordinal and puts the values in."""
    fixed = [
        _fixed_parts(failures[o]) if o in failures else ("", "", "")
        for o in range(max(failures, default=-1) + 1)
    ]
    before, after, label = (_texts_sql([f[i] for f in fixed]) for i in range(3))
    value = f"coalesce({values}[i], 'null')"
    each = f"list_transform(coalesce({ordinals}, []), lambda o, i: "
    suite = (
        f"{each}{before}[o + 1] || {value} || {after}[o + 1])",
        f"{each}{label}[o + 1] || left({value}, {VALUE_CHARS}))",
    )
    superseded = _failure_sql(SUPERSEDED, _json_sql(superseded_key))
    no_key = _failure_sql(NO_KEY, "'null'")
    # The suite's failures, then the superseded entry; a row with neither (a deleted row without a key)
    # gets the missing-key entry.
    objects, parts = (
        f"CASE WHEN {ordinals} IS NULL AND {superseded_key} IS NULL THEN [{no_key[i]}] "
        f"WHEN {superseded_key} IS NULL THEN {suite[i]} ELSE list_append({suite[i]}, {superseded[i]}) END"
        for i in range(2)
    )
    return (
        f"""'{{"record_key": ' || {_json_sql(key)} || ', "reason": ' || """
        f"""to_json(array_to_string({parts}, '; '))::VARCHAR || """
        f"""', "failures": [' || array_to_string({objects}, ', ') || '], "row": ' || {row} || '}}'"""
    )
