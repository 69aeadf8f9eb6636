"""A real SFTP server on loopback standing in for Splio's (asyncssh's SFTP server, chrooted to a folder).

Why: the Splio Referral upload must be tested against a real SSH/SFTP server - host key verification, key
authentication, temporary names and renames, a connection dropped in the middle of a file - and Splio's
own server is reachable only with an account. What Splio documents is little (credentials from its
project manager, files picked up on a schedule); what any SFTP server does, this one does.

- Host key: a fresh Ed25519 key per instance (``host_key_line`` is what a connection's ``host_key`` extra
  holds); the client must know it: a client expecting another key is refused by its own host-key check.
- Auth: public key only, for ``username`` with ``client_key`` (``client_private_key_openssh`` for the
  connection's ``private_key`` extra); passwords are refused.
- ``drop_after(n)``: the connection is cut once ``n`` more bytes have been written (the partial file
  stays, as on a real server).
- ``files()``: what the folder holds (relative path -> bytes); ``events``: opens, renames, removes.

Run it: ``python -m sandbox.sftp --root /tmp/splio --port 2222`` prints the connection extras.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import threading
from pathlib import Path
from typing import Any

import asyncssh


class _Auth(asyncssh.SSHServer):
    def __init__(self, sandbox: SFTPSandbox):
        self.sandbox = sandbox

    def begin_auth(self, username: str) -> bool:
        return True

    def password_auth_supported(self) -> bool:
        return False

    def public_key_auth_supported(self) -> bool:
        return True

    def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        return username == self.sandbox.username and key.public_data == self.sandbox.client_key.public_data


class _Files(asyncssh.SFTPServer):
    def __init__(self, chan: asyncssh.SSHServerChannel, sandbox: SFTPSandbox):
        self.sandbox = sandbox
        super().__init__(chan, chroot=str(sandbox.root).encode())

    def open(self, path: bytes, pflags: int, attrs: asyncssh.SFTPAttrs):
        self.sandbox.events.append(("open", path.decode("utf-8", "replace")))
        return super().open(path, pflags, attrs)

    def write(self, file_obj: object, offset: int, data: bytes):
        sandbox = self.sandbox
        with sandbox.lock:
            if sandbox.drop_budget is not None:
                if len(data) > sandbox.drop_budget:
                    sandbox.drop_budget = None
                    sandbox.drops += 1
                    self.channel.get_extra_info("connection").abort()
                    raise asyncssh.SFTPConnectionLost("connection dropped by the sandbox")
                sandbox.drop_budget -= len(data)
        return super().write(file_obj, offset, data)

    def posix_rename(self, oldpath: bytes, newpath: bytes):
        self.sandbox.events.append(("rename", oldpath.decode(), newpath.decode()))
        return super().posix_rename(oldpath, newpath)

    def rename(self, oldpath: bytes, newpath: bytes):
        self.sandbox.events.append(("rename", oldpath.decode(), newpath.decode()))
        return super().rename(oldpath, newpath)

    def remove(self, path: bytes):
        self.sandbox.events.append(("remove", path.decode()))
        return super().remove(path)


class SFTPSandbox:
    """``with SFTPSandbox(root) as sftp:`` serves ``root`` on ``127.0.0.1:sftp.port``."""

    def __init__(self, root: str | Path, port: int = 0, username: str = "splio"):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.port = port
        self.username = username
        self.host_key = asyncssh.generate_private_key("ssh-ed25519")
        self.client_key = asyncssh.generate_private_key("ssh-ed25519")
        self.lock = threading.Lock()
        self.drop_budget: int | None = None
        self.drops = 0
        self.events: list[tuple] = []
        self._loop = asyncio.new_event_loop()
        self._thread: threading.Thread | None = None
        self._server: Any = None

    # --- what a connection needs ------------------------------------------------------------------------
    @property
    def host_key_line(self) -> str:
        return " ".join(self.host_key.export_public_key("openssh").decode().split()[:2])

    @property
    def client_private_key_openssh(self) -> str:
        return self.client_key.export_private_key("openssh").decode()

    def connection_extra(self, **more: Any) -> dict:
        return {"private_key": self.client_private_key_openssh, "host_key": self.host_key_line, **more}

    # --- control ----------------------------------------------------------------------------------------
    def drop_after(self, n_bytes: int) -> None:
        """Cut the connection once ``n_bytes`` more bytes have been written."""
        with self.lock:
            self.drop_budget = n_bytes

    def files(self) -> dict[str, bytes]:
        return {
            str(p.relative_to(self.root)): p.read_bytes() for p in sorted(self.root.rglob("*")) if p.is_file()
        }

    # --- lifecycle --------------------------------------------------------------------------------------
    async def _listen(self) -> None:
        self._server = await asyncssh.listen(
            "127.0.0.1",
            self.port,
            server_host_keys=[self.host_key],
            server_factory=lambda: _Auth(self),
            sftp_factory=lambda chan: _Files(chan, self),
            allow_scp=False,
            reuse_address=True,
        )
        self.port = self._server.sockets[0].getsockname()[1]

    def start(self) -> SFTPSandbox:
        self._thread = threading.Thread(target=self._loop.run_forever, name="sftp-sandbox", daemon=True)
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._listen(), self._loop).result(timeout=30)
        return self

    def stop(self) -> None:
        async def close() -> None:
            self._server.close()
            await self._server.wait_closed()

        if self._server is not None:
            asyncio.run_coroutine_threadsafe(close(), self._loop).result(timeout=30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(timeout=30)

    def __enter__(self) -> SFTPSandbox:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m sandbox.sftp", description=__doc__.splitlines()[0])
    parser.add_argument("--root", required=True)
    parser.add_argument("--port", type=int, default=2222)
    parser.add_argument("--username", default="splio")
    args = parser.parse_args(argv)
    with SFTPSandbox(args.root, args.port, args.username) as sandbox:
        print(
            json.dumps(
                {
                    "host": "127.0.0.1",
                    "port": sandbox.port,
                    "login": sandbox.username,
                    "extra": sandbox.connection_extra(),
                }
            ),
            flush=True,
        )
        threading.Event().wait()


if __name__ == "__main__":
    main()
