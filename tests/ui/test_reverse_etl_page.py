"""The Reverse ETL page in a real browser (Debian's chromium driven by Playwright) on `make ui`
(scripts/ui.py in a temporary RETL_LOCAL_DIR): a real voucherify_sync run through the scheduler, then the
page's numbers are the state store's, and nobody without a login gets any of them."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sqlite3
import time
from urllib.parse import quote, unquote

import pytest
import requests

from reverse_etl.validate import personal_fields
from tests.ui.test_make_ui import STARTUP_SECONDS

pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("make_ui")]  # one worker: they share one make ui

CHROMIUM = "/usr/bin/chromium"
RUN_SECONDS = 600
WINDOW = {"window_start": "2026-10-01", "window_end": "2026-11-01"}  # the form takes dates
NUMBERS = ("extracted", "valid", "rejected", "unchanged_skipped", "sent", "deleted", "failed", "requests")
ENDPOINTS = (
    "/reverse-etl/api/syncs",
    "/reverse-etl/api/budget",
    "/reverse-etl/api/failures/voucherify/customers",
    "/reverse-etl/api/records/voucherify/customers/1",
    "/reverse-etl/api/quarantine/voucherify/customers",
    "/reverse-etl/api/quarantine/voucherify/customers/unmasked",
    "/reverse-etl/api/failures/voucherify/customers/unmasked",
)


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


def test_the_tasks_of_make_ui_are_forked_from_a_preloaded_scheduler(make_ui, synced):
    """`make ui` runs reverse_etl.local_executor: the scheduler imported GX, pandas and DuckDB before it
    forked the LocalExecutor workers that ran the synced run's tasks."""
    log = (make_ui.home / ".airflow" / "ui-scheduler.log").read_text()
    assert "reverse_etl: preloaded Great Expectations, pandas, DuckDB and the engine in " in log
    assert "tasks forked from this scheduler's LocalExecutor workers skip those imports" in log
    assert ", 0 failed" not in log and " failed)" not in log


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


def _quarantined(report: dict) -> tuple[list[dict], set[str]]:
    """The run's quarantine file as written, and the personal values in it (the page must not show them)."""
    with open(report["quarantine"].removeprefix("file://"), encoding="utf-8") as handle:
        lines = [json.loads(line) for line in handle]
    personal = personal_fields("voucherify", "customers")
    values = {
        str(value)
        for line in lines
        for column, value in line["row"].items()
        if column in personal and value is not None and len(str(value)) > 3
    }
    return lines, values


def _log_in(browser, url: str, password: str):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(f"{url}/auth/login")
    page.locator("input[name=username]").fill("admin")
    page.locator("input[name=password]").fill(password)
    page.locator("button[type=submit]").click()
    page.wait_for_url(lambda u: "/auth/login" not in u)
    return page


@pytest.fixture(scope="module")
def synced(make_ui):
    """One real voucherify_sync run through the scheduler; (its run id, its report, the failing counts)."""
    run_id = _run_sync(make_ui.url, make_ui.headers())
    report, failing = _store(make_ui.home, run_id)
    assert report["extracted"] > 0 and report["sent"] > 0 and report["rejected"] > 0
    return run_id, report, failing


@pytest.fixture
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM)
        try:
            yield browser
        finally:
            browser.close()


