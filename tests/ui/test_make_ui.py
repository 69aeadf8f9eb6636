"""`make ui` (scripts/ui.py) started for real in a temporary RETL_LOCAL_DIR: it listens on loopback only,
asks for a login, runs a LocalExecutor sized to the machine and leaves no process behind after Ctrl-C.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

import psutil
import pytest
import requests

from sandbox.env import REPO
from sandbox.warehouse import build_duckdb

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("make_ui")]  # one worker: they share one make ui

STARTUP_SECONDS = 300
# scripts/procs.py waits 20 s before SIGKILL; then the launcher returns
SHUTDOWN_SECONDS = 60
PASSWORD_LINE = re.compile(r"Log in as admin with password (\S+)")


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_ports(count: int) -> int:
    """The first of ``count`` consecutive free ports (the sandboxes take RETL_SANDBOX_PORT and the next four)."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            first = s.getsockname()[1]
        if first + count < 65536 and all(_free(first + i) for i in range(count)):
            return first
    raise RuntimeError(f"no {count} consecutive free ports")


class Output:
    """The launcher's stdout, read on a thread so the pipe never fills."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.lines: list[str] = []
        self.proc = proc
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line)

    def wait_for(self, pattern: re.Pattern, seconds: float) -> re.Match:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            for line in self.lines:
                if found := pattern.search(line):
                    return found
            if self.proc.poll() is not None:
                break
            time.sleep(0.5)
        pytest.fail(f"scripts/ui.py did not print {pattern.pattern!r}:\n{''.join(self.lines)}")


def _tree(pid: int) -> list[psutil.Process]:
    root = psutil.Process(pid)
    return [root, *root.children(recursive=True)]


def _wait_until(condition, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.5)
    pytest.fail(f"timed out waiting for {what}")


def _local_executor_workers(tree: list[psutil.Process]) -> list[psutil.Process]:
    found = []
    for member in tree:
        try:
            if " ".join(member.cmdline()).startswith("airflow worker -- LocalExecutor"):
                found.append(member)
        except psutil.Error:
            pass
    return found


def _started_by(base: str) -> list[psutil.Process]:
    """Every process on the machine whose environment points at this test's RETL_LOCAL_DIR."""
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.environ().get("RETL_LOCAL_DIR") == base and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
        except psutil.Error:
            pass
    return found


def launch_ui(tmp_path) -> tuple[subprocess.Popen, Output, int]:
    """`make ui` (scripts/ui.py) on free ports with RETL_LOCAL_DIR=tmp_path and a 50-customer warehouse:
    the launcher, its output and the UI's port."""
    build_duckdb(tmp_path / "data" / "warehouse.duckdb", customers=50, seed=7)
    port = _free_ports(1)
    env = os.environ.copy()
    env.pop("RETL_UI_HOST", None)
    env.update(RETL_LOCAL_DIR=str(tmp_path), RETL_UI_PORT=str(port), RETL_SANDBOX_PORT=str(_free_ports(5)))
    proc = subprocess.Popen(
        [sys.executable, str(REPO / "scripts" / "ui.py")],
        env=env,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    return proc, Output(proc), port


def kill_everything(proc: subprocess.Popen, tmp_path) -> None:
    """After the test, pass or fail: the launcher and anything it started are gone."""
    proc.kill()
    for leftover in _started_by(str(tmp_path)):
        with contextlib.suppress(psutil.Error):
            leftover.kill()
    proc.wait(timeout=30)


def test_make_ui_listens_on_loopback_and_asks_for_login(make_ui):
    proc, url, password, home = make_ui.proc, make_ui.url, make_ui.password, make_ui.home
    assert password in (home / ".airflow" / "simple_auth_manager_passwords.json.generated").read_text()

    # the LocalExecutor forks [core] parallelism workers: max(2, CPUs), not Airflow's default 32
    expected_workers = max(2, os.cpu_count() or 1)
    _wait_until(
        lambda: len(_local_executor_workers(_tree(proc.pid))) >= expected_workers,
        STARTUP_SECONDS,
        "the LocalExecutor workers",
    )
    assert len(_local_executor_workers(_tree(proc.pid))) == expected_workers

    # every listening socket of the tree (api-server, sandboxes; no scheduler log server) is loopback
    pids = {member.pid for member in _tree(proc.pid)}
    listening = [
        conn.laddr
        for conn in psutil.net_connections(kind="inet")
        if conn.status == psutil.CONN_LISTEN and conn.pid in pids
    ]
    assert make_ui.port in {addr.port for addr in listening}
    assert {addr.ip for addr in listening} == {"127.0.0.1"}, listening

    # no login, no API; a wrong password, no token; the printed one opens it
    assert requests.get(f"{url}/api/v2/dags", timeout=30).status_code == 401
    wrong = requests.post(
        f"{url}/auth/token", json={"username": "admin", "password": password + "x"}, timeout=30
    )
    assert wrong.status_code == 401
    dags = requests.get(f"{url}/api/v2/dags", headers=make_ui.headers(), timeout=30)
    assert dags.status_code == 200, dags.text


@pytest.mark.stops_ui  # run after every other test that uses the shared make_ui (tests/ui/conftest.py)
def test_ctrl_c_stops_the_whole_tree(make_ui) -> None:
    """Ctrl-C: the launcher returns 0 and nothing it started (nor their children) survives."""
    proc = make_ui.proc
    tree = _tree(proc.pid)
    assert len(tree) >= 9  # launcher, five sandboxes, api-server, scheduler, dag-processor
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=SHUTDOWN_SECONDS) == 0, "".join(make_ui.output.lines)
    _, alive = psutil.wait_procs(tree, timeout=10)
    assert alive == []
    assert _started_by(str(make_ui.home)) == []
    assert "stopping Airflow and the sandboxes" in "".join(make_ui.output.lines)
