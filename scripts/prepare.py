"""The one-off setup of a local deployment, in one process: the state store (what ``python -m
reverse_etl.cli init`` does), Airflow's metadata database (what ``airflow db migrate`` does; nothing to do
once it is at head) and one pool per vendor account (what ``airflow pools set`` does).

    python scripts/prepare.py     # AIRFLOW_HOME, AIRFLOW__DATABASE__SQL_ALCHEMY_CONN, AIRFLOW_CONN_RETL_STATE set

Why one process: each Airflow CLI call imports Airflow anew (about 3 s here), so the seven calls this
replaces took about 30 s; ``make demo`` runs it inside the process that then runs the DAGs.
"""

from __future__ import annotations

import sys

# one per vendor account: tasks that call its API share its slots
POOLS = (
    "voucherify_default",
    "salesfire_default",
    "connectif_default",
    "splio_referral_default",
    "salesmanago_default",
)
POOL_SLOTS = 2


def prepare() -> list[str]:
    """Create or upgrade what the runs need; idempotent. Returns one line per step, saying what it did."""
    from airflow.configuration import write_default_airflow_configuration_if_needed
    from airflow.models.pool import Pool
    from airflow.utils import db

    from reverse_etl.store import init_store

    # What every `airflow` command does first: without the file, the api-server and the scheduler of
    # make ui would each generate their own JWT secret, and every task would fail with "Invalid auth token".
    write_default_airflow_configuration_if_needed()
    store = init_store()
    done = [f"state store {store['store']}: {store['action']} ({store['records']} records)"]
    before = _revision()
    db.upgradedb()
    after = _revision()
    done.append(
        f"Airflow metadata database: {'at head, nothing to migrate' if before == after else 'migrated'}"
    )
    for pool in POOLS:
        Pool.create_or_update_pool(
            pool, POOL_SLOTS, "vendor account: tasks that call its API", include_deferred=False
        )
    done.append(f"pools: {', '.join(POOLS)} ({POOL_SLOTS} slots each)")
    return done


def _revision() -> str | None:
    """The metadata database's Alembic revision (None before the first migration)."""
    from airflow.settings import get_engine
    from alembic.migration import MigrationContext

    with get_engine().connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


if __name__ == "__main__":
    for line in prepare():
        print(line)
    sys.exit(0)
