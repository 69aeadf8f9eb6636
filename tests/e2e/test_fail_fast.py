"""Errors no retry can fix end the run at once, through real Airflow with retries on (RETL_TASK_RETRIES=3):
the failing task stops at try 1 in state failed, its log holds one message naming the thing and no
library traceback, and the vendor saw the wrong credentials once.

One Voucherify run carries three faults in three task groups (a wrong API token for customers, a SQL
syntax error in the orders mapping, an unknown expectation in the products suite); one Splio run has a
wrong host key."""

from __future__ import annotations

import json
import shutil
from urllib.parse import quote

import asyncssh
import pytest

from sandbox.env import REPO
from tests.e2e.alert_receivers import BASE_URL, AlertReceivers, body
from tests.e2e.harness import Harness

pytestmark = pytest.mark.e2e

WINDOW = ("2026-10-31", "2026-11-01")  # one day: rows in every sync, a quick run
RETRIES = {"RETL_TASK_RETRIES": "3"}  # a retryable error would be retried: these must not be
CHAINED = ("During handling of the above exception", "The above exception was the direct cause")


def assert_failed_once(result: dict, task_id: str) -> None:
    assert result["tasks"][task_id] == "failed", result["tasks"]  # not up_for_retry
    assert result["tries"][task_id] == 1, result["tries"]


def assert_no_library_traceback(log: str, *names: str) -> None:
    for text in (*CHAINED, *names):
        assert text not in log, f"{text!r} in the run's log"


def test_a_window_that_ends_before_it_starts_fails_the_extract_at_once(harness: Harness):
    """A swapped window passes the params' date format (checked when the run is created) but not the
    order of its ends: the first task says so in one sentence, and is not retried."""
    harness.env.update(RETRIES)
    swapped = {"window_start": "2026-11-01", "window_end": "2026-10-31", "entities": ["products"]}
    result = harness.run(swapped, window=WINDOW, expect_success=False)
    assert_failed_once(result, "products.extract")
    assert result["tasks"]["products.load"] == "upstream_failed"
    log = result["log"].read_text()
    assert (
        "Empty window: the end must be after the start, but param 'window_end' is 2026-10-31T00:00:00+00:00 "
        "and param 'window_start' is 2026-11-01T00:00:00+00:00: swap them?"
    ) in log
    assert harness.sandbox.requests == []
    assert "**Failed:** products.extract: see its log." in result["note"]


def test_too_many_rejected_rows_fail_the_validation_at_once_and_the_run_still_shows_them(harness: Harness):
    """A broken upstream (here: a threshold below the sample's defect rate) stops the sync at validate,
    without retry and before any request; the failed run is still recorded with its counts and quarantine,
    so the page, the note and the report say what was rejected and where."""
    harness.env.update(RETRIES)
    conf = {"entities": ["customers"], "max_rejected_share": 0.01}
    result = harness.run(conf, window=("2026-10-01", "2026-11-01"), expect_success=False)
    assert_failed_once(result, "customers.validate")
    assert result["tasks"]["customers.load"] == "upstream_failed"
    report = result["reports"]["customers"]
    assert report["status"] == "failed" and report["rejected"] > 0 and report["sent"] == 0
    assert report["extracted"] == report["valid"] + report["rejected"]
    assert sum(rule["rows"] for rule in report["quarantine_rules"]) >= report["rejected"]
    with open(report["quarantine"].removeprefix("file://"), encoding="utf-8") as handle:
        assert sum(1 for _ in handle) == report["rejected"]
    assert "max_rejected_share" in report["error"]
    assert report["quarantine"] in result["note"] or report["quarantine"].rsplit("/", 2)[0] in result["note"]
    assert "**Failed:** customers.validate: see its log." in result["note"]
    assert harness.sandbox.requests == []


