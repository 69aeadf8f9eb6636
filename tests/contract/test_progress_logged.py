"""Vendor waits show in the task log (RETL_PROGRESS_LOG_SECONDS, short here): a 429 with Retry-After, a
budget pause the vendor's headers ask for, an async action or import kept running, a full job queue.
Real sandboxes over real HTTP; one line per interval whatever the number of polls or 429s."""

from __future__ import annotations

import re
import time

import pytest

from reverse_etl.hooks.connectif import ConnectifHook
from reverse_etl.hooks.voucherify import VoucherifyHook
from sandbox.connectif import ConnectifSandbox
from sandbox.env import (
    CONNECTIF_KEY_ID,
    CONNECTIF_KEY_SECRET,
    SANDBOX_APP_ID,
    SANDBOX_APP_TOKEN,
    conn_json,
)
from sandbox.voucherify import VoucherifySandbox
from tests.conftest import PROGRESS_INTERVAL

pytestmark = pytest.mark.serial  # clock-checked pacing: run alone (make test's second call)

CONN = "progress"


def at_most_one_per_interval(lines: list[str], seconds: float) -> bool:
    return len(lines) <= seconds / PROGRESS_INTERVAL + 1


@pytest.fixture
def voucherify(monkeypatch, state_store):
    with VoucherifySandbox(port=0, limit=1000, window_seconds=1, async_delay=0.01) as sandbox:
        extra = {
            "requests_per_minute": 60_000,
            "rate_window_seconds": 1,
            "async_poll_seconds": 0.02,
            "async_poll_max_seconds": 0.02,  # polls at a steady pace here: many polls, fewer lines
        }
        monkeypatch.setenv(
            f"AIRFLOW_CONN_{CONN.upper()}",
            conn_json(
                "http", host=sandbox.url, login=SANDBOX_APP_ID, password=SANDBOX_APP_TOKEN, extra=extra
            ),
        )
        yield sandbox, VoucherifyHook(CONN)


@pytest.fixture
def connectif(monkeypatch, state_store):
    with ConnectifSandbox(
        port=0, limit=1000, window_seconds=1, async_delay=0.5, max_queued_imports=1
    ) as sandbox:
        extra = {"requests_per_minute": 60_000, "rate_window_seconds": 1, "import_poll_seconds": 0.05}
        monkeypatch.setenv(
            f"AIRFLOW_CONN_{CONN.upper()}",
            conn_json(
                "http", host=sandbox.url, login=CONNECTIF_KEY_ID, password=CONNECTIF_KEY_SECRET, extra=extra
            ),
        )
        yield sandbox, ConnectifHook(CONN)


ORDER = {"source_id": "o1", "status": "PAID", "amount": 100}


def test_429s_with_retry_after_are_one_reported_wait(voucherify, progress_log):
    sandbox, hook = voucherify
    sandbox.inject("throttle", count=2, retry_after=1)
    started = time.monotonic()
    hook.upsert_order(ORDER)
    waited = time.monotonic() - started
    lines = progress_log(
        "waiting for Voucherify to stop throttling POST /v1/orders (account 'voucherify_progress'): "
    )
    assert lines and at_most_one_per_interval(lines, waited)
    assert all(" s of 900 s, " in line for line in lines)
    assert any(line.endswith("1 429s on this request, the last asked for 1 s") for line in lines)
    assert lines[-1].endswith("2 429s on this request, the last asked for 1 s")
    done = progress_log("done waiting for Voucherify to stop throttling POST /v1/orders")
    assert len(done) == 1 and done[0].endswith("Voucherify answered 200")


def test_a_budget_pause_names_the_account_and_when_it_resumes(voucherify, progress_log):
    sandbox, hook = voucherify
    sandbox.reset(limit=1, window_seconds=3)  # the answer says 0 requests remain until the window resets
    hook.upsert_order(ORDER)
    lines = progress_log("waiting for Voucherify account 'voucherify_progress' budget to reset: ")
    assert lines and all(" s of " in line for line in lines)
    assert all("the vendor said 0 requests remain; resuming at " in line for line in lines)
    assert sandbox.stats()["throttled_by_limiter"] == 0


def test_an_async_action_kept_running_reports_its_id_and_status_once_per_interval(voucherify, progress_log):
    sandbox, hook = voucherify
    sandbox.configure(async_delay=1.2)  # the action stays IN_PROGRESS that long
    action_id = hook.bulk_upsert("customers", [{"source_id": "c1", "name": "C1"}])
    started = time.monotonic()
    assert hook.wait_async_action(action_id)["status"] == "DONE"
    waited = time.monotonic() - started
    lines = progress_log(f"waiting for Voucherify async action {action_id}: ")
    polls = [r for r in sandbox.requests if r["path"] == f"/v1/async-actions/{action_id}"]
    assert lines and at_most_one_per_interval(lines, waited)
    assert len(lines) < len(polls)  # not one line per poll
    assert all(" s of 1800 s, " in line for line in lines)
    assert any("last status 'IN_PROGRESS' (0% done)" in line for line in lines), lines
    done = progress_log(f"done waiting for Voucherify async action {action_id} after ")
    assert len(done) == 1 and done[0].endswith("last status 'DONE' (100% done)")


def test_a_full_import_queue_and_a_running_import_are_reported(connectif, progress_log):
    sandbox, hook = connectif
    first = hook.create_import("contacts", b"_email\na@example.com\n")
    second = hook.create_import("contacts", b"_email\nb@example.com\n")  # waits for the one queue slot
    lines = progress_log(
        "waiting for a free slot in Connectif's import queue (account 'connectif_progress'): "
    )
    assert lines and all(
        line.endswith("s of 3600 s, queue full (E0401), asking again every 0.05 s") for line in lines
    )
    done = progress_log("done waiting for a free slot in Connectif's import queue")
    assert len(done) == 1 and done[0].endswith(f"import {second['id']} queued")

    assert hook.wait_import(second["id"])["status"] == "finished"
    lines = progress_log(f"waiting for Connectif import {second['id']}: ")
    assert lines and all(" s of 3600 s, last status " in line for line in lines)
    assert any("last status 'queued' (total 0, success 0, errors 0)" in line for line in lines), lines
    refused = [r for r in sandbox.requests if r["path"] == "/imports/" and r["status"] == 400]
    assert refused and first["id"] != second["id"]


def test_transient_retries_are_one_reported_wait_naming_the_last_problem(
    voucherify, progress_log, monkeypatch
):
    sandbox, _ = voucherify
    sandbox.inject("status", status=503, count=3)
    extra = {"requests_per_minute": 60_000, "rate_window_seconds": 1, "backoff_base_seconds": 0.4}
    monkeypatch.setenv(
        f"AIRFLOW_CONN_{CONN.upper()}",
        conn_json("http", host=sandbox.url, login=SANDBOX_APP_ID, password=SANDBOX_APP_TOKEN, extra=extra),
    )
    hook = VoucherifyHook(CONN)
    hook.upsert_order(ORDER)  # backoffs of at least 0.2, 0.4 and 0.8 s
    lines = progress_log(f"waiting for Voucherify at {sandbox.url} to answer POST /v1/orders: ")
    assert lines and all(re.search(r": [0-9.]+ s, retry [123]/5 after 503", line) for line in lines), lines
    assert any(", retry 3/5 after 503" in line for line in lines), lines  # the news follows the retries
    done = progress_log(f"done waiting for Voucherify at {sandbox.url} to answer POST /v1/orders after ")
    assert len(done) == 1 and done[0].endswith("Voucherify answered 200")
