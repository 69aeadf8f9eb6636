"""Engine settings: connection ids and folders, read from the environment with embedded defaults.

Everything a deployment may change is an environment variable documented in docs/configuration.md, so
that the DAG files stay free of configuration.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def include_dir() -> Path:
    """Folder holding ``sql/`` and ``expectations/`` (the field mappings and the data-quality suites)."""
    return Path(os.environ.get("RETL_INCLUDE_DIR", REPO_ROOT / "include"))


def shown(path: Path) -> str:
    """A file of the include folder as operators know it (``include/sql/voucherify/customers.sql``, with
    ``include/`` standing for RETL_INCLUDE_DIR); any other path in full."""
    try:
        return f"include/{Path(path).relative_to(include_dir()).as_posix()}"
    except ValueError:
        return str(path)


def warehouse_conn_id() -> str:
    return os.environ.get("RETL_WAREHOUSE_CONN_ID", "retl_warehouse")


def state_conn_id() -> str:
    return os.environ.get("RETL_STATE_CONN_ID", "retl_state")


def deployment() -> str:
    """Name of this deployment, written into the state store by ``init``: a run refuses another's store."""
    return os.environ.get("RETL_DEPLOYMENT") or "default"


def airflow_home() -> Path:
    return Path(os.environ.get("AIRFLOW_HOME", Path.home() / "airflow"))


def staging_url() -> str:
    """Root of the staging area: any fsspec URL (``s3://bucket/retl``); a local folder by default."""
    return os.environ.get("RETL_STAGING_URL") or (airflow_home() / "retl" / "staging").as_uri()


def chunk_rows() -> int:
    """Rows per chunk when streaming from the warehouse and validating: bounds memory per task."""
    return int(os.environ.get("RETL_CHUNK_ROWS", "50000"))


def validate_memory() -> str:
    """DuckDB's memory limit in validate: Great Expectations' queries, then the quarantined rows and their
    lines, sorted 20,000 at a time (``gx_duckdb.WINDOW_ROWS``): very wide rows may need more. Checked here
    so that a typo names the variable instead of failing inside DuckDB."""
    value = os.environ.get("RETL_VALIDATE_MEMORY", "256MB").strip()
    if not re.fullmatch(r"\d+(\.\d+)?\s*(KB|MB|GB|TB|KiB|MiB|GiB|TiB)", value, re.IGNORECASE):
        from reverse_etl.errors import ConfigError

        raise ConfigError(
            f"RETL_VALIDATE_MEMORY={value!r} is not a memory size: give a number and a unit, e.g. 512MB or 2GB."
        )
    return value


def lease_seconds() -> float:
    """How long a load's claim on its sync outlives its last sign of life (a crashed task's claim expires)."""
    return float(os.environ.get("RETL_LEASE_SECONDS", "300"))


def lease_wait_seconds() -> float:
    """How long a load waits for another load of the same sync (a backfill, say) before failing."""
    return float(os.environ.get("RETL_LEASE_WAIT_SECONDS", "3600"))


def staging_retention_days() -> float:
    """Run folders in staging (extracts, valid rows, quarantine files) older than this are deleted."""
    return float(os.environ.get("RETL_STAGING_RETENTION_DAYS", "14"))


def export_conn_id() -> str:
    """Warehouse connection that vendor exports are loaded into (needs write access); the source by default."""
    return os.environ.get("RETL_EXPORT_CONN_ID") or warehouse_conn_id()


def worker_hostname() -> str:
    """Airflow's ``[core] hostname_callable`` for workers that share a host (``make stack``): the name in
    ``RETL_WORKER_NAME``, else the host's, so task instances say which worker ran them."""
    import socket

    return os.environ.get("RETL_WORKER_NAME") or socket.getfqdn()
