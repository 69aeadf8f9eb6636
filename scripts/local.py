"""Shared by the demo and the UI launcher: sample warehouse, sandbox processes, environment, setup.

Everything lands under ``RETL_LOCAL_DIR`` (the repository by default): ``.airflow/`` (Airflow's home, the
state store, the sandboxes' files) and ``data/warehouse.duckdb``.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "plugins")]

from procs import spawn  # noqa: E402

from sandbox.env import (  # noqa: E402
    SALESFIRE_LISTS,
    SALESFIRE_SITE,
    airflow_env,
    conn_json,
    connections_env,
)

BASE = Path(os.environ.get("RETL_LOCAL_DIR") or REPO).resolve()
HOME = BASE / ".airflow"
WAREHOUSE = BASE / "data" / "warehouse.duckdb"
# one per vendor account
POOLS = (
    "voucherify_default",
    "salesfire_default",
    "connectif_default",
    "splio_referral_default",
    "salesmanago_default",
)


def say(message: str) -> None:
    print(f"==> {message}", flush=True)


def shown(path: Path) -> str:
    """``path`` for messages: relative to the repository when inside it."""
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def ensure_warehouse(customers: int = 10_000) -> Path:
    if not WAREHOUSE.exists():
        say(f"building the sample warehouse ({customers:,} customers) in {shown(WAREHOUSE)}")
        WAREHOUSE.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [
                sys.executable,
                "-m",
                "sandbox.warehouse",
                "--path",
                str(WAREHOUSE),
                "--customers",
                str(customers),
                "--seed",
                "42",
            ],
            check=True,
            cwd=REPO,
        )
    return WAREHOUSE


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_voucherify(port: int, limit: int, window: float) -> tuple[subprocess.Popen, str]:
    args = ["--limit", str(limit), "--window", str(window)]
    return start_sandbox("voucherify", port, args)


def start_salesfire(port: int) -> tuple[subprocess.Popen, str]:
    args = [
        arg
        for name, secret in SALESFIRE_LISTS.items()
        for arg in ("--list", f"{SALESFIRE_SITE}/{name}={secret}")
    ]
    return start_sandbox("salesfire", port, args)


def start_connectif(port: int, limit: int, window: float) -> tuple[subprocess.Popen, str]:
    return start_sandbox("connectif", port, ["--limit", str(limit), "--window", str(window)])


@contextlib.contextmanager
def _killed_on_error(proc: subprocess.Popen):
    """A sandbox that fails to start, or whose start is interrupted (Ctrl-C), is not left running."""
    try:
        yield
    except BaseException:
        proc.kill()
        proc.wait()
        raise


def start_sftp(port: int) -> tuple[subprocess.Popen, dict]:
    """The SFTP sandbox standing in for Splio's server; returns its connection fields."""
    import json

    root = HOME / "retl" / "splio-sftp"
    proc = spawn(
        [sys.executable, "-m", "sandbox.sftp", "--root", str(root), "--port", str(port)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    with _killed_on_error(proc):
        line = proc.stdout.readline()
        if not line:
            raise SystemExit("the SFTP sandbox did not start (see the message above)")
        return proc, json.loads(line)


def start_sandbox(vendor: str, port: int, args: list[str]) -> tuple[subprocess.Popen, str]:
    """Start ``python -m sandbox.<vendor>`` on ``port`` and wait until it accepts connections."""
    url = f"http://127.0.0.1:{port}"
    proc = spawn(
        [sys.executable, "-m", f"sandbox.{vendor}", "--port", str(port), *args],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    with _killed_on_error(proc):
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    return proc, url
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"the {vendor} sandbox did not start (see the message above)") from None
                time.sleep(0.2)


def environment(
    voucherify_url: str,
    requests_per_minute: int,
    salesfire_url: str | None = None,
    connectif_url: str | None = None,
    splio_sftp: dict | None = None,
    salesmanago_url: str | None = None,
) -> dict[str, str]:
    env = os.environ.copy()
    env.update(airflow_env(HOME))
    env.update(
        connections_env(
            warehouse=str(WAREHOUSE),
            state=str(HOME / "retl" / "state.db"),
            voucherify_url=voucherify_url,
            voucherify_extra={"requests_per_minute": requests_per_minute},
            salesfire_url=salesfire_url,
            connectif_url=connectif_url,
            splio_sftp=splio_sftp,
            salesmanago_url=salesmanago_url,
        )
    )
    # Connectif exports go to a DuckDB file of their own: the sample warehouse stays read-only.
    env["AIRFLOW_CONN_RETL_EXPORTS"] = conn_json("duckdb", host=str(HOME / "retl" / "exports.duckdb"))
    env["RETL_EXPORT_CONN_ID"] = "retl_exports"
    env["RETL_RATE_LIMIT_URL"] = f"sqlite:///{HOME / 'retl' / 'ratelimit.sqlite'}"
    return env


def migrate(env: dict[str, str], log) -> None:
    """Airflow's metadata database, the vendor pools, and the state store: the one-off setup of a deployment."""
    say(f"creating the state store ({shown(HOME / 'retl' / 'state.db')}): python -m reverse_etl.cli init")
    subprocess.run(
        [sys.executable, "-m", "reverse_etl.cli", "init"],
        env=env,
        cwd=REPO,
        check=True,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    say(f"preparing the Airflow metadata database ({shown(HOME / 'airflow.db')})")
    subprocess.run(
        [sys.executable, "-m", "airflow", "db", "migrate"],
        env=env,
        check=True,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    for pool in POOLS:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "airflow",
                "pools",
                "set",
                pool,
                "2",
                "vendor account: tasks that call its API",
            ],
            env=env,
            check=True,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
