"""The demo's combined report: what the runs did, what landed at each sandbox, the check that the two agree,
and what the vendors' real limits would mean; plain functions of the demo's result (a JSON-able dict), so
the README's copy is rendered from a recorded result by the same code (``scripts/readme_demo.py``).

Nothing here imports Airflow: the demo's own process stays light.
"""

from __future__ import annotations

import json
import textwrap
from collections.abc import Iterable
from pathlib import Path

# Each sandbox plays the destination named here, and holds these entities (its store's keys).
SANDBOX_OF = {
    "voucherify": "voucherify",
    "connectif": "connectif",
    "salesfire": "salesfire",
    "salesmanago": "datatalks",
    "splio_referral": "sftp",
}
# Requests per minute each destination allows (None: SFTP, no request limit), and where the figure comes from.
REAL_LIMITS = {
    "voucherify": (100, "Voucherify's Business plan (2,000 on Organization)"),
    "connectif": (100, "Connectif's documented limit per account"),
    "salesfire": (100, "our courtesy pace: Salesfire publishes none"),
    "salesmanago": (100, "our pace: Data Talks publishes none"),
    "splio_referral": (None, "one SFTP upload per window: no request limit"),
}
WIDTH = 110  # of the report's paragraphs
COLUMNS = ("extracted", "rejected", "unchanged", "sent", "failed", "requests")


def landed(destination: str, store: dict, stats: dict | None = None) -> dict[str, int]:
    """What a sandbox holds, per entity, from its ``/_sandbox/store`` and ``/_sandbox/stats`` (Splio: the
    SFTP folder's files as ``{name: {"status", "rows"}}``: the rows of imported files). Voucherify and
    SALESmanago create a customer (contact) for an order (event) of one they do not know: those are left
    out, as the customers (contacts) sync did not send them (see ``created_by_others``)."""
    if destination == "voucherify":
        counts = {entity: len(store[entity]) for entity in ("customers", "products", "orders")}
        counts["customers"] = (stats or {})["customers_upserted"]
        return counts
    if destination == "connectif":
        counts = {entity: len(store[entity]) for entity in ("contacts", "products", "purchases")}
        counts["coupons"] = sum(len(codes) for codes in store["coupons"].values())
        return counts
    if destination == "salesfire":
        return {"customers": sum(len(customers) for customers in store.values())}
    if destination == "salesmanago":
        counts = {entity: len(store[entity]) for entity in ("products", "events")}
        counts["contacts"] = sum(1 for c in store["contacts"].values() if c.get("_posts"))
        return counts
    if destination == "splio_referral":
        rows = sum(f["rows"] for f in store.values() if f["status"] == "imported")
        return {"referral_contacts": rows}
    raise ValueError(f"no sandbox for destination {destination!r}")


def created_by_others(destination: str, store: dict) -> str | None:
    """What the sandbox holds beyond what the syncs sent: customers made by orders, contacts by events."""
    if destination == "voucherify":
        return f"{len(store['customers']):,} customers in all: an order creates its customer"
    if destination == "salesmanago":
        return f"{len(store['contacts']):,} contacts in all: an event creates its contact"
    return None


def sent_per_entity(runs: Iterable[dict]) -> dict[str, dict[str, int]]:
    """What the runs' reports say they sent, per destination and entity, summed over the runs."""
    sent: dict[str, dict[str, int]] = {}
    for run in runs:
        for report in run["reports"]:
            entities = sent.setdefault(run["destination"], {})
            entities[report["entity"]] = entities.get(report["entity"], 0) + (report.get("sent") or 0)
    return sent


def check_landed(
    sent: dict[str, dict[str, int]], ledger: dict[str, dict[str, int]], at_sandbox: dict[str, dict[str, int]]
) -> list[str]:
    """One message per (destination, entity) where the reports' sent, the ledger's deliveries in these runs
    and what the sandbox holds disagree (a missing count is 0); empty when all three agree."""
    problems = []
    for destination in sorted(set(sent) | set(ledger) | set(at_sandbox)):
        entities = (
            set(sent.get(destination, {}))
            | set(ledger.get(destination, {}))
            | set(at_sandbox.get(destination, {}))
        )
        for entity in sorted(entities):
            counts = (
                sent.get(destination, {}).get(entity, 0),
                ledger.get(destination, {}).get(entity, 0),
                at_sandbox.get(destination, {}).get(entity, 0),
            )
            if len(set(counts)) > 1:
                problems.append(
                    f"{destination} {entity}: the runs report {counts[0]} sent, the ledger records "
                    f"{counts[1]} delivered, the {SANDBOX_OF.get(destination, destination)} sandbox "
                    f"holds {counts[2]}"
                )
    return problems