def test_a_wrong_token_a_broken_mapping_and_a_bad_suite_fail_at_once(
    harness: Harness, tmp_path, alert_receivers: AlertReceivers
):
    include = tmp_path / "include"
    shutil.copytree(REPO / "include", include)
    orders_sql = include / "sql" / "voucherify" / "orders.sql"
    lines = orders_sql.read_text(encoding="utf-8").split("\n")
    broken_line = lines.index("    FROM orders") + 1
    lines[broken_line - 1] = "    FROM orders orders orders"
    orders_sql.write_text("\n".join(lines), encoding="utf-8")
    suite_file = include / "expectations" / "voucherify" / "products.json"
    suite = json.loads(suite_file.read_text(encoding="utf-8"))
    suite["expectations"].append({"type": "expect_column_values_to_be_nice", "kwargs": {"column": "name"}})
    suite_file.write_text(json.dumps(suite), encoding="utf-8")
    connection = json.loads(harness.env["AIRFLOW_CONN_VOUCHERIFY_DEFAULT"])
    harness.env.update(alert_receivers.env())
    harness.env.update(
        RETRIES,
        RETL_INCLUDE_DIR=str(include),
        AIRFLOW_CONN_VOUCHERIFY_DEFAULT=json.dumps({**connection, "password": "wrong-token"}),
    )

    result = harness.run(window=WINDOW, expect_success=False)
    log = result["log"].read_text()
    assert result["state"] == "failed"
    for task_id in ("customers.load", "orders.extract", "products.validate"):
        assert_failed_once(result, task_id)
    assert result["tasks"]["orders.load"] == result["tasks"]["products.load"] == "upstream_failed"

    # One readable message per fault, naming the thing and what to do.
    assert "Voucherify refused the credentials of connection 'voucherify_default'" in log
    assert (
        f"SQL mapping include/sql/voucherify/orders.sql (line {broken_line}) does not run on the duckdb "
        'warehouse: Parser Error: syntax error at or near "orders". Fix the file'
    ) in log
    assert (
        "Expectation suite include/expectations/voucherify/products.json: expectation #"
        f"{len(suite['expectations'])} 'expect_column_values_to_be_nice' on column 'name' is malformed: "
        "unknown expectation type"
    ) in log
    assert log.count("[not retried: fix this, then clear the failed task]") >= 3
    assert_no_library_traceback(log, "ParserException", "ExpectationNotFoundError", "wrong-token")
    # The DAG run's note names the failed tasks (the report failed because of them).
    assert result["note"].endswith(
        "**Failed:** customers.load, orders.extract, products.validate: see their log."
    )
    # The report names the tasks whose logs to read.
    assert (
        "No successful load for customers, products, orders: "
        "customers.load, orders.extract, products.validate failed: see their log."
    ) in log

    # The sandbox saw the wrong token once: no HTTP-level retry of a 401.
    api = [r for r in harness.sandbox.requests if r["path"].startswith("/v1/")]
    assert [r["status"] for r in api] == [401]

    # One failed-run alert by each notifier (the DAG's on_failure_callback), with the run's link and
    # what each sync got done; the wrong token is in neither.
    assert [a["kind"] for a in alert_receivers.alerts()] == ["run_failed"]
    alert = alert_receivers.alerts()[0]
    assert alert["dag_id"] == "voucherify_sync" and alert["run_id"] == result["run_id"]
    assert alert["url"] == f"{BASE_URL}/dags/voucherify_sync/runs/{quote(result['run_id'], safe='')}"
    report = result["reports"]["customers"]
    assert alert["counts"] == {
        "customers (failed)": f"extracted {report['extracted']}, valid {report['valid']}, "
        f"rejected {report['rejected']}, sent 0, failed 0"
    }
    assert alert["summary"].startswith("The run failed at task ")
    [mail] = alert_receivers.mails
    assert mail["Subject"] == "[reverse-etl] run failed: voucherify_sync"
    assert alert["url"] in body(mail)
    assert "wrong-token" not in body(mail) and "wrong-token" not in json.dumps(alert_receivers.hooks)


@pytest.fixture
def splio(airflow_db, warehouse, tmp_path):
    from sandbox.sftp import SFTPSandbox
    from tests.e2e.harness import run_env

    with SFTPSandbox(tmp_path / "splio") as sftp:
        stranger = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode()
        env = run_env(
            tmp_path,
            warehouse,
            splio_sftp=sftp.connection(host_key=" ".join(stranger.split()[:2])),
        )
        yield Harness(sftp, {**env, **RETRIES}, tmp_path, dag_id="splio_referral_sync")


def test_a_wrong_sftp_host_key_fails_at_once_after_one_handshake(splio: Harness):
    result = splio.run(window=WINDOW, expect_success=False)
    log = result["log"].read_text()
    assert result["state"] == "failed"
    assert_failed_once(result, "referral_contacts.load")
    assert (
        "Splio's SFTP server at 127.0.0.1 presented a host key that is not the one in connection "
        "'splio_referral_default' (extra host_key)"
    ) in log
    assert_no_library_traceback(log, "BadHostKeyException", "Failed to connect. Sleeping before retry")
    assert splio.sandbox.connections == 1  # no SSH-hook retry, no upload retry, no Airflow retry
    assert splio.sandbox.files() == {}
    assert "No successful load for referral_contacts: referral_contacts.load failed: see its log." in log
