"""The Reverse ETL page in a real browser (Debian's chromium driven by Playwright) on `make ui`
(scripts/ui.py in a temporary RETL_LOCAL_DIR): a real voucherify_sync run through the scheduler, then the
page's numbers are the state store's, and nobody without a login gets any of them."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sqlite3
import subprocess
import time
from urllib.parse import unquote

import pytest
import requests

from tests.ui.test_make_ui import PASSWORD_LINE, STARTUP_SECONDS, kill_everything, launch_ui

pytestmark = pytest.mark.e2e

CHROMIUM = "/usr/bin/chromium"
RUN_SECONDS = 600
WINDOW = {"window_start": "2026-10-01", "window_end": "2026-11-01"}  # the form takes dates
NUMBERS = ("extracted", "valid", "rejected", "unchanged_skipped", "sent", "deleted", "failed", "requests")
ENDPOINTS = (
    "/reverse-etl/api/syncs",
    "/reverse-etl/api/budget",
    "/reverse-etl/api/failures/voucherify/customers",
    "/reverse-etl/api/records/voucherify/customers/1",
)


@pytest.fixture
def make_ui(tmp_path):
    """`make ui` started for real; yields (url, admin password, RETL_LOCAL_DIR) and stops it all after."""
    proc, output, port = launch_ui(tmp_path)
    try:
        password = output.wait_for(PASSWORD_LINE, STARTUP_SECONDS).group(1)
        yield f"http://127.0.0.1:{port}", password, tmp_path
    finally:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=60)
        kill_everything(proc, tmp_path)


def _until(condition, seconds: float, what: str):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if found := condition():
            return found
        time.sleep(1)
    pytest.fail(f"timed out waiting for {what}")


def _run_sync(url: str, headers: dict) -> str:
    """voucherify_sync (customers only, October 2026: the sample's 50 customers) triggered through Airflow's API; its run id.

    Unpausing also starts the latest scheduled run (its window, the last day, holds no sample rows): both
    land in the store, and the page must tell them apart."""
    dag = f"{url}/api/v2/dags/voucherify_sync"
    _until(lambda: requests.get(dag, headers=headers, timeout=30).ok, STARTUP_SECONDS, "the DAG to be parsed")
    assert requests.patch(dag, json={"is_paused": False}, headers=headers, timeout=30).ok
    conf = {**WINDOW, "entities": ["customers"], "max_rejected_share": 0.5}  # the sample has ~27 % defects
    started = requests.post(
        f"{dag}/dagRuns", json={"logical_date": None, "conf": conf}, headers=headers, timeout=30
    )
    assert started.ok, started.text
    run_id = started.json()["dag_run_id"]

    def finished():
        state = requests.get(f"{dag}/dagRuns/{run_id}", headers=headers, timeout=30).json()["state"]
        return state if state in ("success", "failed") else None

    assert _until(finished, RUN_SECONDS, "voucherify_sync to finish") == "success"
    return run_id


def _store(home, run_id: str) -> tuple[dict, dict]:
    """What the state store holds, read with plain SQL: the run's customers report, failing records."""
    with contextlib.closing(sqlite3.connect(home / ".airflow" / "retl" / "state.db")) as db:
        [report] = [
            json.loads(r)
            for (r,) in db.execute(
                "SELECT report FROM sync_runs WHERE destination = 'voucherify' AND entity = 'customers' "
                "AND run_id = ?",
                (run_id,),
            )
        ]
        failing = dict(
            db.execute(
                "SELECT status, count(*) FROM sync_ledger WHERE destination = 'voucherify' "
                "AND entity = 'customers' AND status IN ('failed', 'rejected') GROUP BY status"
            ).fetchall()
        )
    return report, failing


def test_the_page_shows_the_ledgers_numbers_to_a_logged_in_user_only(make_ui, tmp_path):
    from playwright.sync_api import sync_playwright

    url, password, home = make_ui
    for endpoint in ENDPOINTS:
        anonymous = requests.get(url + endpoint, timeout=30)
        assert anonymous.status_code == 401, (endpoint, anonymous.text)
    token = requests.post(f"{url}/auth/token", json={"username": "admin", "password": password}, timeout=30)
    assert token.status_code == 201, token.text
    token = token.json()["access_token"]
    run_id = _run_sync(url, {"Authorization": f"Bearer {token}"})
    report, failing = _store(home, run_id)
    assert report["extracted"] > 0 and report["sent"] > 0

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM)
        try:
            stranger = browser.new_page()
            stranger.goto(f"{url}/reverse-etl/")
            notice = stranger.locator("#notice")
            notice.wait_for()
            assert "Log in to Airflow" in _until(notice.text_content, 30, "the login notice")
            assert stranger.locator("tr[data-run-id]").count() == 0

            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(f"{url}/auth/login")
            page.locator("input[name=username]").fill("admin")
            page.locator("input[name=password]").fill(password)
            page.locator("button[type=submit]").click()
            page.wait_for_url(lambda u: "/auth/login" not in u)

            page.goto(f"{url}/reverse-etl/")
            row = page.locator(f"section[data-sync='voucherify.customers'] tr[data-run-id='{run_id}']")
            row.wait_for()
            shown = {name: row.locator(f"td[data-count={name}]").text_content() for name in NUMBERS}
            assert shown == {name: str(report[name]) for name in NUMBERS}
            quarantine = page.locator(f"tr[data-quarantine-of='{run_id}'] code").text_content()
            assert quarantine == report["quarantine"] and report["rejected"] > 0
            link = row.locator("a").evaluate("a => a.href")  # resolved against the page's address
            assert unquote(link) == f"{url}/dags/voucherify_sync/runs/{run_id}"
            section = page.locator("section[data-sync='voucherify.customers']")
            section.locator("[data-testid=failures]").wait_for()
            groups = section.locator("[data-testid=failures] td[data-count=records]").all_text_contents()
            assert sum(int(n) for n in groups) == sum(failing.values())
            assert section.locator("[data-testid=trend] polyline[data-series=sent]").count() == 1

            # the record lookup: the first delivered key, as the CLI's `why` tells it
            page.fill("input[name=destination]", "voucherify")
            page.fill("input[name=entity]", "customers")
            with contextlib.closing(sqlite3.connect(home / ".airflow" / "retl" / "state.db")) as db:
                key, status = db.execute(
                    "SELECT record_key, status FROM sync_ledger WHERE destination = 'voucherify' "
                    "AND entity = 'customers' ORDER BY record_key LIMIT 1"
                ).fetchone()
            page.fill("input[name=key]", key)
            page.click("form#lookup button")
            assert f"customers {key}: {status}" in page.locator("[data-testid=record-status]").text_content()

            # inside the Airflow UI, as the navigation shows it
            page.goto(f"{url}/plugin/reverse-etl")
            frame = page.frame_locator("iframe").first
            frame.locator(f"tr[data-run-id='{run_id}']").wait_for()
            page.screenshot(path=tmp_path / "reverse-etl-page.png", full_page=True)
            if target := os.environ.get("RETL_SCREENSHOT"):  # to refresh the README's picture
                shutil.copy(tmp_path / "reverse-etl-page.png", target)
        finally:
            browser.close()
