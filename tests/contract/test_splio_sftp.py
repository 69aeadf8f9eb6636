"""SplioSFTPHook against a real SFTP server on loopback (asyncssh): byte-for-byte uploads through a
temporary name, a dropped connection retried into exactly one complete file, host keys verified, key
authentication, non-ASCII names, and reruns that replace a window's files."""

from __future__ import annotations

import asyncssh
import pytest

from reverse_etl.csvfile import window_regex
from reverse_etl.errors import ConfigError, VendorAuthError, VendorUnavailable
from reverse_etl.hooks.splio import SplioSFTPHook
from sandbox.env import conn_json
from sandbox.sftp import SFTPSandbox


@pytest.fixture
def sftp(tmp_path):
    with SFTPSandbox(tmp_path / "splio") as sandbox:
        yield sandbox


def wire(monkeypatch, sandbox: SFTPSandbox, **extra) -> SplioSFTPHook:
    conn = {"host": "127.0.0.1", "port": sandbox.port, "login": sandbox.username}
    merged = {**sandbox.connection_extra(backoff_base_seconds=0.05), **extra}
    monkeypatch.setenv(
        "AIRFLOW_CONN_SPLIO_REFERRAL_DEFAULT",
        conn_json("sftp", **conn, extra={k: v for k, v in merged.items() if v is not None}),
    )
    return SplioSFTPHook()


def test_upload_arrives_byte_for_byte_through_a_temporary_name(sftp, monkeypatch, tmp_path):
    local = tmp_path / "file.csv"
    local.write_bytes("unique_id;email\nR1;zoë@example.com\n".encode())
    hook = wire(monkeypatch, sftp)
    assert hook.upload(str(local), "referral_contacts_20261031.csv") == local.stat().st_size
    assert sftp.files() == {"referral_contacts_20261031.csv": local.read_bytes()}
    opened = [e[1] for e in sftp.events if e[0] == "open"]
    assert opened == ["/.referral_contacts_20261031.csv.uploading"]  # never written under its final name
    assert (
        "rename",
        "/.referral_contacts_20261031.csv.uploading",
        "/referral_contacts_20261031.csv",
    ) in sftp.events


def test_dropped_connection_is_retried_into_one_complete_file(sftp, monkeypatch, tmp_path):
    local = tmp_path / "big.csv"
    local.write_bytes(
        b"unique_id;email\n" + b"".join(b"R%07d;r%07d@example.com\n" % (i, i) for i in range(40_000))
    )
    hook = wire(monkeypatch, sftp)
    sftp.drop_after(200_000)  # the first attempt dies a fifth of the way in
    hook.upload(str(local), "referral_contacts_20261031.csv")
    assert sftp.drops == 1
    assert sftp.files() == {"referral_contacts_20261031.csv": local.read_bytes()}  # no partial file left


def test_a_server_that_stalls_mid_file_times_out_and_is_retried_not_waited_on(sftp, monkeypatch, tmp_path):
    local = tmp_path / "file.csv"
    local.write_bytes(b"unique_id;email\n" + b"R1;r1@example.com\n" * 100)
    hook = wire(monkeypatch, sftp, timeout_seconds=0.5, upload_attempts=2)
    sftp.write_delay = 30.0  # every write stalls far longer than the session's timeout
    with pytest.raises(VendorUnavailable, match=r"failed 2 times \((TimeoutError|timeout)"):
        hook.upload(str(local), "referral_contacts_20261031.csv")
    sftp.write_delay = 0.0
    assert hook.upload(str(local), "referral_contacts_20261031.csv") == local.stat().st_size
    assert sftp.files() == {"referral_contacts_20261031.csv": local.read_bytes()}


def test_a_wrong_host_key_is_refused_before_anything_is_sent(sftp, monkeypatch, tmp_path):
    local = tmp_path / "file.csv"
    local.write_bytes(b"a\n")
    other = " ".join(asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode().split()[:2])
    hook = wire(monkeypatch, sftp, host_key=other)
    with pytest.raises(ConfigError, match="not the one in connection 'splio_referral_default'"):
        hook.upload(str(local), "x.csv")
    assert sftp.files() == {}


def test_without_a_host_key_the_hook_refuses_to_start(sftp, monkeypatch):
    with pytest.raises(ConfigError, match="must carry Splio's host key"):
        wire(monkeypatch, sftp, host_key=None)


def test_a_wrong_client_key_is_an_auth_error(sftp, monkeypatch, tmp_path):
    local = tmp_path / "file.csv"
    local.write_bytes(b"a\n")
    stranger = asyncssh.generate_private_key("ssh-ed25519").export_private_key("openssh").decode()
    hook = wire(monkeypatch, sftp, private_key=stranger)
    with pytest.raises(VendorAuthError, match="refused user 'splio'"):
        hook.upload(str(local), "x.csv")


def test_a_non_ascii_name_survives_the_round_trip(sftp, monkeypatch, tmp_path):
    local = tmp_path / "f.csv"
    local.write_bytes(b"a\n")
    hook = wire(monkeypatch, sftp)
    hook.upload(str(local), "parrainage_été_Zürich_20261031.csv")
    assert list(sftp.files()) == ["parrainage_été_Zürich_20261031.csv"]


