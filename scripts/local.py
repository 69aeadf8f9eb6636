"""Shared by the demo and the UI launcher: sample warehouse, sandbox processes, environment, setup.

Everything lands under ``RETL_LOCAL_DIR`` (the repository by default): ``.airflow/`` (Airflow's home, the
state store, the sandboxes' files) and ``data/warehouse.duckdb``.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
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
SFTP_ROOT = HOME / "retl" / "splio-sftp"  # what the Splio SFTP sandbox serves


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


@dataclass
class Sandboxes:
    """The sandboxes as processes (stopped with ``procs.stop``): ``urls`` of the HTTP ones by name,
    ``sftp`` the Splio SFTP connection's fields."""

    procs: list[subprocess.Popen] = field(default_factory=list)
    urls: dict[str, str] = field(default_factory=dict)
    sftp: dict = field(default_factory=dict)


def sandbox_args(name: str, limit: int, window: float) -> list[str]:
    """``python -m sandbox.NAME`` options beyond the port: the account's rate limit (Salesfire documents
    none, so its sandbox has none), Salesfire's lists, the SFTP server's folder."""
    if name == "sftp":
        return ["--root", str(SFTP_ROOT)]
    if name == "salesfire":
        return [
            arg
            for list_id, secret in SALESFIRE_LISTS.items()
            for arg in ("--list", f"{SALESFIRE_SITE}/{list_id}={secret}")
        ]
    return ["--limit", str(limit), "--window", f"{window:g}"]


def start_sandboxes(ports: dict[str, int], limit: int, window: float = 60) -> Sandboxes:
    """Start every sandbox of ``ports`` (name -> port) at once, each allowing ``limit`` requests per
    ``window`` seconds, and wait until each accepts connections; on any failure none is left running."""
    started = Sandboxes()
    try:
        for name, port in ports.items():
            command = [
                sys.executable,
                "-m",
                f"sandbox.{name}",
                "--port",
                str(port),
                *sandbox_args(name, limit, window),
            ]
            output = subprocess.PIPE if name == "sftp" else subprocess.DEVNULL
            started.procs.append(spawn(command, cwd=REPO, stdout=output, text=True))
        deadline = time.monotonic() + 30
        for (name, port), proc in zip(ports.items(), started.procs, strict=True):
            if name == "sftp":
                line = proc.stdout.readline()
                if not line:
                    raise SystemExit("the SFTP sandbox did not start (see the message above)")
                started.sftp = json.loads(line)
                continue
            _wait_for_port(name, port, proc, deadline)
            started.urls[name] = f"http://127.0.0.1:{port}"
    except BaseException:
        for proc in started.procs:
            proc.kill()
            proc.wait()
        raise
    return started


def _wait_for_port(name: str, port: int, proc: subprocess.Popen, deadline: float) -> None:
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(
                    f"the {name} sandbox did not start on port {port} (see the message above)"
                ) from None
            time.sleep(0.1)


def environment(
    sandboxes: Sandboxes, requests_per_minute: int, vendor_extra: dict | None = None
) -> dict[str, str]:
    """Airflow's settings and every connection, pointing at ``sandboxes``; ``requests_per_minute`` and
    ``vendor_extra`` go to each HTTP vendor connection's extras."""
    extra = {"requests_per_minute": requests_per_minute, **(vendor_extra or {})}
    env = os.environ.copy()
    env.update(airflow_env(HOME))
    env.update(
        connections_env(
            warehouse=str(WAREHOUSE),
            state=str(HOME / "retl" / "state.db"),
            voucherify_url=sandboxes.urls.get("voucherify"),
            voucherify_extra=extra,
            salesfire_url=sandboxes.urls.get("salesfire"),
            salesfire_extra=extra,
            connectif_url=sandboxes.urls.get("connectif"),
            connectif_extra=extra,
            splio_sftp=sandboxes.sftp or None,
            salesmanago_url=sandboxes.urls.get("datatalks"),
            salesmanago_extra=extra,
        )
    )
    # Connectif exports go to a DuckDB file of their own: the sample warehouse stays read-only.
    env["AIRFLOW_CONN_RETL_EXPORTS"] = conn_json("duckdb", host=str(HOME / "retl" / "exports.duckdb"))
    env["RETL_EXPORT_CONN_ID"] = "retl_exports"
    env["RETL_RATE_LIMIT_URL"] = f"sqlite:///{HOME / 'retl' / 'ratelimit.sqlite'}"
    return env


def prepare(env: dict[str, str], log, where: str | None = None) -> None:
    """The state store, Airflow's metadata database and the vendor pools: the one-off setup of a
    deployment, in one process (``scripts/prepare.py``). ``where`` says where the two databases are."""
    where = where or f"{shown(HOME / 'retl' / 'state.db')}, {shown(HOME / 'airflow.db')}"
    say(
        f"preparing the state store, the Airflow metadata database ({where}) and the pools: scripts/prepare.py"
    )
    subprocess.run(
        [sys.executable, str(REPO / "scripts" / "prepare.py")],
        env=env,
        cwd=REPO,
        check=True,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
