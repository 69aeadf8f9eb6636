"""Splio Referral's SFTP server: files go up under a temporary name and are renamed when complete, so
Splio never picks up half a file; the host key must be known; authentication is by key."""

from __future__ import annotations

import logging
import os
import posixpath
import random
import re
from contextlib import contextmanager
from typing import Any

from airflow.providers.sftp.hooks.sftp import SFTPHook

from reverse_etl.errors import ConfigError, VendorAuthError, VendorError, VendorUnavailable
from reverse_etl.hooks.base import typed_extra
from reverse_etl.progress import Wait

log = logging.getLogger(__name__)
TEMP_SUFFIX = ".uploading"
TEMP_NAME = re.compile(r"\..+" + re.escape(TEMP_SUFFIX))  # ours: ".<final name>.uploading"


class SplioSFTPHook(SFTPHook):
    """Connection (type ``sftp``): ``host``, ``port`` (22), ``login`` from Splio's project manager; extras
    ``private_key`` (or ``key_file``) and ``host_key`` (``ssh-ed25519 AAAA...``, required), plus the file
    settings the operator reads: ``remote_dir`` (``/``), ``delimiter`` (``;``), ``file_pattern``,
    ``max_lines`` (200000), ``gzip`` (false), ``upload_attempts`` (3), ``backoff_base_seconds`` (2),
    ``timeout_seconds`` (60: a stalled read or write).
    """

    default_conn_name = "splio_referral_default"
    hook_name = "Splio Referral SFTP"

    def __init__(self, ssh_conn_id: str = default_conn_name, **kwargs: Any) -> None:
        # SSHHook retries every failed connect (tenacity, 3 attempts by default), a wrong host key or a
        # refused key too: one attempt here, and ``upload`` retries only what can succeed (unreachable
        # host, dropped connection).
        kwargs.setdefault("conn_retry_attempts", 1)
        try:
            super().__init__(ssh_conn_id=ssh_conn_id, **kwargs)
        except ValueError as exc:  # a malformed host_key or private_key extra
            raise ConfigError(f"SFTP connection '{ssh_conn_id}': {exc}") from exc
        except Exception as exc:
            if (
                "isn't defined" in str(exc)
                or "not defined" in str(exc)
                or type(exc).__name__.endswith("NotFound")
            ):
                raise ConfigError(
                    f"SFTP connection '{ssh_conn_id}' is not defined. Create it (type sftp) with Splio's host, "
                    f"login, extra private_key and host_key, or set AIRFLOW_CONN_{ssh_conn_id.upper()}."
                ) from exc
            raise
        if self.no_host_key_check or self.host_key is None:
            raise ConfigError(
                f"SFTP connection '{ssh_conn_id}' must carry Splio's host key in the extra 'host_key' "
                "('ssh-ed25519 AAAA...', from `ssh-keyscan <host>` checked with Splio); uploads without a "
                "verified host key are refused."
            )
        self.extras = self.get_connection(ssh_conn_id).extra_dejson

    def extra(self, name: str, default: Any, cast: type = str) -> Any:
        return typed_extra(self.extras, name, default, cast, f"SFTP connection '{self.ssh_conn_id}'")

    @contextmanager
    def session(self):
        """An SFTP session whose reads and writes time out (``timeout_seconds``, 60): a server that stalls
        mid-file fails the attempt (retried like a dropped connection) instead of hanging the task."""
        with self.get_managed_conn() as sftp:
            sftp.get_channel().settimeout(self.extra("timeout_seconds", 60.0, float))
            yield sftp

    @property
    def gzipped(self) -> bool:
        return str(self.extras.get("gzip", False)).lower() == "true"

    @property
    def remote_dir(self) -> str:
        return self.extra("remote_dir", "/")

    def upload(self, local_path: str, name: str) -> int:
        """Put ``local_path`` as ``<remote_dir>/<name>`` through a temporary name, rename it (replacing a
        previous file of that name), and check the size on the server. An unreachable server or a dropped
        connection is retried with backoff (``upload_attempts``); then the partial file is removed (when the
        server still answers) and the task fails for Airflow to retry. A wrong host key or a refused key
        fails at once (ConfigError, VendorAuthError). Each attempt first removes the temporary files
        earlier failures left in the folder."""
        import paramiko

        size = os.path.getsize(local_path)
        final = posixpath.join(self.remote_dir, name)
        temp = posixpath.join(self.remote_dir, f".{name}{TEMP_SUFFIX}")
        attempts = self.extra("upload_attempts", 3, int)
        wait = Wait(f"Splio's SFTP server {self.remote_host}:{self.port} to take {name}", logger=log)
        for attempt in range(1, attempts + 1):
            try:
                with self.session() as sftp:
                    self._remove_leftovers(sftp)
                    sftp.put(local_path, temp, confirm=True)  # confirm: the server's size must match
                    try:
                        sftp.posix_rename(temp, final)  # atomic, replaces
                    except OSError:  # no posix-rename extension: remove, then rename
                        if self._exists(sftp, final):
                            sftp.remove(final)
                        sftp.rename(temp, final)
                    stored = sftp.stat(final).st_size
                if stored != size:
                    raise VendorError(f"{final} has {stored} bytes on the server, {size} were sent")
                return size
            except paramiko.BadHostKeyException as exc:
                raise ConfigError(
                    f"Splio's SFTP server at {self.remote_host} presented a host key that is not the one in "
                    f"connection '{self.ssh_conn_id}' (extra host_key). Check with Splio before changing it: "
                    "it may be an attack."
                ) from exc
            except paramiko.AuthenticationException as exc:
                raise VendorAuthError(
                    f"Splio's SFTP server refused user '{self.username}' with the connection's key "
                    f"('{self.ssh_conn_id}', extra private_key or key_file): {exc}"
                ) from exc
            except paramiko.SSHException as exc:
                if "known_hosts" in str(exc):
                    raise ConfigError(
                        f"Splio's SFTP server at {self.remote_host}:{self.port} is unknown: {exc}. Set the "
                        f"extra host_key of connection '{self.ssh_conn_id}'."
                    ) from exc
                error: Exception = exc
            except (EOFError, OSError) as exc:
                error = exc
            if attempt == attempts:
                self._discard(temp)
                raise VendorUnavailable(
                    f"Upload of {name} to {self.remote_host}:{self.port} failed {attempts} times "
                    f"({type(error).__name__}: {error}); Airflow's task retry starts it again."
                ) from error
            delay = self.extra("backoff_base_seconds", 2.0, float) * 2 ** (attempt - 1)
            delay *= random.uniform(0.8, 1.2)
            self.log.warning(
                "upload of %s failed (%s: %s); retrying in %.1f s", name, type(error).__name__, error, delay
            )
            wait.sleep(delay, f"attempt {attempt} of {attempts} failed ({type(error).__name__}: {error})")
        raise AssertionError("unreachable")

    def _remove_leftovers(self, sftp: Any) -> None:
        """Remove our temporary files (``.<name>.uploading``) that failed uploads left in ``remote_dir``;
        other files, whatever their name, stay. One that cannot be removed is logged and left: Splio
        ignores dot-files, so it must not stop the upload."""
        for entry in sftp.listdir_attr(self.remote_dir):
            if not TEMP_NAME.fullmatch(entry.filename):
                continue
            path = posixpath.join(self.remote_dir, entry.filename)
            try:
                sftp.remove(path)
            except FileNotFoundError:
                continue  # gone meanwhile
            except PermissionError as exc:
                log.warning(
                    "could not remove %s (%s bytes), left by a failed upload: %s", path, entry.st_size, exc
                )
                continue
            log.info(
                "removed %s (%s bytes), the partial file of an earlier failed upload", path, entry.st_size
            )

    def _discard(self, temp: str) -> None:
        """Best effort after a failed upload: remove its partial file if the server still answers. A
        failure here is logged, never raised over the upload's own error (the next upload removes it)."""
        try:
            with self.session() as sftp:
                try:
                    size = sftp.stat(temp).st_size
                except FileNotFoundError:
                    return
                sftp.remove(temp)
            log.info("removed %s (%s bytes), the partial file of this failed upload", temp, size)
        except Exception as exc:
            log.warning(
                "could not remove the partial file %s after the failed upload (%s: %s); the next upload "
                "of this folder removes it",
                temp,
                type(exc).__name__,
                exc,
            )

    @staticmethod
    def _exists(sftp: Any, path: str) -> bool:
        try:
            sftp.stat(path)
        except OSError:
            return False
        return True

    def read_files(self, pattern: re.Pattern, delimiter: str):
        """Rows (``dict`` by header) of the files of ``remote_dir`` whose name matches ``pattern``, file by
        file in name order (dates ascending: a later file's row is the newer), with the file's name. Each
        file is downloaded to a temporary folder first, so the connection is not held while parsing."""
        import csv
        import gzip
        import tempfile

        with tempfile.TemporaryDirectory(prefix="retl-splio-read-") as tmp:
            with self.session() as sftp:
                names = sorted(n for n in sftp.listdir(self.remote_dir) if pattern.fullmatch(n))
                for name in names:
                    sftp.get(posixpath.join(self.remote_dir, name), os.path.join(tmp, name))
            for name in names:
                local = os.path.join(tmp, name)
                opener = gzip.open if name.endswith(".gz") else open
                with opener(local, "rt", encoding="utf-8-sig", newline="") as handle:
                    for row in csv.DictReader(handle, delimiter=delimiter):
                        yield name, row

    def remove_others(self, pattern: re.Pattern, keep: set[str]) -> list[str]:
        """Remove files of ``remote_dir`` whose name matches ``pattern`` (a window's earlier parts, or a
        temporary file an interrupted upload left) except ``keep``: a rerun replaces, never adds."""
        removed = []
        with self.session() as sftp:
            for name in sftp.listdir(self.remote_dir):
                bare = name.removeprefix(".").removesuffix(TEMP_SUFFIX)
                if name not in keep and pattern.fullmatch(bare):
                    sftp.remove(posixpath.join(self.remote_dir, name))
                    removed.append(name)
        return removed