def test_the_page_shows_the_ledgers_numbers_to_a_logged_in_user_only(make_ui, synced, browser, tmp_path):
    url, password, home = make_ui.url, make_ui.password, make_ui.home
    for endpoint in ENDPOINTS:
        anonymous = requests.get(url + endpoint, timeout=30)
        assert anonymous.status_code == 401, (endpoint, anonymous.text)
    run_id, report, failing = synced

    stranger = browser.new_page()
    stranger.goto(f"{url}/reverse-etl/")
    notice = stranger.locator("#notice")
    notice.wait_for()
    assert "Log in to Airflow" in _until(notice.text_content, 30, "the login notice")
    assert stranger.locator("tr[data-run-id]").count() == 0

    page = _log_in(browser, url, password)
    page.goto(f"{url}/reverse-etl/")
    row = page.locator(f"section[data-sync='voucherify.customers'] tr[data-run-id='{run_id}']")
    row.wait_for()
    shown = {name: row.locator(f"td[data-count={name}]").text_content() for name in NUMBERS}
    assert shown == {name: str(report[name]) for name in NUMBERS}
    quarantine = page.locator(f"tr[data-quarantine-of='{run_id}'] code").text_content()
    assert quarantine == report["quarantine"]
    link = row.locator("a").evaluate("a => a.href")  # resolved against the page's address
    assert unquote(link) == f"{url}/dags/voucherify_sync/runs/{run_id}"
    section = page.locator("section[data-sync='voucherify.customers']")
    section.locator("[data-testid=failures]").wait_for()
    groups = section.locator("[data-testid=failures] td[data-count=records]").all_text_contents()
    assert sum(int(n) for n in groups) == sum(failing.values())
    assert section.locator("[data-testid=trend] polyline[data-series=sent]").count() == 1

    # the quarantine by rule: every rejected row counted, samples masked (nothing personal on screen)
    lines, personal = _quarantined(report)
    view = section.locator(f"[data-testid=quarantine][data-run-id='{run_id}']")
    view.wait_for()
    by_rule = {}
    for line in lines:
        for rule in {f"{f.get('rule') or f['expectation']} on {f['column']}" for f in line["failures"]}:
            by_rule[rule] = by_rule.get(rule, 0) + 1
    shown_rules = {
        r.get_attribute("data-rule"): int(r.locator("td[data-count=rows]").text_content())
        for r in view.locator("tr[data-rule]").all()
    }
    assert shown_rules == by_rule and len(lines) == report["rejected"]
    assert "(personal fields masked)" in view.text_content()
    text = page.locator("body").text_content()
    assert not [value for value in personal if value in text]
    # an admin may unmask: the real values appear
    page.check("[data-testid=reveal]")
    section.locator("[data-testid=quarantine]", has_text="(unmasked)").wait_for()
    emails = {line["row"]["email"] for line in lines if line["row"].get("email")}
    assert [e for e in emails if e in page.locator("body").text_content()]
    page.uncheck("[data-testid=reveal]")
    section.locator("[data-testid=quarantine]", has_text="(personal fields masked)").wait_for()
    page.screenshot(path=tmp_path / "reverse-etl-page-direct.png", full_page=True)

    # the rate budget per vendor account and minute: what the transport counted into the store
    account = "voucherify_voucherify_default"
    with contextlib.closing(sqlite3.connect(home / ".airflow" / "retl" / "state.db")) as db:
        requests_sent, throttled, minutes = db.execute(
            "SELECT sum(requests), sum(throttled), count(*) FROM sync_request_minutes WHERE account = ?",
            (account,),
        ).fetchone()
    assert requests_sent >= report["requests"] > 0
    budget = page.locator(f"[data-testid=budget-accounts] tr[data-account='{account}']")
    assert budget.locator("td[data-count=requests]").text_content() == str(requests_sent)
    assert budget.locator("td[data-count=throttled]").text_content() == str(throttled)
    assert budget.locator("td[data-count=limit_per_minute]").text_content() == "100"
    bars = page.locator(f"svg[data-testid=minutes][data-account='{account}'] rect[data-minute]")
    assert bars.count() == minutes
    assert sum(int(b.get_attribute("data-requests")) for b in bars.all()) == requests_sent

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

    # the run note on the run's page (where the grid leads): its first line carries the totals
    page.goto(f"{url}/dags/voucherify_sync/runs/{quote(run_id, safe='')}")
    totals = f"sent {report['sent']}, rejected {report['rejected']}, failed {report['failed']}"
    page.get_by_text(totals).wait_for()

    # inside the Airflow UI, as the navigation shows it
    page.goto(f"{url}/plugin/reverse-etl")
    frame = page.frame_locator("iframe").first
    frame.locator(f"tr[data-run-id='{run_id}']").wait_for()
    page.screenshot(path=tmp_path / "reverse-etl-page.png", full_page=True)
    if target := os.environ.get("RETL_SCREENSHOT"):  # to refresh the picture in docs/ui.md
        shutil.copy(tmp_path / "reverse-etl-page.png", target)


def _runs(url: str, headers: dict) -> int:
    found = requests.get(f"{url}/api/v2/dags/voucherify_sync/dagRuns", headers=headers, timeout=30)
    return found.json()["total_entries"]


def test_the_trigger_form_refuses_a_bad_date_before_a_run_exists(make_ui, synced, browser, tmp_path):
    headers = make_ui.headers()
    before = _runs(make_ui.url, headers)
    page = _log_in(browser, make_ui.url, make_ui.password)
    page.goto(f"{make_ui.url}/dags/voucherify_sync")
    page.get_by_role("button", name="Trigger").first.click()
    dialog = page.get_by_role("dialog")
    # the window fields are the browser's date pickers: text is not a date, so nothing is taken
    start = dialog.locator("input[type=date]#element_window_start")
    start.click()
    start.press_sequentially("yesterday")
    assert start.input_value() == ""
    assert dialog.locator("input[type=date]#element_window_end").count() == 1
    # the JSON of the advanced options goes through the same schema: Airflow refuses, no run is created
    dialog.get_by_text("Advanced Options").click()
    dialog.locator(".monaco-editor .view-lines").click()
    page.keyboard.press("Control+A")
    page.keyboard.press("Delete")
    page.keyboard.insert_text(json.dumps({"window_start": "yesterday", "window_end": "2026-11-01"}))
    dialog.get_by_role("button", name="Trigger").click()
    refusal = dialog.get_by_text("Invalid input for param window_start: 'yesterday' is not a 'date'")
    refusal.wait_for()
    page.screenshot(path=tmp_path / "trigger-refused.png")
    assert _runs(make_ui.url, headers) == before