def test_a_rerun_replaces_the_window_files_and_leaves_other_windows(sftp, monkeypatch, tmp_path):
    hook = wire(monkeypatch, sftp)
    pattern = "referral_contacts_{date}{part}.csv"
    local = tmp_path / "f.csv"
    for name in (
        "referral_contacts_20261030.csv",
        "referral_contacts_20261031_01.csv",
        "referral_contacts_20261031_02.csv",
        ".referral_contacts_20261031_03.csv.uploading",
    ):
        local.write_bytes(name.encode())
        (sftp.root / name).write_bytes(b"old")
    local.write_bytes(b"new")
    hook.upload(str(local), "referral_contacts_20261031.csv")
    removed = hook.remove_others(window_regex(pattern, "20261031"), {"referral_contacts_20261031.csv"})
    # the upload itself swept the temporary file away; the window's other parts go after the upload
    assert sorted(removed) == ["referral_contacts_20261031_01.csv", "referral_contacts_20261031_02.csv"]
    assert sftp.files() == {
        "referral_contacts_20261030.csv": b"old",
        "referral_contacts_20261031.csv": b"new",
    }


HEADER = [
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
OLD_LINE = b"R90000006;blank@example.com;   ;;pl;;REF-AAAA;;\n"  # uploaded before issue 9


def test_our_file_is_one_splio_imports_parsed_back_independently(sftp, monkeypatch, tmp_path):
    """The writer's bytes, through the real hook, read back with the csv module against Splio's rules."""
    import csv
    import io

    from reverse_etl.csvfile import CsvParts

    rows = [
        ["R1", "zoe@example.com", "Żółć", "Zoë", "pl", "0048600123456", "REF-1", None, "2900000000001"],
        ["R2", "o.brien@example.com", 'O\'Brien; "Jr"', "Seán", "gr", None, "=HYPERLINK(1)", "REF-1", None],
        ["R3", "li@example.com", "Li\nWang", "Wei", None, "+48600123456", "REF-3", None, None],
    ]
    writer = CsvParts(tmp_path / "parts", header=HEADER)
    for row in rows:
        writer.write(row)
    (part,) = writer.close()
    hook = wire(monkeypatch, sftp)
    hook.upload(str(part), "referral_contacts_20261031.csv")

    data = sftp.files()["referral_contacts_20261031.csv"]
    assert not data.startswith(b"\xef\xbb\xbf") and data.decode("utf-8")  # UTF-8 without BOM
    parsed = list(csv.reader(io.StringIO(data.decode("utf-8"), newline=""), delimiter=";", strict=True))
    assert parsed[0] == HEADER and len(parsed) == len(rows) + 1 == data.count(b"\n")  # no multi-line value
    for line in parsed[1:]:
        assert all(line[i].strip() for i in range(4))  # the four mandatory fields
    assert parsed[2][2] == 'O\'Brien; "Jr"' and parsed[3][2] == "Li Wang"
    assert sftp.pickup() == {
        "referral_contacts_20261031.csv": {"status": "imported", "rows": len(rows), "problems": []}
    }


def test_the_old_file_with_blank_names_is_refused_and_the_fixed_one_imported(sftp, monkeypatch, tmp_path):
    header = ";".join(HEADER).encode() + b"\n"
    good = b"R90000007;anna@example.com;Nowak;Anna;pl;;REF-BBBB;;\n"
    hook = wire(monkeypatch, sftp)
    old, new = tmp_path / "old.csv", tmp_path / "new.csv"
    old.write_bytes(header + good + OLD_LINE)
    new.write_bytes(header + good)
    hook.upload(str(old), "referral_contacts_20261030.csv")
    hook.upload(str(new), "referral_contacts_20261031.csv")
    report = sftp.pickup()
    assert report["referral_contacts_20261030.csv"]["status"] == "refused"
    assert report["referral_contacts_20261030.csv"]["problems"] == [
        "line 3: mandatory field lastname is blank",
        "line 3: mandatory field firstname is blank",
    ]
    assert report["referral_contacts_20261031.csv"] == {"status": "imported", "rows": 1, "problems": []}


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b"\xef\xbb\xbfunique_id;email;lastname;firstname\nR1;a@b.co;N;A\n", "byte order mark"),
        (b'unique_id;email;lastname;firstname\nR1;a@b.co;"N\nX";A\n', "multi-line"),
        (b"unique_id,email,lastname,firstname\nR1,a@b.co,N,A\n", "lacks the mandatory column"),
        (b"unique_id;email;lastname;firstname\nR1;A@B.co;N;A\n", "not lowercase"),
        (b"unique_id;email;lastname;firstname;language\nR1;a@b.co;N;A;el\n", "not one of Splio's codes"),
        (
            b"unique_id;email;lastname;firstname;cellphone\nR1;a@b.co;N;A;" + b"0" * 31 + b"\n",
            "longer than 30",
        ),
        (b"unique_id;email;lastname;firstname\nR1;a@b.co;" + b"N" * 256 + b";A\n", "longer than 255"),
        ("unique_id;email;lastname;firstname\nR1;zoë@b.co;N;A\n".encode("latin-1"), "not UTF-8"),
    ],
)
def test_the_checker_refuses_what_splio_documents_as_unimportable(data, problem):
    from sandbox.sftp import check_referral_file

    problems = check_referral_file(data)
    assert any(problem in p for p in problems), problems
    fixed = check_referral_file(b"unique_id;email;lastname;firstname\nR1;a@b.co;N;A\n")
    assert fixed == []


