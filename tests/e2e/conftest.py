"""Fixtures of the end-to-end tests: a fresh Voucherify sandbox and state store per test."""

from __future__ import annotations

import os

import pytest

from sandbox.env import connections_env
from sandbox.voucherify import VoucherifySandbox
from tests.e2e.harness import LIMIT, WINDOW_SECONDS, Harness


@pytest.fixture
def harness(airflow_db, warehouse, tmp_path):
    with VoucherifySandbox(port=0, limit=LIMIT, window_seconds=WINDOW_SECONDS, async_delay=0.02) as sandbox:
        env = os.environ.copy()
        env.update(
            connections_env(
                warehouse=str(warehouse),
                state=str(tmp_path / "state.db"),
                voucherify_url=sandbox.url,
                voucherify_extra={
                    "requests_per_minute": LIMIT * 60 / WINDOW_SECONDS,
                    "rate_window_seconds": WINDOW_SECONDS,
                    "backoff_base_seconds": 0.2,
                    "async_poll_seconds": 0.05,
                },
            )
        )
        env.update(
            {
                "RETL_RATE_LIMIT_URL": f"sqlite:///{tmp_path / 'ratelimit.sqlite'}",
                "RETL_STAGING_URL": (tmp_path / "staging").as_uri(),
                "RETL_TASK_RETRIES": "0",
                "RETL_LEASE_SECONDS": "5",  # a killed run's claim on its sync expires quickly
            }
        )
        yield Harness(sandbox, env, tmp_path)
