"""Reading Splio Referral's files back for reconcile, from a real SFTP server: every window's file of the
pattern (gzipped or not), the newest file's line winning, compared with the lines we would write now."""

from __future__ import annotations

import gzip

import pytest

from reverse_etl.ledger import Ledger, record_history
from reverse_etl.operators.splio import SplioReferralUploadOperator
from reverse_etl.reconcile import reconcile
from sandbox.sftp import SFTPSandbox
from tests.contract.test_splio_sftp import wire


@pytest.fixture
def sftp(tmp_path):
    with SFTPSandbox(tmp_path / "splio") as sandbox:
        yield sandbox


def row(key: str, email: str, first: str) -> dict:
    return {
        "_key": key,
        "_deleted": False,
        "unique_id": key,
        "email": email,
        "firstname": first,
        "lastname": "Lee",
    }


def test_lines_on_the_server_are_held_the_newest_file_wins(sftp, monkeypatch, tmp_path, state_store):
    hook = wire(monkeypatch, sftp)
    old = tmp_path / "old.csv"
    old.write_text(
        "unique_id;email;lastname;firstname\nR1;ann@example.com;Lee;Ann\nR2;bob@example.com;Lee;Bob\n"
    )
    new = tmp_path / "new.csv.gz"
    new.write_bytes(gzip.compress(b"unique_id;email;lastname;firstname\nR2;bob@example.com;Lee;Robert\n"))
    other = tmp_path / "other.csv"
    other.write_text("unique_id;email\nR3;cy@example.com\n")
    hook.upload(str(old), "referral_contacts_20261028.csv")
    hook.upload(str(new), "referral_contacts_20261029_01.csv.gz")
    hook.upload(str(other), "unrelated_20261029.csv")  # not of the pattern: not read

    url = f"sqlite:///{state_store}"
    operator = SplioReferralUploadOperator(task_id="t", manifest=None)
    rows = [
        row("R1", "ANN@example.com", "Ann"),
        row("R2", "bob@example.com", "Bob"),
        row("R3", "cy@example.com", "Cy"),
    ]
    ledger = Ledger("splio_referral", "referral_contacts", "r1", url)
    files, events = sftp.files(), len(sftp.events)
    report = reconcile(operator, hook, ledger, lambda: [rows], {"params": {}})
    # R2 is Robert in the newer file: stale; R3 is only in a file of another pattern: missing.
    assert (report.checked, report.held, report.stale, report.missing) == (3, 1, 1, 1)
    history = record_history("splio_referral", "referral_contacts", "R1", url=url)
    assert history["current"]["status"] == "delivered"
    assert history["events"][-1]["detail"] == "reconciled: Splio holds it"
    assert sftp.files() == files and not [e for e in sftp.events[events:] if e[0] in ("rename", "remove")]
