"""One `make ui` (scripts/ui.py) for every test of tests/ui: starting Airflow's four processes and the
sandboxes takes about a minute, so the tests share it. Run alone, each test still gets its own."""

from __future__ import annotations

import contextlib
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from tests.ui.test_make_ui import PASSWORD_LINE, STARTUP_SECONDS, Output, kill_everything, launch_ui


def pytest_collection_modifyitems(items):
    """The test that stops the shared `make ui` runs after the other tests of this folder, and before any
    test outside it (leaving the folder tears the shared `make ui` down)."""
    here = Path(__file__).parent
    stops = [item for item in items if item.get_closest_marker("stops_ui")]
    if not stops:
        return
    rest = [item for item in items if item not in stops]
    ours = [i for i, item in enumerate(rest) if here in Path(item.path).parents]
    at = ours[-1] + 1 if ours else len(rest)
    items[:] = rest[:at] + stops + rest[at:]


@dataclass
class RunningUI:
    proc: subprocess.Popen
    output: Output
    port: int
    password: str
    home: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def headers(self) -> dict:
        """An admin's bearer token from Airflow's own login route."""
        token = requests.post(
            f"{self.url}/auth/token", json={"username": "admin", "password": self.password}, timeout=30
        )
        assert token.status_code == 201, token.text
        return {"Authorization": f"Bearer {token.json()['access_token']}"}


@pytest.fixture(scope="package")
def make_ui(tmp_path_factory):
    """`make ui` started for real in its own RETL_LOCAL_DIR; everything it started is gone afterwards."""
    home = tmp_path_factory.mktemp("make-ui")
    proc, output, port = launch_ui(home)
    try:
        password = output.wait_for(PASSWORD_LINE, STARTUP_SECONDS).group(1)
        yield RunningUI(proc, output, port, password, home)
    finally:
        if proc.poll() is None:
            proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=60)
        kill_everything(proc, home)
