"""The floor for extract + validate: the same mapping and the same suite as plain DuckDB SQL, no Python per row.

``floor_seconds`` runs, in a fresh process, DuckDB's ``COPY`` of the mapping to a staged Parquet file and then
one ``COPY`` of the quarantine (every row that breaks a rule of the suite, or whose key is missing or
superseded by a newer row, with the rules it broke and the whole row) to a JSON-lines file. The suite is
translated rule by rule (``rule_sql``) with Great Expectations' meaning (a rule other than not-null skips
NULLs; deleted rows only need a key). What it leaves out, the engine does on top: the ledger (state store)
and Airflow's task machinery. ``bench_extract_validate`` prints it beside the engine, so the gap to COPY
splits into what validating costs at all (floor - COPY) and what the engine adds (engine - floor).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

FLOOR_CODE = """
import json, sys, time, duckdb
sys.path.insert(0, sys.argv[6])
from floor_sql import quarantine_sql
mapping, db, folder, suite, parameters = sys.argv[1:6]
con = duckdb.connect(db, read_only=True)
started = time.monotonic()
con.execute(f"COPY (\\n{mapping}\\n) TO '{folder}/staged.parquet' (FORMAT parquet, COMPRESSION lz4)")
copied = time.monotonic()
sql = quarantine_sql(f"{folder}/staged.parquet", json.loads(open(suite).read())["expectations"], json.loads(parameters))
con.execute(f"COPY ({sql}) TO '{folder}/quarantine.jsonl' (FORMAT json)")
done = time.monotonic()
rejected = con.execute(f"SELECT count(*) FROM read_json('{folder}/quarantine.jsonl')").fetchone()[0]
print(json.dumps({"copy_s": copied - started, "validate_s": done - copied, "rejected": rejected}))
"""


def _literal(value, parameters: dict) -> str:
    if isinstance(value, dict) and "$PARAMETER" in value:
        value = parameters[value["$PARAMETER"]]
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    return repr(value)


def rule_sql(expectation: dict, parameters: dict) -> tuple[str, str]:
    """``(label, SQL true when a live row breaks the rule)`` for one suite entry."""
    kind, kwargs = expectation["type"], expectation.get("kwargs", {})
    column = '"' + kwargs["column"].replace('"', '""') + '"'
    label = f"{(expectation.get('meta') or {}).get('rule') or kind} on {kwargs['column']}"
    if kind == "expect_column_values_to_not_be_null":
        return label, f"{column} IS NULL"
    if kind in ("expect_column_values_to_match_regex", "expect_column_values_to_not_match_regex"):
        match = f"regexp_matches({column}, {_literal(kwargs['regex'], parameters)})"
        return label, f"{column} IS NOT NULL AND {'NOT ' if 'not_match' not in kind else ''}{match}"
    if kind in ("expect_column_values_to_be_between", "expect_column_value_lengths_to_be_between"):
        value = f"length({column})" if "lengths" in kind else column
        bounds = (
            [f"{value} >= {_literal(kwargs['min_value'], parameters)}"]
            if kwargs.get("min_value") is not None
            else []
        )
        if kwargs.get("max_value") is not None:
            bounds.append(f"{value} <= {_literal(kwargs['max_value'], parameters)}")
        return label, f"{column} IS NOT NULL AND NOT ({' AND '.join(bounds)})"
    if kind == "expect_column_values_to_be_in_set":
        values = ", ".join(_literal(v, parameters) for v in kwargs["value_set"])
        return label, f"{column} IS NOT NULL AND {column} NOT IN ({values})"
    raise ValueError(f"no SQL for {kind} in the floor")


def quarantine_sql(staged: str, expectations: list[dict], parameters: dict) -> str:
    """One query: the quarantined rows of ``staged``, each with the rules it broke and the whole row."""
    checks = ["CASE WHEN _key IS NULL THEN 'key is required' END"]
    for expectation in expectations:
        label, broken = rule_sql(expectation, parameters)
        checks.append(
            f"CASE WHEN NOT _deleted AND ({broken}) THEN '{label.replace(chr(39), chr(39) * 2)}' END"
        )
    checks.append(
        "CASE WHEN _superseded THEN 'duplicate key: superseded by a newer row with the same key' END"
    )
    source = f"read_parquet('{staged}', file_row_number = true)"
    return f"""
        WITH dup AS (SELECT _key FROM {source} WHERE _key IS NOT NULL GROUP BY _key HAVING count(*) > 1),
        superseded AS (
            SELECT file_row_number FROM {source} SEMI JOIN dup USING (_key)
            QUALIFY row_number() OVER (PARTITION BY _key ORDER BY _updated_at DESC NULLS LAST, file_row_number DESC) > 1
        ),
        judged AS (
            SELECT list_filter([{", ".join(checks)}], lambda x: x IS NOT NULL) AS failures, *
            FROM (SELECT *, file_row_number IN (SELECT file_row_number FROM superseded) AS _superseded FROM {source})
        )
        SELECT _key AS record_key, failures, * EXCLUDE (failures, _superseded, file_row_number)
        FROM judged WHERE len(failures) > 0
    """


def floor_seconds(mapping: str, warehouse: Path, folder: Path, suite: Path, parameters: dict) -> dict:
    """COPY + the suite as SQL, timed in a fresh process: ``{"copy_s", "validate_s", "rejected"}``."""
    folder.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            FLOOR_CODE,
            mapping,
            str(warehouse),
            str(folder),
            str(suite),
            json.dumps(parameters),
            str(Path(__file__).resolve().parent),
        ],
        capture_output=True,
        text=True,
    )
    if done.returncode:
        raise RuntimeError(f"the floor's SQL failed: {done.stderr.strip()[-1500:]}")
    for name in ("staged.parquet", "quarantine.jsonl"):
        (folder / name).unlink(missing_ok=True)
    return json.loads(done.stdout.strip().splitlines()[-1])
