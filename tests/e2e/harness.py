"""End-to-end harness: real Airflow (``dag.test()`` in a child process), the sample warehouse, the
Voucherify sandbox over real HTTP, and the state store; each test gets a fresh sandbox and state store.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import duckdb

from sandbox.env import REPO, connections_env
from sandbox.httpbase import SandboxServer

WINDOW = ("2026-10-28", "2026-11-01")  # four days: a few hundred customers, every defect kind
# 50 requests per second: fast tests, same pacing code as 100 per minute.
LIMIT, WINDOW_SECONDS = 50, 1.0


@dataclass
class Harness:
    sandbox: SandboxServer
    env: dict
    tmp: Path
    dag_id: str = "voucherify_sync"
    runs: list = field(default_factory=list)

    def command(self, conf: dict | None = None, window: tuple[str, str] = WINDOW) -> list[str]:
        return [
            sys.executable,
            str(REPO / "scripts" / "run_dag.py"),
            self.dag_id,
            "--window-start",
            window[0],
            "--window-end",
            window[1],
            "--conf",
            json.dumps(conf or {}),
            "--json",
        ]

    def run(
        self, conf: dict | None = None, window: tuple[str, str] = WINDOW, expect_success: bool = True
    ) -> dict:
        done = subprocess.run(
            self.command(conf, window), env=self.env, capture_output=True, text=True, timeout=600
        )
        log = self.tmp / f"run{len(self.runs)}.log"
        log.write_text(done.stdout + done.stderr)
        lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
        assert lines, f"no report printed; log in {log}:\n{done.stderr[-3000:]}"
        result = json.loads(lines[-1])
        result["reports"] = {r["entity"]: r for r in result["reports"]}
        result["log"] = log
        self.runs.append(result)
        if expect_success:
            assert result["state"] == "success", f"run failed; log in {log}"
        return result

    def start(self, conf: dict | None = None, window: tuple[str, str] = WINDOW) -> subprocess.Popen:
        log = (self.tmp / "killed.log").open("w")
        return subprocess.Popen(
            self.command(conf, window),
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @staticmethod
    def kill(proc: subprocess.Popen) -> None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)

    @property
    def state_url(self) -> str:
        """SQLAlchemy URL of the state store the runs use (SQLite file or PostgreSQL)."""
        return state_url(self.env)

    def use_postgres(self, dsn: str) -> None:
        """Warehouse, state store and rate buckets in one PostgreSQL database (loaded by the caller)."""
        uri = dsn.replace("postgresql://", "postgres://", 1)
        self.env["AIRFLOW_CONN_RETL_WAREHOUSE"] = uri
        self.env["AIRFLOW_CONN_RETL_STATE"] = uri
        self.env.pop("RETL_RATE_LIMIT_URL")  # buckets live in the PostgreSQL state store too
        init_store(self.state_url)

    def sent(self, method: str, path_prefix: str) -> list[dict]:
        return [
            r
            for r in self.sandbox.requests
            if r["method"] == method and r["path"].startswith(path_prefix) and (r["status"] or 999) < 300
        ]


def state_url(env: dict) -> str:
    """SQLAlchemy URL of the state store named by ``env``'s ``retl_state`` connection."""
    conn = env["AIRFLOW_CONN_RETL_STATE"]
    if conn.startswith("{"):
        return f"sqlite:///{json.loads(conn)['host']}"
    return conn.replace("postgres://", "postgresql+psycopg2://", 1)


def init_store(url: str) -> None:
    """What an operator does once per deployment: ``python -m reverse_etl.cli init``."""
    from reverse_etl.store import init_store as init

    init(url)


def run_env(tmp: Path, warehouse: Path, **connections) -> dict:
    """Environment of a DAG run against the sandboxes: this test's state store, bucket and staging.

    ``connections`` go to ``sandbox.env.connections_env`` (``voucherify_url=...``, ``salesfire_url=...``);
    every vendor connection is paced at LIMIT per WINDOW_SECONDS with short backoffs and polls.
    """
    fast = {
        "requests_per_minute": LIMIT * 60 / WINDOW_SECONDS,
        "rate_window_seconds": WINDOW_SECONDS,
        "backoff_base_seconds": 0.2,
        "async_poll_seconds": 0.05,
    }
    env = os.environ.copy()
    env.update(
        connections_env(
            warehouse=str(warehouse),
            state=str(tmp / "state.db"),
            voucherify_extra=fast,
            salesfire_extra=fast,
            connectif_extra={**fast, "import_poll_seconds": 0.05},
            salesmanago_extra=fast,
            **connections,
        )
    )
    env.update(
        {
            "RETL_RATE_LIMIT_URL": f"sqlite:///{tmp / 'ratelimit.sqlite'}",
            "RETL_STAGING_URL": (tmp / "staging").as_uri(),
            "RETL_TASK_RETRIES": "0",
            "RETL_LEASE_SECONDS": "5",  # a killed run's claim on its sync expires quickly
        }
    )
    init_store(state_url(env))
    return env


def local(url: str) -> str:
    """Staging paths are URLs (``file:///...`` by default)."""
    from urllib.parse import unquote, urlparse

    return unquote(urlparse(url).path) if url.startswith("file://") else url


def wait_for(predicate, timeout: float = 120, every: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(every)


class Expected:
    """What the warehouse says should happen, computed independently of the engine's code."""

    def __init__(self, warehouse: Path, window: tuple[str, str] = WINDOW):
        self.con = duckdb.connect(str(warehouse), read_only=True)
        self.window = window

    def rows(self, sql: str) -> list[tuple]:
        return self.con.execute(sql, [self.window[0], self.window[1]]).fetchall()

    def customers(self) -> dict[str, dict]:
        """Latest row per customer changed in the window."""
        cols = [d[0] for d in self.con.execute("SELECT * FROM customers LIMIT 0").description]
        out = {}
        for row in self.rows(
            "SELECT * FROM customers WHERE updated_at >= ?::TIMESTAMP AND updated_at < ?::TIMESTAMP "
            "ORDER BY updated_at"
        ):
            record = dict(zip(cols, row, strict=True))
            out[str(record["customer_id"])] = record
        return out

    def defects(self, table: str) -> dict[str, set[str]]:
        out: dict[str, set[str]] = {}
        for key, defect in self.con.execute(
            "SELECT record_key, defect FROM dq_injected_defects WHERE table_name = ?", [table]
        ).fetchall():
            out.setdefault(key, set()).add(defect)
        return out


def note_table(note: str) -> dict[str, dict[str, str]]:
    """The DAG run note's markdown table (written by the report task) as {entity: {column: cell}}."""
    rows = [
        [cell.strip() for cell in line.strip().strip("|").split("|")]
        for line in note.splitlines()
        if line.startswith("|") and not line.startswith("|---")
    ]
    header, *body = rows
    return {row[0]: dict(zip(header[1:], row[1:], strict=True)) for row in body}
