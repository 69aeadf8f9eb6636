"""`make ui`: the Airflow UI with the DAGs, the Voucherify, Salesfire and Connectif sandboxes, an SFTP
server for Splio Referral, the Data Talks sandbox and every connection wired.

Airflow runs as three processes (api-server, scheduler with a LocalExecutor sized to the machine,
dag-processor; no triggerer: no DAG defers) bound to 127.0.0.1 unless ``RETL_UI_HOST`` says otherwise.
Login is Airflow's simple auth manager with one admin whose password is generated on the first start and
kept in Airflow's home. Ctrl-C or SIGTERM stops every process started here, with their children.
"""

from __future__ import annotations

import http.client
import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.request

from local import (
    HOME,
    REPO,
    SFTP_ROOT,
    ensure_warehouse,
    environment,
    prepare,
    say,
    shown,
    start_sandboxes,
)
from procs import GRACE_SECONDS, spawn, stop

from sandbox.env import SANDBOXES, sandbox_port

HOST = os.environ.get("RETL_UI_HOST", "127.0.0.1")
PORT = int(os.environ.get("RETL_UI_PORT", "8080"))
# the sandboxes' own default ports (sandbox.env): RETL_SANDBOX_PORT (8010) for Voucherify, then Salesfire,
# Connectif, the Splio SFTP server and Data Talks
SANDBOX_LIMIT = 100  # requests per minute, like Voucherify's Business plan and Connectif's documented limit
ADMIN = "admin"
PASSWORDS = HOME / "simple_auth_manager_passwords.json.generated"
COMPONENTS = ("api-server", "scheduler", "dag-processor")
STARTUP_SECONDS = 180


def sandbox_ports() -> dict[str, int]:
    """Where make ui starts each sandbox: the sandboxes' own default ports (RETL_SANDBOX_PORT and the next four)."""
    return {name: sandbox_port(name) for name in SANDBOXES}


def local_address(host: str) -> str:
    """Where processes on this machine reach the api-server: loopback when it listens everywhere."""
    if host in ("", "0.0.0.0", "::"):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


def admin_password() -> str:
    """The admin's password: generated once, then read back, so a restart keeps it."""
    passwords = json.loads(PASSWORDS.read_text() or "{}") if PASSWORDS.exists() else {}
    if ADMIN not in passwords:
        passwords[ADMIN] = secrets.token_urlsafe(12)
        PASSWORDS.touch(mode=0o600)
        PASSWORDS.chmod(0o600)
        PASSWORDS.write_text(json.dumps(passwords) + "\n")
    return passwords[ADMIN]


def airflow_settings(url: str) -> dict[str, str]:
    workers = max(2, os.cpu_count() or 1)  # LocalExecutor forks [core] parallelism workers at start
    return {
        "AIRFLOW__API__HOST": HOST,
        "AIRFLOW__API__PORT": str(PORT),
        "AIRFLOW__API__WORKERS": "1",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{url}/execution/",
        # Airflow's LocalExecutor, with the tasks' imports (GX, pandas, DuckDB) loaded once in the scheduler
        # before it forks its workers: a validate task does not import Great Expectations again.
        "AIRFLOW__CORE__EXECUTOR": "reverse_etl.local_executor.PreloadingLocalExecutor",
        "AIRFLOW__CORE__PARALLELISM": str(workers),
        "AIRFLOW__CORE__AUTH_MANAGER": (
            "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
        ),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "False",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{ADMIN}:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(PASSWORDS),
        "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
    }


def start_airflow(env: dict[str, str], started: list[subprocess.Popen]) -> dict[str, subprocess.Popen]:
    """The components, each logging to ``$AIRFLOW_HOME/ui-<name>.log`` and added to ``started`` at once
    (for the shutdown). The scheduler skips its log server (it listens on every interface; the
    api-server reads the task logs from disk)."""
    components = {}
    for name in COMPONENTS:
        extra = ["--skip-serve-logs"] if name == "scheduler" else []
        with (HOME / f"ui-{name}.log").open("w") as log:
            command = [sys.executable, "-m", "airflow", name, *extra]
            components[name] = spawn(command, env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
        started.append(components[name])
    return components


def wait_until_serving(url: str, airflow: dict[str, subprocess.Popen]) -> str | None:
    """None once the api-server answers its health check, else the name of a component that exited."""
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        for name, proc in airflow.items():
            if proc.poll() is not None:
                return name
        try:
            with urllib.request.urlopen(f"{url}/api/v2/monitor/health", timeout=2):
                return None
        except (OSError, http.client.HTTPException):  # not listening yet, or still starting
            time.sleep(0.5)
    return "api-server"


def _terminate(signum: int, frame: object) -> None:
    """SIGINT/SIGTERM: stop once. ``make`` passes on the terminal's Ctrl-C, so a second one often follows;
    ignoring it keeps it from cutting the shutdown short."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise KeyboardInterrupt


def main() -> int:
    # explicit: a launcher started in the background of a script inherits SIGINT ignored
    signal.signal(signal.SIGINT, _terminate)
    signal.signal(signal.SIGTERM, _terminate)
    started: list[subprocess.Popen] = []
    try:
        ensure_warehouse()
        (HOME / "retl").mkdir(parents=True, exist_ok=True)
        sandboxes = start_sandboxes(sandbox_ports(), SANDBOX_LIMIT)
        started.extend(sandboxes.procs)
        env = environment(sandboxes, SANDBOX_LIMIT)
        url = f"http://{local_address(HOST)}:{PORT}"
        env.update(airflow_settings(url))
        with (HOME / "ui-setup.log").open("w") as log:
            prepare(env, log)
        password = admin_password()
        say(f"starting Airflow: {', '.join(COMPONENTS)} (logs in {shown(HOME)}/ui-*.log)")
        airflow = start_airflow(env, started)
        failed = wait_until_serving(url, airflow)
        if failed:
            say(f"the {failed} did not start: see {shown(HOME / f'ui-{failed}.log')}")
            return 1
        urls = sandboxes.urls
        say(f"Voucherify sandbox at {urls['voucherify']} (100 requests/minute, like the Business plan)")
        say(f"Salesfire sandbox at {urls['salesfire']} (site-1, lists customers-uk and customers-eu)")
        say(f"Connectif sandbox at {urls['connectif']} (100 requests/minute per account)")
        exports = shown(HOME / "retl" / "exports.duckdb")
        say(f"Connectif exports are loaded into {exports} (connection retl_exports)")
        say(f"Data Talks (SALESmanago) sandbox at {urls['datatalks']} (SigV4, group_key sandbox-group)")
        say(f"Splio Referral SFTP sandbox on port {sandboxes.sftp['port']}: files land in {shown(SFTP_ROOT)}")
        say(
            "Trigger voucherify_sync with params window_start=2026-10-31, window_end=2026-11-01 for sample data."
        )
        say(f"Airflow UI at {url}/ (listening on {HOST}:{PORT}). Ctrl-C to stop.")
        say(f"Log in as {ADMIN} with password {password} (kept in {shown(PASSWORDS)})")
        while True:
            for name, proc in airflow.items():
                if proc.poll() is not None:
                    say(f"the {name} stopped (exit {proc.returncode}): see {shown(HOME / f'ui-{name}.log')}")
                    return 1
            time.sleep(1)
    except KeyboardInterrupt:
        return 0
    finally:
        if started:
            say("stopping Airflow and the sandboxes")
            killed = stop(started[::-1])
            if killed:
                say(f"killed what did not stop within {GRACE_SECONDS} s: {', '.join(killed)}")


if __name__ == "__main__":
    sys.exit(main())
