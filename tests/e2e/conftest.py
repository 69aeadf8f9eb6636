"""Fixtures of the end-to-end tests: a fresh Voucherify sandbox and state store per test."""

from __future__ import annotations

import pytest

from sandbox.voucherify import VoucherifySandbox
from tests.e2e.harness import LIMIT, WINDOW_SECONDS, Harness, run_env


@pytest.fixture
def harness(airflow_db, warehouse, tmp_path):
    with VoucherifySandbox(port=0, limit=LIMIT, window_seconds=WINDOW_SECONDS, async_delay=0.02) as sandbox:
        yield Harness(sandbox, run_env(tmp_path, warehouse, voucherify_url=sandbox.url), tmp_path)


@pytest.fixture
def alert_receivers():
    """A real SMTP server and webhook receiver on 127.0.0.1; ``.env()`` names them as alert connections."""
    from tests.e2e.alert_receivers import start_receivers

    receivers, stop = start_receivers()
    yield receivers
    stop()