def minutes_at(requests: int, per_minute: int) -> str:
    if requests <= per_minute:
        return "within the first minute"
    minutes = requests / per_minute
    return f"about {minutes:.0f} minutes" if minutes >= 10 else f"about {minutes:.1f} minutes"


def _cell(report: dict, column: str) -> str:
    value = report.get("unchanged_skipped" if column == "unchanged" else column)
    return "-" if value is None else f"{value:,}"


def table(runs: list[dict]) -> list[str]:
    """The fixed-width table: one line per run and entity."""
    rows = [("destination", "run", "entity", *COLUMNS)]
    for run in runs:
        for report in sorted(run["reports"], key=lambda r: r["entity"]):
            cells = [_cell(report, column) for column in COLUMNS]
            rows.append((run["destination"], run["label"], report["entity"], *cells))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        "  ".join(
            cell.ljust(w) if i < 3 else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        ).rstrip()
        for row in rows
    ]


def shown(path: str, base: str) -> str:
    """A path of the result (relative to the local folder) as the reader should type it."""
    return path if not base else str(Path(base) / path)


def sandboxes_line(urls: dict[str, str], sftp_port: int) -> str:
    return (
        f"==> sandboxes: Voucherify {urls['voucherify']}, Connectif {urls['connectif']}, Salesfire "
        f"{urls['salesfire']}, Data Talks {urls['datatalks']}, Splio SFTP port {sftp_port}"
    )


def log_line(log: str) -> str:
    return f"==> six DAG runs in one process (dag.test); Airflow's log goes to {log}"


def done_line(result: dict, base: str) -> str:
    return (
        f"(done in {result['seconds']:.0f} s; the result as JSON: {shown(result['paths']['result'], base)})"
    )


def transcript(result: dict, base: str = "") -> str:
    """Everything the demo prints, from its result: the progress lines, the report, the last line."""
    lines = [
        sandboxes_line(result["sandboxes"]["urls"], result["sandboxes"]["sftp_port"]),
        log_line(shown(result["paths"]["log"], base)),
        *(f"==> {step}" for step in result["prepared"]),
        *(run_line(run) for run in result["runs"]),
        "",
        render(result, base),
        "",
        done_line(result, base),
    ]
    return "\n".join(lines)


def run_line(run: dict) -> str:
    window = f"[{run['window'][0]}, {run['window'][1]})"
    entities = run.get("entities")
    what = f"{run['dag_id']} {', '.join(entities)}" if entities else run["dag_id"]
    return f"==> {what} {window}: {run['state']} in {run['seconds']:g} s"


def render(result: dict, base: str = "") -> str:
    """The combined report (what the demo prints after its progress lines); ``base`` prefixes the local
    paths ("" when the local folder is the repository)."""
    runs = result["runs"]
    failed = [r for r in runs if r["state"] != "success"]
    state = "every run succeeded" if not failed else f"{len(failed)} of {len(runs)} runs FAILED"
    sections = [
        [
            f"Reverse ETL demo: {len(runs)} DAG runs over the sample warehouse, window "
            f"[{result['window'][0]}, {result['window'][1]}): {state}",
            "",
            *table(runs),
        ],
        _quarantine(result, base),
        _refused(result),
        _landed(result),
        _limits(result),
        _wrap(_rerun(result, base)),
        _next(result, base),
    ]
    return "\n\n".join("\n".join(section) for section in sections if section)


def _wrap(text: str, indent: str = "") -> list[str]:
    return textwrap.wrap(text, WIDTH, initial_indent=indent, subsequent_indent=indent, break_on_hyphens=False)


def _quarantine(result: dict, base: str) -> list[str]:
    staging = f"{result['paths']['staging']}/"
    found = [
        (r["rejected"], r["quarantine"].removeprefix(staging))
        for run in result["runs"]
        for r in run["reports"]
        if r.get("rejected") and r.get("quarantine")
    ]
    if not found:
        return []
    lines = [f"Quarantined rows, each with the rule it broke (never sent), under {shown(staging, base)}:"]
    return lines + [f"  {rows:>4}  {path}" for rows, path in found]


def _refused(result: dict) -> list[str]:
    if not result["refused"]:
        return []
    lines = ["Refused by the vendor (the ledger keeps each message; reverse_etl.cli failed lists them):"]
    for refused in result["refused"]:
        what = f"{refused['destination']} {refused['entity']}: {refused['failed']}, e.g. {refused['example']}"
        lines += _wrap(what, "  ")
    codes = " ".join(r["example"] or "" for r in result["refused"])
    if " E0101 " in codes or " E0102 " in codes:
        lines += _wrap(
            "Connectif refuses a purchase whose contact or product it does not hold (E0101, E0102): here "
            "contacts that broke a rule and products deleted in the warehouse.",
            "  ",
        )
    return lines


