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
- ``write_delay``: seconds each write waits before it is done (a slow link; other connections go on).
- ``connections``: how many SSH connections (handshakes) clients opened, refused ones included.
- ``files()``: what the folder holds (relative path -> bytes); ``events``: opens, renames, removes.
- ``pickup()``: what Splio's scheduled import would do with each complete file: every file is checked by
  ``check_referral_file`` (written from Splio's rules, independently of our CSV writer) and is
  ``imported`` or ``refused`` with its problems. Splio mails a report and skips a file it cannot take
  (a missing mandatory column, for instance); which line-level faults skip a whole file is not published,
  so the sandbox refuses the whole file for any fault (the strict reading).

Run it: ``python -m sandbox.sftp --root /tmp/splio --port 8013`` prints the connection's fields as JSON
(``--help`` lists every knob).
"""

from __future__ import annotations

import asyncio
import codecs
import csv
import gzip
import io
import json
import threading
from pathlib import Path
from typing import Any

import asyncssh

# Splio Referral: "four mandatory fields: unique ID, email, last name, first name" (header names are not
# published; these are the project's, after Splio's Datahub contact columns). Datahub rules: UTF-8
# without BOM, no multi-line values, email <=100 and lowercase, lastname/firstname <=255, cellphone <=30,
# language one of Splio's 2-letter lowercase codes, at most 200,000 lines per file.
REFERRAL_MANDATORY = ("unique_id", "email", "lastname", "firstname")
SPLIO_LANGUAGES = frozenset(  # Splio's list, not ISO 639-1 (gr, cz, kr)
    ("ar", "br", "ca", "cz", "de", "en", "es", "fr", "gr", "it", "ja", "kr", "nl", "pl", "ru", "tr", "zh")
)
MAX_LINES = 200_000
MAX_LENGTHS = {"email": 100, "lastname": 255, "firstname": 255, "cellphone": 30}


def check_referral_file(
    data: bytes,
    *,
    delimiter: str = ";",
    mandatory: tuple[str, ...] = REFERRAL_MANDATORY,
    max_lines: int = MAX_LINES,
    limit: int = 20,
) -> list[str]:
    """Problems Splio would find in a Referral contacts file (empty list: it would import it).

    Parsed with the standard ``csv`` module from the raw bytes, so it does not share code with the writer.
    At most ``limit`` line-level problems are listed.
    """
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    if data.startswith(codecs.BOM_UTF8):
        return ["the file starts with a byte order mark: Splio takes UTF-8 without BOM"]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return [f"the file is not UTF-8 ({exc})"]
    if not text.strip():
        return ["the file is empty: a header row is mandatory"]
    physical = text.count("\n") + (0 if text.endswith("\n") else 1)
    problems: list[str] = []
    if physical > max_lines:
        problems.append(f"{physical} lines: Splio takes at most {max_lines} lines per file")
    try:
        rows = list(csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True))
    except csv.Error as exc:
        return [*problems, f"the file is not valid CSV with separator {delimiter!r}: {exc}"]
    if len(rows) != physical or "\r" in text:
        problems.append("a value spans several lines (or a line ends in CR): no multi-line values")
    header = rows[0]
    missing = [c for c in mandatory if c not in header]
    if missing:
        return [
            *problems,
            f"header {header} lacks the mandatory column(s) {missing} (separator {delimiter!r})",
        ]
    repeated = sorted({c for c in header if header.count(c) > 1})
    if repeated:
        problems.append(f"column(s) {repeated} appear more than once in the header")
    index = {name: header.index(name) for name in header}
    for number, row in enumerate(rows[1:], start=2):
        if len(problems) >= limit:
            problems.append("... (more problems not listed)")
            break
        if len(row) != len(header):
            problems.append(f"line {number}: {len(row)} fields, the header has {len(header)}")
            continue
        for name in mandatory:
            if not row[index[name]].strip():
                problems.append(f"line {number}: mandatory field {name} is blank")
        for name, most in MAX_LENGTHS.items():
            if name in index and len(row[index[name]]) > most:
                problems.append(f"line {number}: {name} longer than {most} characters")
        email = row[index["email"]] if "email" in index else ""
        if email != email.lower():
            problems.append(f"line {number}: email {email!r} is not lowercase")
        language = row[index["language"]] if "language" in index else ""
        if language and language not in SPLIO_LANGUAGES:
            problems.append(f"line {number}: language {language!r} is not one of Splio's codes")
    return problems


class _Auth(asyncssh.SSHServer):
    def __init__(self, sandbox: SFTPSandbox):
        self.sandbox = sandbox

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        with self.sandbox.lock:
            self.sandbox.connections += 1
        if self.sandbox.down:  # an outage: connections are cut before the SSH handshake
            conn.abort()

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
                    sandbox.down = sandbox.down_after_drop
                    self.channel.get_extra_info("connection").abort()
                    raise asyncssh.SFTPConnectionLost("connection dropped by the sandbox")
                sandbox.drop_budget -= len(data)
            delay = sandbox.write_delay
        if delay:
            return self._write_later(delay, file_obj, offset, data)
        return super().write(file_obj, offset, data)

    async def _write_later(self, delay: float, file_obj: object, offset: int, data: bytes):
        await asyncio.sleep(delay)  # this connection waits; the others go on
        return super().write(file_obj, offset, data)

    def posix_rename(self, oldpath: bytes, newpath: bytes):
        self.sandbox.events.append(("rename", oldpath.decode(), newpath.decode()))
        return super().posix_rename(oldpath, newpath)

    def rename(self, oldpath: bytes, newpath: bytes):
        self.sandbox.events.append(("rename", oldpath.decode(), newpath.decode()))
        return super().rename(oldpath, newpath)

    def remove(self, path: bytes):
        self.sandbox.events.append(("remove", path.decode()))
        if path.decode().lstrip("/") in self.sandbox.protected:
            raise asyncssh.SFTPPermissionDenied("permission denied (sandbox: protected)")
        return super().remove(path)


class SFTPSandbox:
    """``with SFTPSandbox(root) as sftp:`` serves ``root`` on ``127.0.0.1:sftp.port``."""

    def __init__(self, root: str | Path, port: int = 0, username: str = "splio", host: str = "127.0.0.1"):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.host = host
        self.port = port
        self.username = username
        self.host_key = asyncssh.generate_private_key("ssh-ed25519")
        self.client_key = asyncssh.generate_private_key("ssh-ed25519")
        self.lock = threading.Lock()
        self.drop_budget: int | None = None
        self.drops = 0
        self.write_delay = 0.0
        self.connections = 0  # SSH connections accepted (each starts a handshake)
        self.down = False
        self.down_after_drop = False
        self.protected: set[str] = set()  # names (relative to root) whose removal is refused
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

    def connection(self, **more: Any) -> dict:
        """The ``sftp`` connection's fields (``sandbox.env.connections_env(splio_sftp=...)``); ``more``
        goes to its extras."""
        return {
            "host": "127.0.0.1" if self.host in ("", "0.0.0.0", "::") else self.host,
            "port": self.port,
            "login": self.username,
            "extra": self.connection_extra(**more),
        }

    # --- control ----------------------------------------------------------------------------------------
    def drop_after(self, n_bytes: int, stay_down: bool = False) -> None:
        """Cut the connection once ``n_bytes`` more bytes have been written; with ``stay_down``, the
        server then cuts every new connection too (an outage) until :meth:`bring_up`."""
        with self.lock:
            self.drop_budget = n_bytes
            self.down_after_drop = stay_down

    def bring_up(self) -> None:
        """End the outage ``drop_after(..., stay_down=True)`` started."""
        with self.lock:
            self.down = self.down_after_drop = False

    def files(self) -> dict[str, bytes]:
        return {
            str(p.relative_to(self.root)): p.read_bytes() for p in sorted(self.root.rglob("*")) if p.is_file()
        }

    def pickup(self, delimiter: str = ";") -> dict[str, dict]:
        """Splio's scheduled import over the complete files (temporary dot-files are not picked up):
        name -> {"status": "imported" | "refused", "rows": data lines, "problems": [...]}."""
        report = {}
        for name, data in self.files().items():
            if name.rsplit("/", 1)[-1].startswith("."):
                continue
            problems = check_referral_file(data, delimiter=delimiter)
            raw = gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data
            report[name] = {
                "status": "refused" if problems else "imported",
                "rows": max(0, raw.count(b"\n") - 1),
                "problems": problems,
            }
        return report

    # --- lifecycle --------------------------------------------------------------------------------------
    async def _listen(self) -> None:
        self._server = await asyncssh.listen(
            self.host,
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
    """CLI: serve until SIGTERM/SIGINT; the first line on stdout is the connection's fields (JSON), the
    second says the same for people."""
    import signal
    import tempfile

    from sandbox.env import sandbox_parser

    parser = sandbox_parser("sftp", __doc__.splitlines()[0])
    parser.add_argument("--root", help="the folder it serves (unset: a new temporary folder)")
    parser.add_argument("--username", default="splio", help="the login it accepts")
    args = parser.parse_args(argv)
    root = args.root or tempfile.mkdtemp(prefix="splio-sftp-")
    received: list[int] = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, _frame: received.append(signum))
    with SFTPSandbox(root, args.port, args.username, host=args.host) as sandbox:
        print(json.dumps(sandbox.connection()), flush=True)
        print(
            f"Splio SFTP sandbox on {args.host}:{sandbox.port}, login {args.username} with the private key "
            f"above (host key {sandbox.host_key_line}); files land in {root}",
            flush=True,
        )
        while not received:
            threading.Event().wait(0.2)


if __name__ == "__main__":
    main()
