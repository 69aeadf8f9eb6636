"""splio_referral_sync through Airflow against the sample warehouse and a real SFTP server on loopback."""

from __future__ import annotations

import csv
import io
import re

import duckdb
import pytest

from reverse_etl.ledger import record_history
from sandbox.sftp import SFTPSandbox
from tests.e2e.harness import WINDOW, Harness, run_env
from tests.e2e.test_voucherify_e2e import quarantined

pytestmark = pytest.mark.e2e
NAME = "referral_contacts_20261028.csv"  # the window's start date
EMAIL = re.compile(r"^[a-z0-9._%+'-]+@[a-z0-9-]+(?:\.[a-z0-9-]+)*\.[a-z]{2,}$")


@pytest.fixture
def splio(airflow_db, warehouse, tmp_path):
    with SFTPSandbox(tmp_path / "splio") as sftp:
        harness = Harness(sftp, {}, tmp_path, dag_id="splio_referral_sync")
        harness.configure = lambda **extra: harness.env.update(
            run_env(
                tmp_path,
                warehouse,
                splio_sftp={
                    "host": "127.0.0.1",
                    "port": sftp.port,
                    "login": sftp.username,
                    "extra": sftp.connection_extra(backoff_base_seconds=0.05, **extra),
                },
            )
        )
        harness.configure()
        yield harness


def expected_file(warehouse, window=WINDOW) -> tuple[bytes, set[str]]:
    """The file as Splio's rules and our documented ones say it must be, from the warehouse directly."""
    con = duckdb.connect(str(warehouse), read_only=True)
    rows = con.execute(
        "SELECT referral_id, lower(email), last_name, first_name, lower(language), phone, referrer_code, "
        "referred_by, loyalty_card, deleted_at FROM referral_contacts "
        "WHERE updated_at >= ?::TIMESTAMP AND updated_at < ?::TIMESTAMP ORDER BY referral_id, updated_at",
        list(window),
    ).fetchall()
    con.close()
    latest = {r[0]: r for r in rows}  # a repeated id: the newer row wins
    bad = {
        k
        for k, r in latest.items()
        if r[1] is None
        or not EMAIL.match(r[1])
        or len(r[1]) > 100
        or r[2] is None
        or r[3] is None
        or len(r[2]) > 255
        or len(r[3]) > 255
    }
    out = io.StringIO()
    writer = csv.writer(out, delimiter=";", lineterminator="\n")
    writer.writerow(
        [
            "unique_id",
            "email",
            "lastname",
            "firstname",
            "language",
            "cellphone",
            "referrer_code",
            "referred_by",
            "loyalty_card",
        ]
    )
    for key, r in latest.items():
        if key in bad or r[9] is not None:
            continue
        cells = ["" if v is None else re.sub(r"\r\n|\r|\n", " ", str(v)) for v in r[:9]]
        cells = [
            ("'" + c)
            if c[:1] in ("=", "+", "-", "@") and not re.fullmatch(r"[+-]?[0-9][0-9 .,()/-]*", c)
            else c
            for c in cells
        ]
        writer.writerow(cells)
    return out.getvalue().encode("utf-8"), bad


def test_the_window_file_arrives_byte_for_byte_and_a_rerun_replaces_it(splio, warehouse):
    expected, bad = expected_file(warehouse)
    assert expected.count(b"\n") > 50 and bad
    first = splio.run()["reports"]["referral_contacts"]
    assert splio.sandbox.files() == {NAME: expected}
    assert first["files"] == [NAME] and first["sent"] == expected.count(b"\n") - 1
    assert first["folded_line_breaks"] > 0  # the sample holds last names with a line break
    assert bad <= set(quarantined(first))
    key = expected.split(b"\n")[1].split(b";")[0].decode()
    history = record_history("splio_referral", "referral_contacts", key, url=splio.state_url)
    assert history["current"]["status"] == "delivered" and history["current"]["vendor_ref"] == f"sftp:{NAME}"

    again = splio.run()["reports"]["referral_contacts"]
    assert splio.sandbox.files() == {NAME: expected}  # replaced, not a second copy
    assert again["files"] == [NAME]


def test_parts_then_one_file_and_a_dropped_upload_leaves_only_complete_files(splio, warehouse):
    expected, _ = expected_file(warehouse)
    lines = expected.split(b"\n")[1:-1]
    splio.configure(max_lines=41)  # 40 rows per part
    splio.sandbox.drop_after(3000)  # the first attempt at the first part dies in the middle
    report = splio.run()["reports"]["referral_contacts"]
    files = splio.sandbox.files()
    parts = -(-len(lines) // 40)
    assert splio.sandbox.drops == 1 and len(files) == parts == len(report["files"]) > 1
    assert sorted(files) == [NAME.replace(".csv", f"_{n:02d}.csv") for n in range(1, parts + 1)]
    assert (
        b"".join(b"\n".join(f.split(b"\n")[1:]) for _, f in sorted(files.items()))
        == b"\n".join(lines) + b"\n"
    )

    splio.configure()  # back to 200,000 lines: the rerun's single file replaces every part
    splio.run()
    assert splio.sandbox.files() == {NAME: expected}


def test_no_changes_no_file_and_dry_run_uploads_nothing(splio):
    empty = splio.run(window=("2026-12-01", "2026-12-02"))["reports"]["referral_contacts"]
    assert empty["files"] == [] and empty["sent"] == 0
    assert "no changes in the window" in empty_log(splio)
    dry = splio.run({"dry_run": True})["reports"]["referral_contacts"]
    assert splio.sandbox.files() == {}
    assert dry["to_send"] > 50 and dry["files"] == [NAME]


def empty_log(splio) -> str:
    return splio.runs[-1]["log"].read_text()
