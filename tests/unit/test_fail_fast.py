"""Errors no retry can fix fail at once with one message naming the thing: the fail_fast conversion, SQL
mapping and suite messages, the window and run_dag date messages, and the SFTP hook's connection retries."""

from __future__ import annotations

import datetime as dt
import importlib.util
import json
import logging
import socket
import time

import pytest
from airflow.sdk.exceptions import AirflowFailException

from reverse_etl.errors import (
    ConfigError,
    StateStoreError,
    VendorAuthError,
    VendorUnavailable,
    fail_fast,
)
from reverse_etl.extract import extract
from reverse_etl.validate import validate
from reverse_etl.window import Window, resolve_window
from sandbox.env import REPO, conn_json

WINDOW = Window(dt.datetime(2026, 10, 1, tzinfo=dt.UTC), dt.datetime(2026, 10, 8, tzinfo=dt.UTC))
GOOD_SQL = "SELECT CAST(customer_id AS VARCHAR) AS _key, false AS _deleted, email FROM customers"


# --- the conversion -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "error",
    [
        ConfigError("Connection 'x' is not defined."),
        StateStoreError("State store sqlite:///x.db does not exist: run `python -m reverse_etl.cli init`."),
        VendorAuthError("Voucherify refused connection 'v'."),
    ],
)
def test_errors_no_retry_can_fix_become_one_fail_exception_without_a_chain(error, caplog):
    @fail_fast()
    def task():
        try:
            raise KeyError("library detail")
        except KeyError as exc:
            raise error from exc

    with caplog.at_level(logging.ERROR), pytest.raises(AirflowFailException) as raised:
        task()
    assert str(raised.value).startswith(str(error)) and "not retried" in str(raised.value)
    assert raised.value.__cause__ is None and raised.value.__suppress_context__
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert [r.getMessage() for r in errors] == [str(raised.value)]


def test_outages_pass_through_for_airflow_to_retry():
    with pytest.raises(VendorUnavailable), fail_fast():
        raise VendorUnavailable("Voucherify failed 6 times")
    with pytest.raises(ConnectionError), fail_fast():
        raise ConnectionError("reset by peer")


# --- the window and run_dag ---------------------------------------------------------------------------
def test_swapped_window_params_say_the_end_must_be_after_the_start_and_show_both():
    with pytest.raises(ConfigError) as raised:
        resolve_window({"window_start": "2026-11-01", "window_end": "2026-10-01"}, None, None)
    message = str(raised.value)
    assert "the end must be after the start" in message and "swap" in message
    assert "2026-10-01T00:00:00+00:00" in message and "2026-11-01T00:00:00+00:00" in message
    assert "Timetable" not in message


def test_a_zero_width_data_interval_shows_both_ends():
    start = dt.datetime(2026, 10, 1, tzinfo=dt.UTC)
    with pytest.raises(ConfigError, match="the end must be after the start") as raised:
        resolve_window({}, start, start)
    assert str(raised.value).count("2026-10-01T00:00:00+00:00") == 2


