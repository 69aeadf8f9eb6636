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
                splio_sftp=sftp.connection(backoff_base_seconds=0.05, **extra),
            )
        )
        harness.configure()
        yield harness


SPLIO_LANGUAGES = {
    "ar",
    "br",
    "ca",
    "cz",
    "de",
    "en",
    "es",
    "fr",
    "gr",
    "it",
    "ja",
    "kr",
    "nl",
    "pl",
    "ru",
    "tr",
    "zh",
}
ISO_TO_SPLIO = {"el": "gr", "cs": "cz", "ko": "kr"}


def blank(value) -> bool:
    return value is None or not str(value).strip()


def splio_language(value):
    code = (value or "").strip().lower()
    code = ISO_TO_SPLIO.get(code, code)
    return code if code in SPLIO_LANGUAGES else None


def expected_file(warehouse, window=WINDOW) -> tuple[bytes, set[str]]:
    """The file as Splio's rules and our documented ones say it must be, from the warehouse directly."""
    con = duckdb.connect(str(warehouse), read_only=True)
    rows = con.execute(
        "SELECT referral_id, lower(email), last_name, first_name, language, phone, referrer_code, "
        "referred_by, loyalty_card, deleted_at FROM referral_contacts "
        "WHERE updated_at >= ?::TIMESTAMP AND updated_at < ?::TIMESTAMP ORDER BY referral_id, updated_at",
        list(window),
    ).fetchall()
    con.close()
    latest = {}
    for r in rows:  # a repeated id: the newer row wins
        phone = r[5] if r[5] is None or not r[5].startswith("+") else "00" + r[5][1:]
        latest[r[0]] = (*r[:4], splio_language(r[4]), phone, *r[6:])
    bad = {
        k
        for k, r in latest.items()
        if any(blank(v) for v in r[:4])
        or not EMAIL.match(r[1])
        or len(r[1]) > 100
        or len(r[2]) > 255
        or len(r[3]) > 255
        or len(r[5] or "") > 30
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
    q = quarantined(first)
    assert bad <= set(q)
    # Every injected blank name is quarantined with the rule's name, and Splio's pickup takes the file.
    blank_names = {k for k, kinds in defects(warehouse).items() if "blank_name" in kinds} & set(
        expected_keys(warehouse)
    )
    for key in blank_names:
        assert any("must not be blank" in f["rule"] for f in q[key]["failures"]), q[key]
    assert splio.sandbox.pickup() == {NAME: {"status": "imported", "rows": first["sent"], "problems": []}}
    key = expected.split(b"\n")[1].split(b";")[0].decode()
    history = record_history("splio_referral", "referral_contacts", key, url=splio.state_url)
    assert history["current"]["status"] == "delivered" and history["current"]["vendor_ref"] == f"sftp:{NAME}"

    again = splio.run()["reports"]["referral_contacts"]
    assert splio.sandbox.files() == {NAME: expected}  # replaced, not a second copy
    assert again["files"] == [NAME]


def test_no_changes_no_file_and_dry_run_uploads_nothing(splio):
    empty = splio.run(window=("2026-12-01", "2026-12-02"))["reports"]["referral_contacts"]
    assert empty["files"] == [] and empty["sent"] == 0
    assert "no changes in the window" in empty_log(splio)
    dry = splio.run({"dry_run": True})["reports"]["referral_contacts"]
    assert splio.sandbox.files() == {}
    assert dry["to_send"] > 50 and dry["files"] == [NAME]


def defects(warehouse) -> dict[str, set[str]]:
    con = duckdb.connect(str(warehouse), read_only=True)
    out: dict[str, set[str]] = {}
    for key, defect in con.execute(
        "SELECT record_key, defect FROM dq_injected_defects WHERE table_name = 'referral_contacts'"
    ).fetchall():
        out.setdefault(key, set()).add(defect)
    con.close()
    return out


def expected_keys(warehouse, window=WINDOW) -> list[str]:
    con = duckdb.connect(str(warehouse), read_only=True)
    keys = con.execute(
        "SELECT DISTINCT referral_id FROM referral_contacts "
        "WHERE updated_at >= ?::TIMESTAMP AND updated_at < ?::TIMESTAMP AND deleted_at IS NULL",
        list(window),
    ).fetchall()
    con.close()
    return [k for (k,) in keys]


def empty_log(splio) -> str:
    return splio.runs[-1]["log"].read_text()


OLD_SUITE = {  # the rules before issue 9: mandatory names only had to be non-null
    "name": "splio_referral.referral_contacts",
    "expectations": [
        {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": c}, "meta": {"rule": f"{c} set"}}
        for c in ("email", "lastname", "firstname")
    ],
}


def test_blank_mandatory_names_old_rules_are_refused_by_splio_new_rules_quarantine(
    splio, warehouse, tmp_path
):
    import json
    import shutil

    from sandbox.env import REPO, conn_json

    copy = tmp_path / "warehouse.duckdb"
    shutil.copy(warehouse, copy)
    con = duckdb.connect(str(copy))
    (key,) = con.execute(
        "SELECT min(referral_id) FROM referral_contacts WHERE updated_at >= ?::TIMESTAMP "
        "AND updated_at < ?::TIMESTAMP AND deleted_at IS NULL",
        list(WINDOW),
    ).fetchone()
    con.execute(
        "UPDATE referral_contacts SET last_name = '   ', first_name = '' WHERE referral_id = ?", [key]
    )
    con.close()
    splio.env["AIRFLOW_CONN_RETL_WAREHOUSE"] = conn_json("duckdb", host=str(copy))

    # The old rules let the blank names through: the file goes up and Splio's import refuses it.
    include = tmp_path / "include"
    shutil.copytree(REPO / "include", include)
    (include / "expectations" / "splio_referral" / "referral_contacts.json").write_text(json.dumps(OLD_SUITE))
    splio.env["RETL_INCLUDE_DIR"] = str(include)
    splio.run()
    (report,) = splio.sandbox.pickup().values()
    assert report["status"] == "refused"
    assert any("lastname is blank" in p for p in report["problems"])
    assert any("firstname is blank" in p for p in report["problems"])

    # The current rules quarantine that contact with the rule's name; the rerun's file is imported.
    splio.env.pop("RETL_INCLUDE_DIR")
    again = splio.run()["reports"]["referral_contacts"]
    rules = {f["rule"] for f in quarantined(again)[key]["failures"]}
    assert {
        "lastname is required and must not be blank",
        "firstname is required and must not be blank",
    } <= rules
    (report,) = splio.sandbox.pickup().values()
    assert report == {"status": "imported", "rows": again["sent"], "problems": []}