def test_the_checker_refuses_a_file_over_200000_lines():
    from sandbox.sftp import check_referral_file

    body = b"unique_id;email;lastname;firstname\n" + b"R;a@b.co;N;A\n" * 200_000
    assert any("at most 200000 lines" in p for p in check_referral_file(body))
    assert check_referral_file(body[: -len(b"R;a@b.co;N;A\n")]) == []


def test_a_failed_upload_removes_its_partial_file_and_still_fails(sftp, monkeypatch, tmp_path, progress_log):
    from reverse_etl.errors import VendorUnavailable

    local = tmp_path / "big.csv"
    local.write_bytes(b"unique_id;email\n" + b"R0000001;r@example.com\n" * 20_000)
    hook = wire(monkeypatch, sftp, upload_attempts=1)
    sftp.drop_after(100_000)  # the only attempt dies mid-file; the server answers again right after
    with pytest.raises(VendorUnavailable, match="failed 1 times"):
        hook.upload(str(local), "referral_contacts_20261031.csv")
    assert sftp.drops == 1
    assert sftp.files() == {}  # neither the partial temporary file nor a final one
    assert ("remove", "/.referral_contacts_20261031.csv.uploading") in sftp.events
    removed = progress_log("removed /.referral_contacts_20261031.csv.uploading (")
    assert len(removed) == 1 and removed[0].endswith("bytes), the partial file of this failed upload")


def test_a_partial_file_that_cannot_be_removed_is_logged_not_raised(
    sftp, monkeypatch, tmp_path, progress_log
):
    from reverse_etl.errors import VendorUnavailable

    local = tmp_path / "big.csv"
    local.write_bytes(b"unique_id;email\n" + b"R0000001;r@example.com\n" * 20_000)
    hook = wire(monkeypatch, sftp, upload_attempts=1)
    sftp.drop_after(100_000, stay_down=True)  # the server goes away with the connection
    with pytest.raises(VendorUnavailable, match="failed 1 times"):  # the upload's error, not the clean-up's
        hook.upload(str(local), "referral_contacts_20261031.csv")
    assert list(sftp.files()) == [".referral_contacts_20261031.csv.uploading"]
    warned = progress_log("could not remove the partial file /.referral_contacts_20261031.csv.uploading")
    assert len(warned) == 1 and "the next upload of this folder removes it" in warned[0]

    sftp.bring_up()
    local.write_bytes(b"unique_id;email\nR1;r@example.com\n")
    hook.upload(str(local), "referral_contacts_20261031.csv")  # the next upload sweeps it away
    assert sftp.files() == {"referral_contacts_20261031.csv": local.read_bytes()}


def test_the_next_upload_removes_our_leftover_temporary_files_and_nothing_else(
    sftp, monkeypatch, tmp_path, progress_log
):
    foreign = {
        "x.uploading": b"not hidden: not ours",
        ".x.uploading.bak": b"another suffix",
        ".x.tmp": b"another tool's temporary file",
        "referral_contacts_20261030.csv": b"an earlier window",
    }
    for name, data in foreign.items():
        (sftp.root / name).write_bytes(data)
    (sftp.root / ".x.uploading").write_bytes(b"12345")  # left by an upload that died with the server
    local = tmp_path / "f.csv"
    local.write_bytes(b"unique_id;email\nR1;r@example.com\n")
    hook = wire(monkeypatch, sftp)
    hook.upload(str(local), "referral_contacts_20261031.csv")
    assert sftp.files() == {**foreign, "referral_contacts_20261031.csv": local.read_bytes()}
    assert progress_log("removed /.x.uploading (") == [
        "removed /.x.uploading (5 bytes), the partial file of an earlier failed upload"
    ]


def test_a_leftover_that_cannot_be_removed_does_not_stop_the_upload(
    sftp, monkeypatch, tmp_path, progress_log
):
    (sftp.root / ".x.uploading").write_bytes(b"123")
    sftp.protected.add(".x.uploading")  # the server refuses to delete it (another account's file, say)
    local = tmp_path / "f.csv"
    local.write_bytes(b"unique_id;email\nR1;r@example.com\n")
    hook = wire(monkeypatch, sftp)
    hook.upload(str(local), "referral_contacts_20261031.csv")
    assert sftp.files() == {".x.uploading": b"123", "referral_contacts_20261031.csv": local.read_bytes()}
    warned = progress_log("could not remove /.x.uploading (3 bytes), left by a failed upload: ")
    assert len(warned) == 1