def run_dag_main(argv, capsys) -> tuple[int, str]:
    spec = importlib.util.spec_from_file_location("run_dag", REPO / "scripts" / "run_dag.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    with pytest.raises(SystemExit) as exited:
        module.main(argv)
    return exited.value.code, capsys.readouterr().err


def test_run_dag_refuses_a_bad_date_in_one_line_with_exit_code_2(capsys):
    code, err = run_dag_main(
        ["voucherify_sync", "--window-start", "2026-10-01", "--window-end", "tomorrow"], capsys
    )
    assert code == 2
    assert err == "--window-end 'tomorrow' is not a date: use YYYY-MM-DD\n"
    code, err = run_dag_main(
        ["voucherify_sync", "--window-start", "2026-10-01T00:00:00", "--window-end", "2026-10-02"], capsys
    )
    assert code == 2 and err == "--window-start '2026-10-01T00:00:00' is not a date: use YYYY-MM-DD\n"
    code, err = run_dag_main(
        ["voucherify_sync", "--window-start", "2026-11-01", "--window-end", "2026-10-01"], capsys
    )
    assert code == 2 and err == "--window-end '2026-10-01' must be after --window-start '2026-11-01'\n"


# --- SQL mappings ---------------------------------------------------------------------------------------
@pytest.fixture
def include(monkeypatch, state_store, tmp_path):
    folder = tmp_path / "include"
    (folder / "sql" / "v").mkdir(parents=True)
    (folder / "expectations" / "v").mkdir(parents=True)
    monkeypatch.setenv("RETL_INCLUDE_DIR", str(folder))
    monkeypatch.setenv("RETL_STAGING_URL", (tmp_path / "staging").as_uri())
    return folder


def extract_v() -> dict:
    return extract(destination="v", entity="customers", window=WINDOW, dag_id="d", run_id="r")


def test_a_syntax_error_names_the_file_the_line_and_the_database_message(include, monkeypatch, warehouse):
    monkeypatch.setenv("AIRFLOW_CONN_RETL_WAREHOUSE", conn_json("duckdb", host=str(warehouse)))
    (include / "sql" / "v" / "customers.sql").write_text(
        "SELECT CAST(customer_id AS VARCHAR) AS _key,\n  false AS _deleted\nFROMM customers\n"
    )
    with pytest.raises(ConfigError) as raised:
        extract_v()
    message = str(raised.value)
    assert message.startswith("SQL mapping include/sql/v/customers.sql (line 3) does not run on the duckdb")
    assert 'Parser Error: syntax error at or near "FROMM". Fix the file' in message and "\n" not in message
    (include / "sql" / "v" / "customers.sql").write_text(GOOD_SQL.replace("email", "no_such_column"))
    with pytest.raises(ConfigError, match=r"include/sql/v/customers\.sql .*Binder Error.*no_such_column"):
        extract_v()


def test_a_connection_failure_is_not_a_mapping_error(include, monkeypatch, tmp_path):
    """An unreachable PostgreSQL warehouse is an outage: it stays retryable (not a ConfigError)."""
    import psycopg2

    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("AIRFLOW_CONN_RETL_WAREHOUSE", f"postgres://u@127.0.0.1:{port}/db")
    (include / "sql" / "v" / "customers.sql").write_text(GOOD_SQL)
    with pytest.raises(psycopg2.OperationalError):
        extract_v()


@pytest.mark.postgres
def test_a_postgres_syntax_error_names_the_file_and_the_line(include, monkeypatch, postgres_database):
    monkeypatch.setenv(
        "AIRFLOW_CONN_RETL_WAREHOUSE", postgres_database.replace("postgresql://", "postgres://", 1)
    )
    (include / "sql" / "v" / "customers.sql").write_text(
        "SELECT '1' AS _key,\n  false AS _deleted\nFROMM x\n"
    )
    with pytest.raises(ConfigError) as raised:
        extract_v()
    message = str(raised.value)
    assert message.startswith("SQL mapping include/sql/v/customers.sql (line 3) does not run on the postgres")
    assert "syntax error at or near" in message and "\n" not in message


# --- suites ---------------------------------------------------------------------------------------------
@pytest.fixture
def extracted(include, monkeypatch, warehouse) -> dict:
    monkeypatch.setenv("AIRFLOW_CONN_RETL_WAREHOUSE", conn_json("duckdb", host=str(warehouse)))
    (include / "sql" / "v" / "customers.sql").write_text(GOOD_SQL)
    return extract_v()


def validate_with(include, suite: str | dict, extracted: dict) -> str:
    text = suite if isinstance(suite, str) else json.dumps(suite)
    (include / "expectations" / "v" / "customers.json").write_text(text)
    with pytest.raises(ConfigError) as raised:
        validate(extract_manifest=extracted, dag_id="d", run_id="r", max_rejected_share=1)
    return str(raised.value)


def test_suite_errors_name_the_file_and_the_expectation(include, extracted):
    message = validate_with(include, '{"expectations": [\n  {"type": "x",}\n]}', extracted)
    assert message.startswith("Expectation suite include/expectations/v/customers.json is not valid JSON")
    assert "line 2" in message

    unknown = {"type": "expect_column_values_to_be_nice", "kwargs": {"column": "email"}}
    message = validate_with(include, {"expectations": [unknown]}, extracted)
    assert message.startswith("Expectation suite include/expectations/v/customers.json: expectation #1")
    assert "'expect_column_values_to_be_nice' on column 'email'" in message
    assert "unknown expectation type" in message

    bad_kwarg = {"type": "expect_column_values_to_not_be_null", "kwargs": {"colum": "email"}}
    unique = {"type": "expect_column_values_to_be_unique", "kwargs": {"column": "email"}}
    message = validate_with(include, {"expectations": [unique, bad_kwarg]}, extracted)
    assert "expectation #2 'expect_column_values_to_not_be_null' is malformed" in message
    assert "colum: extra fields not permitted" in message

    no_column = {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "no_such_column"}}
    message = validate_with(include, {"expectations": [no_column]}, extracted)
    assert message.startswith("Expectation suite include/expectations/v/customers.json:")
    assert "'no_such_column', which include/sql/v/customers.sql does not select" in message


# --- the SFTP hook: no connection retries for what cannot succeed ----------------------------------------
@pytest.fixture
def sftp(tmp_path):
    from sandbox.sftp import SFTPSandbox

    with SFTPSandbox(tmp_path / "splio") as sandbox:
        yield sandbox


def splio_hook(monkeypatch, sandbox, port=None, **extra):
    from reverse_etl.hooks.splio import SplioSFTPHook

    merged = {**sandbox.connection_extra(backoff_base_seconds=0.01), **extra}
    monkeypatch.setenv(
        "AIRFLOW_CONN_SPLIO_REFERRAL_DEFAULT",
        conn_json("sftp", host="127.0.0.1", port=port or sandbox.port, login=sandbox.username, extra=merged),
    )
    return SplioSFTPHook()


def test_a_wrong_host_key_or_client_key_costs_one_handshake(sftp, monkeypatch, tmp_path):
    import asyncssh

    local = tmp_path / "file.csv"
    local.write_bytes(b"a\n")
    other = asyncssh.generate_private_key("ssh-ed25519")
    hook = splio_hook(monkeypatch, sftp, host_key=" ".join(other.export_public_key().decode().split()[:2]))
    with pytest.raises(ConfigError, match="presented a host key that is not the one"):
        hook.upload(str(local), "x.csv")
    # The server counts a connection in its own thread: wait for it, then check no second one came (the
    # hook raised after its only attempt, so none can come later).
    settled(lambda: sftp.connections >= 1)
    assert sftp.connections == 1
    hook = splio_hook(monkeypatch, sftp, private_key=other.export_private_key("openssh").decode())
    with pytest.raises(VendorAuthError, match="refused user 'splio'"):
        hook.upload(str(local), "x.csv")
    settled(lambda: sftp.connections >= 2)
    assert sftp.connections == 2 and sftp.files() == {}


def settled(predicate, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.05)


def test_an_unreachable_server_is_still_retried(sftp, monkeypatch, tmp_path):
    local = tmp_path / "file.csv"
    local.write_bytes(b"a\n")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    hook = splio_hook(monkeypatch, sftp, port=closed, upload_attempts=3)
    with pytest.raises(VendorUnavailable, match="failed 3 times"):
        hook.upload(str(local), "x.csv")
