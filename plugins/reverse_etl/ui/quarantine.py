"""The quarantine of a sync's latest run (or a named one), for the page: the broken rules with their counts
and a few sample rows, personal fields masked unless the caller may and does ask for them.

The counts come from the run's report (validate counted every row); the samples from the first lines of
its ``quarantine.jsonl``, read until every rule has its samples or ``SCAN_LINES`` lines have been read, so
a quarantine of millions of rows costs the page no more than a small one. Which fields are personal, the
suite says (``meta.personal_fields``, ``_key`` when the key is an email); a suite that does not say has
every value masked.
"""

from __future__ import annotations

import json
import re
from typing import Any

from sqlalchemy import select

from reverse_etl.store import open_store

SAMPLES_PER_RULE = 3
SCAN_LINES = 20_000
SHOWN_CHARS = 200
RUNS_SEARCHED = 50  # the latest run with a quarantine is among the sync's last runs
EMAIL = re.compile(r"[\w.%+'-]+@[\w-]+(?:\.[\w-]+)+")


def mask(value: Any) -> Any:
    """``j***@example.com`` for an email, the first character and ``***`` for anything else; None stays
    None (a missing value is often the reason the row was rejected)."""
    if value is None:
        return None
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    if "@" in text:
        local, _, domain = text.rpartition("@")
        return f"{local[:1]}***@{domain}"
    return f"{text[:1]}***" if len(text) > 2 else "***"


def mask_emails(text: str | None) -> str | None:
    """Email addresses inside free text (a vendor's error message may quote the one it refused)."""
    return EMAIL.sub(lambda m: mask(m.group(0)), text) if text else text


class Masker:
    """Masks the personal fields of one entity (all fields when the suite names none)."""

    def __init__(self, personal: frozenset[str] | None, reveal: bool):
        self.personal = personal
        self.reveal = reveal

    def is_personal(self, column: str | list[str]) -> bool:
        """A multi-column rule's values are personal when one of its columns is."""
        columns = column if isinstance(column, list | tuple) else [column]
        return self.personal is None or any(c in self.personal for c in columns)

    def value(self, column: str, value: Any) -> Any:
        return value if self.reveal or not self.is_personal(column) else mask(value)

    def key(self, key: Any) -> Any:
        return self.value("_key", key)

    def row(self, row: dict) -> dict:
        return {column: _short(self.value(column, value)) for column, value in row.items()}


def _short(value: Any) -> Any:
    """A sample row is for reading: long texts (product lists as JSON) are cut."""
    return value[:SHOWN_CHARS] + "\u2026" if isinstance(value, str) and len(value) > SHOWN_CHARS else value


def masker(destination: str, entity: str, reveal: bool) -> Masker:
    from reverse_etl.errors import ConfigError
    from reverse_etl.validate import personal_fields

    try:
        personal = personal_fields(destination, entity)
    except ConfigError:  # no suite (an entity since removed): nothing is known, everything is personal
        personal = None
    return Masker(personal, reveal)


def _latest_with_quarantine(url: str, destination: str, entity: str, run_id: str | None):
    engine, _, _, runs, _ = open_store(url)
    query = select(runs.c.dag_id, runs.c.run_id, runs.c.report).where(
        (runs.c.destination == destination) & (runs.c.entity == entity)
    )
    if run_id:
        query = query.where(runs.c.run_id == run_id)
    with engine.connect() as conn:
        rows = conn.execute(query.order_by(runs.c.id.desc()).limit(RUNS_SEARCHED)).all()
    for dag_id, found_run, report in rows:
        report = json.loads(report or "{}")
        if report.get("rejected") and report.get("quarantine"):
            return dag_id, found_run, report
    return None


def _samples(location: str, wanted: set[tuple[str, str]], masked: Masker) -> tuple[dict, dict, int]:
    """Up to SAMPLES_PER_RULE masked rows per (rule, column), rules counted over the lines read."""
    from reverse_etl.quarantine_lines import rule_of
    from reverse_etl.staging import as_path

    samples: dict[tuple[str, str], list[dict]] = {}
    counted: dict[tuple[str, str], int] = {}
    read = 0
    with as_path(location).open("r", encoding="utf-8") as lines:
        for line in lines:
            read += 1
            entry = json.loads(line)
            for failure in entry.get("failures", []):
                rule = rule_of(failure)
                counted[rule] = counted.get(rule, 0) + 1
                bucket = samples.setdefault(rule, [])
                if len(bucket) < SAMPLES_PER_RULE:
                    bucket.append(
                        {
                            "record_key": masked.key(entry.get("record_key")),
                            "value": masked.value(failure["column"], failure.get("value")),
                            "row": masked.row(entry.get("row") or {}),
                        }
                    )
            full = wanted and all(len(samples.get(rule, ())) >= SAMPLES_PER_RULE for rule in wanted)
            if full or read >= SCAN_LINES:
                break
    return samples, counted, read


def quarantine(url: str, destination: str, entity: str, run_id: str | None, reveal: bool) -> dict:
    """The rules a run's rejected rows broke, with counts and masked (or, when ``reveal``, plain) samples."""
    found = _latest_with_quarantine(url, destination, entity, run_id)
    answer: dict[str, Any] = {"destination": destination, "entity": entity, "run_id": run_id, "rules": []}
    if found is None:
        return {**answer, "rejected": 0, "location": None}
    from reverse_etl.quarantine_lines import counted_column

    dag_id, run_id, report = found
    masked = masker(destination, entity, reveal)
    answer.update(
        dag_id=dag_id,
        run_id=run_id,
        rejected=report["rejected"],
        location=report["quarantine"],
        masked=not reveal,
        personal_fields=sorted(masked.personal) if masked.personal is not None else None,
        airflow_url=f"/dags/{dag_id}/runs/{run_id}",
    )
    rules = report.get("quarantine_rules") or []  # written since validation counts them
    try:
        samples, counted, read = _samples(
            report["quarantine"], {(r["rule"], counted_column(r["column"])) for r in rules}, masked
        )
    except FileNotFoundError:
        from reverse_etl import settings

        answer["missing"] = (
            "the api-server cannot read the quarantine file: staging keeps run folders "
            f"{settings.staging_retention_days():g} days (RETL_STAGING_RETENTION_DAYS), and a local staging "
            "folder is seen only on its own host (set RETL_STAGING_URL to shared storage when tasks run elsewhere)"
        )
        samples, counted, read = {}, {}, 0
    if not rules:  # a run recorded before the report held the counts: count what was read
        rules = [
            {"rule": r, "column": c, "rows": n} for (r, c), n in sorted(counted.items(), key=lambda i: -i[1])
        ]
        answer["counted_lines"] = read
    answer["rules"] = [
        {**rule, "samples": samples.get((rule["rule"], counted_column(rule["column"])), [])} for rule in rules
    ]
    return answer
