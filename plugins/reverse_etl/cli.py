"""Create the state store, and ask it what happened, without the Airflow UI.

    python -m reverse_etl.cli init                              # create (or adopt) the store of retl_state
    python -m reverse_etl.cli --state .airflow/retl/state.db init
    python -m reverse_etl.cli --state .airflow/retl/state.db why voucherify customers 42
    python -m reverse_etl.cli --state postgresql://user@host/db runs voucherify_sync
    python -m reverse_etl.cli failed voucherify orders          # uses the Airflow connection retl_state
    python -m reverse_etl.cli salesmanago-contact ann@example.com  # what SALESmanago holds (Data Talks)
    python -m reverse_etl.cli salesmanago-contact --sm-id 5b1c...  # the same by SALESmanago's contact id
    python -m reverse_etl.cli reconcile voucherify customers [--window-start 2026-01-01 --window-end ...]
        [--dry-run]    # after a lost state store: record delivered what the vendor already holds

``--state`` takes a SQLite file or a SQLAlchemy URL; without it the ``retl_state`` Airflow connection is used.
"""

from __future__ import annotations

import argparse
import json
import sys


def _url(state: str | None) -> str | None:
    if not state:
        return None
    return state if "://" in state else f"sqlite:///{state}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="reverse_etl.cli", description=__doc__.splitlines()[0])
    parser.add_argument("--state", help="SQLite file or SQLAlchemy URL of the state store")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser(
        "init",
        help="create the state store (or adopt one from an earlier version); a delivery never creates it",
    )
    why = sub.add_parser("why", help="current status and full history of one record")
    why.add_argument("destination")
    why.add_argument("entity")
    why.add_argument("key")
    runs = sub.add_parser("runs", help="the latest load reports of a DAG")
    runs.add_argument("dag_id")
    runs.add_argument("--limit", type=int, default=10)
    failed = sub.add_parser("failed", help="records the vendor refused or the checks rejected, with reasons")
    failed.add_argument("destination")
    failed.add_argument("entity")
    failed.add_argument("--limit", type=int, default=50)
    contact = sub.add_parser(
        "salesmanago-contact",
        help="what SALESmanago holds for an email (GET /v1/contact_by_email) or an sm_id (--sm-id)",
    )
    contact.add_argument("email", nargs="?")
    contact.add_argument("--sm-id", help="SALESmanago's contact id (GET /v1/contact_by_sm_id, path inferred)")
    contact.add_argument("--conn-id", default="salesmanago_default")
    rec = sub.add_parser(
        "reconcile",
        help="read the vendor's records back and record delivered the ones it holds as we would send them "
        "(after a lost state store); sends nothing",
    )
    rec.add_argument("destination")
    rec.add_argument("entity")
    rec.add_argument("--window-start", help="ISO date-time (UTC); default: all time")
    rec.add_argument("--window-end", help="ISO date-time (UTC), exclusive; default: now")
    rec.add_argument("--dry-run", action="store_true", help="compare and report; write nothing")
    rec.add_argument("--conn-id", help="the vendor's Airflow connection (default: <vendor>_default)")
    rec.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="NAME=JSON",
        help="a DAG param the payloads depend on, as the runs set it (e.g. historical_import=true)",
    )
    args = parser.parse_args(argv)
    from reverse_etl.errors import SyncError

    try:
        return _run(parser, args)
    except SyncError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _run(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    if args.command == "init":
        return init(_url(args.state))
    if args.command == "reconcile":
        return reconcile(args, parser)
    if args.command == "salesmanago-contact":
        if bool(args.email) == bool(args.sm_id):
            parser.error("salesmanago-contact takes an EMAIL or --sm-id ID (one of them)")
        return salesmanago_contact(args.email, args.conn_id, _url(args.state), sm_id=args.sm_id)

    from sqlalchemy import select

    from reverse_etl.ledger import _engine, record_history, state_store_url

    url = _url(args.state) or state_store_url()
    if args.command == "why":
        history = record_history(args.destination, args.entity, args.key, url=url)
        if history["current"] is None:
            print(
                f"{args.destination}.{args.entity} {args.key}: never seen by this pipeline (not extracted in any "
                "synced window, or filtered out by the SQL mapping)."
            )
            return 1
        current = history["current"]
        print(
            f"{args.destination}.{args.entity} {args.key}: {current['status']}"
            + (f" - {current['error']}" if current["error"] else "")
        )
        print(
            f"  last run {current['last_run_id']}, attempts {current['attempts']}, updated {current['updated_at']}"
        )
        for event in history["events"]:
            print(
                f"  {event['at']}  {event['status']:<9} run {event['run_id']}"
                + (f"  {event['detail']}" if event["detail"] else "")
            )
        return 0
    engine, ledger, _, runs_table, _ = _engine(url)
    with engine.connect() as conn:
        if args.command == "runs":
            rows = conn.execute(
                select(runs_table)
                .where(runs_table.c.dag_id == args.dag_id)
                .order_by(runs_table.c.id.desc())
                .limit(args.limit)
            ).all()
            for row in rows:
                print(
                    json.dumps(
                        {
                            "run_id": row.run_id,
                            "entity": row.entity,
                            "status": row.status,
                            **json.loads(row.report or "{}"),
                        },
                        default=str,
                    )
                )
        else:
            rows = conn.execute(
                select(ledger.c.record_key, ledger.c.status, ledger.c.error)
                .where(
                    (ledger.c.destination == args.destination)
                    & (ledger.c.entity == args.entity)
                    & ledger.c.status.in_(["failed", "rejected"])
                )
                .limit(args.limit)
            ).all()
            for row in rows:
                print(f"{row.record_key}\t{row.status}\t{row.error}")
    return 0


def reconcile(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from reverse_etl.errors import SyncError
    from reverse_etl.ledger import state_store_url
    from reverse_etl.reconcile import run_command

    params = {}
    for item in args.param:
        name, sep, value = item.partition("=")
        if not sep:
            parser.error(f"--param takes NAME=JSON, got {item!r}")
        try:
            params[name] = json.loads(value)
        except ValueError:
            params[name] = value
    if args.window_end and not args.window_start:
        parser.error("--window-end needs --window-start")
    try:
        return run_command(
            args.destination,
            args.entity,
            window_start=args.window_start,
            window_end=args.window_end,
            dry_run=args.dry_run,
            conn_id=args.conn_id,
            params=params,
            url=_url(args.state) or state_store_url(),
        )
    except SyncError as exc:
        print(f"reconcile {args.destination} {args.entity}: {exc}", file=sys.stderr)
        return 2


def init(url: str | None) -> int:
    from reverse_etl.store import SCHEMA_VERSION, init_store

    done = init_store(url)
    what = {
        "initialised": "created a new, empty state store",
        "adopted": f"adopted the existing state store ({done['records']} records kept)",
        "upgraded": f"upgraded the state store to schema version {SCHEMA_VERSION} ({done['records']} records kept)",
        "unchanged": f"the state store is ready ({done['records']} records)",
    }[done["action"]]
    print(f"{done['store']}: {what}; deployment '{done['deployment']}', store id {done['store_id']}.")
    if done["action"] == "initialised":
        print(
            "If this deployment delivered before with another store, run "
            "`python -m reverse_etl.cli reconcile DESTINATION ENTITY` for each sync before the next live run."
        )
    return 0


def salesmanago_contact(email: str | None, conn_id: str, url: str | None, sm_id: str | None = None) -> int:
    """Did this customer arrive? SALESmanago's answer (by email, or by sm_id) next to the ledger's."""
    from reverse_etl.errors import SyncError
    from reverse_etl.hooks.datatalks import DataTalksHook
    from reverse_etl.ledger import record_history, state_store_url

    try:
        hook = DataTalksHook(conn_id)
        try:
            found = hook.contact_by_sm_id(sm_id) if sm_id else hook.contact_by_email(email or "")
        finally:
            hook.flush_request_minutes()
    except SyncError as exc:
        print(f"cannot ask Data Talks: {exc}", file=sys.stderr)
        return 2
    if sm_id and found:  # the ledger is keyed by email: take it from SALESmanago's answer
        email = (found.get("contact") or {}).get("email") or email
    current = None
    if email:
        history = record_history("salesmanago", "contacts", email.lower(), url=url or state_store_url())
        current = history["current"]
    answer = {"email": email, "sm_id": sm_id, "at_salesmanago": found, "ledger": current}
    print(json.dumps(answer, default=str, ensure_ascii=False))
    return 0 if found else 1


if __name__ == "__main__":
    sys.exit(main())