def _landed(result: dict) -> list[str]:
    lines = ["What landed at each sandbox:"]
    for destination in SANDBOX_OF:
        held = ", ".join(f"{entity} {n:,}" for entity, n in result["landed"].get(destination, {}).items())
        stats = result["sandbox_stats"].get(destination)
        if stats:
            traffic = f"{stats['requests']:,} requests, {stats['throttled']} answered 429"
        else:
            traffic = ", ".join(f"{name} {f['status']}" for name, f in result["sftp_files"].items())
        lines.append(f"  {destination:<15} {held or 'nothing'}; {traffic}")
        if stats and stats.get("besides"):
            lines.append(f"  {'':<15} ({stats['besides']})")
    if result["mismatches"]:
        lines.append("MISMATCH: what the sandboxes hold is not what the runs report and the ledger records:")
        lines += [f"  {problem}" for problem in result["mismatches"]]
    else:
        lines.append("  = what the runs report sent = what the ledger records delivered in these runs.")
    return lines


def _limits(result: dict) -> list[str]:
    lines = [
        f"At the vendors' limits these requests would take (here every sandbox allowed "
        f"{result['sandbox_limit']:,} a minute, so no run waited):"
    ]
    for destination, (per_minute, source) in REAL_LIMITS.items():
        stats = result["sandbox_stats"].get(destination)
        if per_minute is None or stats is None:
            lines.append(f"  {destination:<15} {source}")
            continue
        n = stats["requests"]
        wait = f"{minutes_at(n, per_minute)} at {per_minute}/minute" if n else "-"
        lines.append(f"  {destination:<15} {n:>6,} requests  {wait:<35} {source}")
    return lines


def _rerun(result: dict, base: str) -> str:
    state = shown(result["paths"]["state"], base)
    to_apis = sum(
        r.get("sent") or 0
        for run in result["runs"]
        if run["destination"] != "splio_referral"
        for r in run["reports"]
    )
    if to_apis == 0 and result["delivered_before"]:
        return (
            f"Nothing new went to the APIs: the state store ({state}) already held "
            f"{result['delivered_before']:,} deliveries from an earlier demo, and every record is unchanged "
            "since (the unchanged column). The sandboxes started empty and stayed so. Splio Referral's file "
            "is the window's whole delta, so the rerun rebuilt the same file and replaced it. "
            "`python scripts/demo.py --fresh` starts over."
        )
    return (
        f"The ledger is in {state}. Run `make demo` again: nothing new goes to the APIs (every record is "
        "unchanged since its delivery); Splio Referral's file for the window is rebuilt and replaced. "
        "`python scripts/demo.py --fresh` starts over."
    )


def _next(result: dict, base: str) -> list[str]:
    state = shown(result["paths"]["state"], base)
    home = shown(result["paths"]["airflow_home"], base)
    key = result.get("sample_key") or "<customer_id>"
    return [
        "Next:",
        "  make ui    # Airflow's UI on http://127.0.0.1:8080 with these runs and the Reverse ETL page; the",
        "             # sandboxes on 8010-8014 at 100 requests/minute",
        "  # a backfill (with make ui running): three daily runs, about 10 minutes at 100 requests/minute",
        f"  AIRFLOW_HOME={home} .venv/bin/airflow dags unpause salesfire_sync",
        f"  AIRFLOW_HOME={home} .venv/bin/airflow backfill create --dag-id salesfire_sync "
        "--from-date 2026-10-28 --to-date 2026-10-31",
        f"  # what happened to one record (customer {key} broke a rule)",
        f"  PYTHONPATH=plugins .venv/bin/python -m reverse_etl.cli --state {state} why voucherify customers {key}",
    ]


def counts(result: dict) -> dict:
    """The parts of a result that do not depend on timing: per run and entity the table's counts except
    requests (async polls vary), what landed, and the mismatches."""
    return {
        "runs": [
            {
                "dag_id": run["dag_id"],
                "label": run["label"],
                "state": run["state"],
                "reports": {
                    r["entity"]: {
                        c: r.get("unchanged_skipped" if c == "unchanged" else c) for c in COLUMNS[:-1]
                    }
                    for r in run["reports"]
                },
            }
            for run in result["runs"]
        ],
        "landed": result["landed"],
        "mismatches": result["mismatches"],
    }


def load(path: Path) -> dict:
    return json.loads(path.read_text())
