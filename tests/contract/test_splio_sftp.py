"""SplioSFTPHook against a real SFTP server on loopback (asyncssh): byte-for-byte uploads through a
temporary name, a dropped connection retried into exactly one complete file, host keys verified, key
authentication, non-ASCII names, and reruns that replace a window's files."""

from __future__ import annotations

import asyncssh
import pytest

from reverse_etl.csvfile import window_regex
from reverse_etl.errors import ConfigError, VendorAuthError
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
    assert sorted(removed) == [
        ".referral_contacts_20261031_03.csv.uploading",
        "referral_contacts_20261031_01.csv",
        "referral_contacts_20261031_02.csv",
    ]
    assert sftp.files() == {
        "referral_contacts_20261030.csv": b"old",
        "referral_contacts_20261031.csv": b"new",
    }
