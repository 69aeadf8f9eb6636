"""The Reverse ETL page's JSON (plugins/reverse_etl/ui) against a real SQLite store filled by the real
ledger, behind Airflow's real auth: the simple auth manager and its JWT, as `make ui` runs it."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from fastapi.testclient import TestClient

from reverse_etl.ledger import DELIVERED, FAILED, UPSERT, Ledger, Outcome, Planned

SIMPLE = "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"


def _load(run_id: str, *, sent: list[str], refused: dict[str, str], rejected: dict[str, str], throttled=0):
    """One load as the generic load writes it: plan, vendor outcomes, rejections, report."""
    ledger = Ledger("voucherify", "customers", run_id)
    keys = sent + list(refused)
    ledger.plan([Planned(k, UPSERT, f"h{k}", "{}") for k in keys])
    ledger.apply([Outcome(k, DELIVERED) for k in sent] + [Outcome(k, FAILED, m) for k, m in refused.items()])
    ledger.mark_rejected(list(rejected.items()))
    report = {
        "extracted": len(keys) + len(rejected),
        "valid": len(keys),
        "rejected": len(rejected),
        "unchanged_skipped": 0,
        "sent": len(sent),
        "deleted": 0,
        "failed": len(refused),
        "requests": len(keys) + throttled,
        "throttled": throttled,
        "seconds": 1.5,
        "quarantine": f"/data/quarantine/{run_id}.csv" if rejected else None,
        "error": None,
    }
    ledger.record_run(
        dag_id="voucherify_sync",
        try_number=1,
        window={"start": "2026-10-31T00:00:00+00:00", "end": "2026-11-01T00:00:00+00:00"},
        dry_run=False,
        status="success",
        started_at=dt.datetime(2026, 11, 1),
        report=report,
    )
    return report


@pytest.fixture
def filled(state_store):
    first = _load(
        "manual__1",
        sent=["1", "2", "3"],
        refused={"4": "422 email is invalid", "5": "422 email is invalid", "6": "409 duplicate"},
        rejected={"7": "email must be a valid address"},
        throttled=2,
    )
    second = _load("manual__2", sent=["4"], refused={}, rejected={}, throttled=0)  # 4 fixed and resent
    return state_store, first, second


@pytest.fixture
def auth_on(monkeypatch, airflow_db):
    """Airflow's simple auth manager with one admin (its token checks read the metadata database: revoked
    tokens); yields a function that logs the admin in (a JWT)."""
    monkeypatch.setenv("AIRFLOW__CORE__AUTH_MANAGER", SIMPLE)
    monkeypatch.setenv("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS", "admin:admin")
    monkeypatch.setenv("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS", "False")
    monkeypatch.setenv("AIRFLOW__API_AUTH__JWT_SECRET", "ui-api-tests-" + "s" * 64)
    from airflow.api_fastapi.app import init_auth_manager, purge_cached_app
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser

    purge_cached_app()
    manager = init_auth_manager()
    yield lambda: manager.generate_jwt(SimpleAuthManagerUser(username="admin", role="admin"))
    purge_cached_app()


@pytest.fixture
def client(filled, auth_on):
    from reverse_etl.ui.api import create_app

    path, *_ = filled
    return TestClient(create_app(f"sqlite:///{path}"))


ENDPOINTS = [
    "/api/syncs",
    "/api/budget",
    "/api/failures/voucherify/customers",
    "/api/records/voucherify/customers/4",
]


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_no_login_no_data(client, endpoint):
    answer = client.get(endpoint)
    assert answer.status_code == 401, answer.text
    assert "voucherify" not in answer.text
    forged = client.get(endpoint, cookies={"_token": "not-a-jwt"})
    assert forged.status_code == 403 and "voucherify" not in forged.text


def test_the_page_itself_holds_no_data(client):
    page = client.get("/")
    assert page.status_code == 200 and "<title>Reverse ETL</title>" in page.text
    assert "manual__1" not in page.text


def test_latest_runs_with_counts_window_quarantine_and_airflow_link(client, auth_on, filled):
    _, first, second = filled
    answer = client.get("/api/syncs", cookies={"_token": auth_on()})  # the cookie the UI sets at login
    assert answer.status_code == 200, answer.text
    [sync] = answer.json()
    assert (sync["destination"], sync["entity"]) == ("voucherify", "customers")
    newest, oldest = sync["runs"]
    assert [newest["run_id"], oldest["run_id"]] == ["manual__2", "manual__1"]
    for run, report in ((oldest, first), (newest, second)):
        assert run["counts"] == {name: report[name] for name in run["counts"]}
        assert run["quarantine"] == report["quarantine"]
        assert run["window_start"] == "2026-10-31T00:00:00+00:00" and run["status"] == "success"
    assert oldest["counts"]["sent"] == 3 and oldest["counts"]["throttled"] == 2
    assert oldest["airflow_url"] == "/dags/voucherify_sync/runs/manual__1"
    limited = client.get("/api/syncs?limit=1", headers={"Authorization": f"Bearer {auth_on()}"})
    assert [r["run_id"] for r in limited.json()[0]["runs"]] == ["manual__2"]


def test_record_lookup_is_the_clis_why(client, auth_on):
    cookies = {"_token": auth_on()}
    found = client.get("/api/records/voucherify/customers/4", cookies=cookies).json()
    assert found["current"]["status"] == DELIVERED and found["current"]["attempts"] == 2
    assert "payload" not in found["current"]
    assert [(e["status"], e["run_id"], e["detail"]) for e in found["events"]] == [
        (FAILED, "manual__1", "422 email is invalid"),
        (DELIVERED, "manual__2", None),
    ]
    unknown = client.get("/api/records/voucherify/customers/nobody", cookies=cookies).json()
    assert unknown["current"] is None and unknown["events"] == []


def test_failing_now_grouped_by_message(client, auth_on):
    groups = client.get("/api/failures/voucherify/customers", cookies={"_token": auth_on()}).json()
    # record 4 was refused, then delivered: it is not failing now
    assert groups == [
        {"status": FAILED, "message": "409 duplicate", "records": 1, "keys": ["6"]},
        {"status": FAILED, "message": "422 email is invalid", "records": 1, "keys": ["5"]},
        {"status": "rejected", "message": "email must be a valid address", "records": 1, "keys": ["7"]},
    ]


def test_rate_budget_per_account_and_minute(client, auth_on, filled):
    from reverse_etl.budget import add_request_minutes

    path, *_ = filled
    minute = dt.datetime(2026, 11, 1, 10, 0)
    add_request_minutes(
        f"sqlite:///{path}",
        "voucherify_voucherify_default",
        100,
        [(minute, 97, 0), (minute + dt.timedelta(minutes=1), 40, 2)],
    )
    cookies = {"_token": auth_on()}
    [account] = client.get("/api/budget", cookies=cookies).json()
    assert account["account"] == "voucherify_voucherify_default" and account["limit_per_minute"] == 100
    assert [(m["minute"], m["requests"], m["throttled"]) for m in account["minutes"]] == [
        ("2026-11-01T10:00", 97, 0),
        ("2026-11-01T10:01", 40, 2),
    ]
    assert account["peak"]["minute"] == "2026-11-01T10:00" and account["share"] == 0.97
    assert account["throttled_minutes"] == ["2026-11-01T10:01"]
    [latest] = client.get("/api/budget?minutes=1", cookies=cookies).json()
    assert [m["minute"] for m in latest["minutes"]] == ["2026-11-01T10:01"] and latest["share"] == 0.4
    assert client.get("/api/budget?minutes=0", cookies=cookies).status_code == 422


def test_a_missing_store_is_named_not_a_crash(tmp_path, auth_on):
    from reverse_etl.ui.api import create_app

    answer = TestClient(create_app(f"sqlite:///{tmp_path / 'none.db'}")).get(
        "/api/syncs", cookies={"_token": auth_on()}
    )
    assert answer.status_code == 503 and "does not exist" in answer.json()["detail"]


def test_airflow_loads_the_plugin():
    from airflow import plugins_manager

    apps, _ = plugins_manager.get_fastapi_plugins()
    assert "/reverse-etl" in [app["url_prefix"] for app in apps]
    views, _ = plugins_manager._get_ui_plugins()
    [view] = [v for v in views if v.get("url_route") == "reverse-etl"]
    assert view["href"] == "/reverse-etl/" and view["destination"] == "nav"


def test_the_plugin_builds_the_app_on_its_first_request(state_store, auth_on):
    """Every task process imports the plugin: the app (FastAPI, Airflow's API security) waits for the
    api-server's first request, and then serves the page and guards the JSON as mounted by Airflow."""
    import os
    import subprocess
    import sys

    from fastapi import FastAPI

    from sandbox.env import REPO

    imported = subprocess.run(
        [sys.executable, "-c", "import sys, retl_ui_plugin; print(sorted(sys.modules))"],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": str(REPO / "plugins")},
    ).stdout
    assert "'reverse_etl.ui.api'" not in imported and "'fastapi'" not in imported

    from retl_ui_plugin import URL_PREFIX, LazyApp

    lazy = LazyApp()
    server = FastAPI()
    server.mount(URL_PREFIX, lazy)  # as airflow.api_fastapi.app.init_plugins mounts it
    assert lazy._app is None
    client = TestClient(server)
    page = client.get(f"{URL_PREFIX}/")
    assert page.status_code == 200 and "<title>Reverse ETL</title>" in page.text
    built = lazy._app
    assert built is not None
    assert client.get(f"{URL_PREFIX}/api/syncs").status_code == 401
    assert client.get(f"{URL_PREFIX}/api/syncs", cookies={"_token": auth_on()}).status_code == 200
    assert lazy._app is built


@pytest.fixture
def validated(monkeypatch, state_store, warehouse, tmp_path):
    """October's Voucherify customers extracted and validated for real (the sample has defects), the run
    recorded as the load records it: the report names the quarantine file and its rule counts."""
    from reverse_etl.extract import extract
    from reverse_etl.validate import validate
    from reverse_etl.window import Window
    from sandbox.env import conn_json

    monkeypatch.setenv("AIRFLOW_CONN_RETL_WAREHOUSE", conn_json("duckdb", host=str(warehouse)))
    monkeypatch.setenv("RETL_STAGING_URL", (tmp_path / "staging").as_uri())
    window = Window(dt.datetime(2026, 10, 1, tzinfo=dt.UTC), dt.datetime(2026, 11, 1, tzinfo=dt.UTC))
    extracted = extract(destination="voucherify", entity="customers", window=window, dag_id="d", run_id="r1")
    manifest = validate(extract_manifest=extracted, dag_id="d", run_id="r1", max_rejected_share=0.9)
    report = {
        "extracted": manifest["rows"],
        "rejected": manifest["rejected"],
        "quarantine": manifest["quarantine_path"],
        "quarantine_rules": manifest["quarantine_rules"],
    }
    Ledger("voucherify", "customers", "r1").record_run(
        dag_id="d", try_number=1, window={}, dry_run=False, status="success",
        started_at=dt.datetime(2026, 11, 1), report=report,
    )  # fmt: skip
    with open(manifest["quarantine_path"].removeprefix("file://"), encoding="utf-8") as handle:
        lines = [json.loads(line) for line in handle]
    return state_store, manifest, lines


@pytest.fixture
def viewer(auth_on, monkeypatch):
    """A second user with Airflow's read-only role: may read runs, may not change them."""
    from airflow.api_fastapi.app import init_auth_manager, purge_cached_app
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser

    monkeypatch.setenv("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS", "admin:admin,viewer:viewer")
    purge_cached_app()
    manager = init_auth_manager()
    return lambda: manager.generate_jwt(SimpleAuthManagerUser(username="viewer", role="viewer"))


def _personal_values(lines: list[dict]) -> set[str]:
    from reverse_etl.validate import personal_fields

    personal = personal_fields("voucherify", "customers")
    return {
        str(value)
        for line in lines
        for column, value in line["row"].items()
        if column in personal and value is not None and len(str(value)) > 3
    }


def test_quarantine_rules_counts_and_masked_samples(validated, auth_on, viewer):
    from reverse_etl.ui.api import create_app

    path, manifest, lines = validated
    client = TestClient(create_app(f"sqlite:///{path}"))
    for token in (auth_on(), viewer()):  # readers see it masked
        answer = client.get("/api/quarantine/voucherify/customers", cookies={"_token": token})
        assert answer.status_code == 200, answer.text
        found = answer.json()
        assert found["run_id"] == "r1" and found["rejected"] == manifest["rejected"] == len(lines)
        assert found["location"] == manifest["quarantine_path"] and found["masked"]
        counted = {}
        for line in lines:
            for failure in {(f.get("rule") or f["expectation"], f["column"]) for f in line["failures"]}:
                counted[f"{failure[0]} on {failure[1]}"] = counted.get(f"{failure[0]} on {failure[1]}", 0) + 1
        assert {r["rule"]: r["rows"] for r in found["rules"]} == counted  # every row of the file, by rule
        assert all(1 <= len(r["samples"]) <= 3 for r in found["rules"])
        shown = answer.text
        leaked = [value for value in _personal_values(lines) if value in shown]
        assert not leaked, leaked
        country = next(r for r in found["rules"] if r["column"] == "address__country")
        raw = {line["row"]["address__country"] for line in lines}
        assert all(s["value"] in raw for s in country["samples"])  # not personal: shown as it is
        email = next(r for r in found["rules"] if r["column"] == "email")
        assert all("***" in s["value"] for s in email["samples"] if s["value"])

    plain = client.get("/api/quarantine/voucherify/customers/unmasked", cookies={"_token": auth_on()})
    assert plain.status_code == 200 and not plain.json()["masked"]
    email = next(r for r in plain.json()["rules"] if r["column"] == "email")
    assert {s["value"] for s in email["samples"]} <= {line["row"]["email"] for line in lines}
    refused = client.get("/api/quarantine/voucherify/customers/unmasked", cookies={"_token": viewer()})
    assert refused.status_code == 403 and "@" not in refused.text


def test_the_ledger_keeps_the_rules_not_the_values(validated):
    from reverse_etl.ledger import record_history

    _, _, lines = validated
    rejected = [line for line in lines if line["failures"][0]["rule"] and "superseded" not in line["reason"]]
    for line in rejected[:20]:
        error = record_history("voucherify", "customers", str(line["record_key"]))["current"]["error"]
        assert line["failures"][0]["rule"] in error
        values = [
            str(f["value"]) for f in line["failures"] if f["value"] is not None and len(str(f["value"])) > 3
        ]
        assert not [v for v in values if v in error], error


def test_failing_now_masks_emails_in_vendor_messages(state_store, auth_on):
    _load(
        "manual__9", sent=[], refused={"8": "422 contact anna.kowalska@example.com is blocked"}, rejected={}
    )
    from reverse_etl.ui.api import create_app

    client = TestClient(create_app(f"sqlite:///{state_store}"))
    [group] = client.get("/api/failures/voucherify/customers", cookies={"_token": auth_on()}).json()
    assert group["message"] == "422 contact a***@example.com is blocked" and group["keys"] == ["8"]
    [group] = client.get("/api/failures/voucherify/customers/unmasked", cookies={"_token": auth_on()}).json()
    assert "anna.kowalska@example.com" in group["message"]
