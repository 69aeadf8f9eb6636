"""The sandboxes as tools: one CLI shape (``python -m sandbox.NAME --port P``), a ``--help`` that lists the
knobs, default ports that are distinct and where ``make ui`` puts them, and a sandbox started that way
answering on its port."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from sandbox.env import REPO, SANDBOXES

# The ports the README gives for make ui.
README_PORTS = {"voucherify": 8010, "salesfire": 8011, "connectif": 8012, "sftp": 8013, "datatalks": 8014}
KNOBS = {
    "voucherify": ("--limit", "--window", "--app-id", "--async-delay", "--spec-dir", "--bulk-validation"),
    "salesfire": ("--list", "--limit", "--signature-encoding", "--unknown-fields", "--update-semantics"),
    "connectif": ("--limit", "--window", "--key-id", "--async-delay", "--export-path", "--max-import-bytes"),
    "sftp": ("--root", "--username"),
    "datatalks": ("--limit", "--window", "--access-key", "--region", "--group-key", "--max-products"),
}


def ui_ports(env: dict[str, str]) -> dict[str, int]:
    """What scripts/ui.py (make ui) would start each sandbox on, under ``env``."""
    code = (
        "import importlib.util, json, sys; sys.path.insert(0, 'scripts');"
        "spec = importlib.util.spec_from_file_location('ui', 'scripts/ui.py');"
        "ui = importlib.util.module_from_spec(spec); spec.loader.exec_module(ui);"
        "print(json.dumps(ui.sandbox_ports()))"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def help_text(name: str, env: dict[str, str]) -> str:
    done = subprocess.run(
        [sys.executable, "-m", f"sandbox.{name}", "--help"], cwd=REPO, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    return " ".join(done.stdout.split())  # argparse wraps lines


def default_port(help_: str) -> int:
    found = re.search(r"--port PORT .*?\(default: (\d+)\)", help_)
    assert found, help_
    return int(found.group(1))


@pytest.mark.parametrize("first", [None, "9100"])
def test_each_help_lists_its_knobs_and_the_port_make_ui_uses(first):
    env = {k: v for k, v in os.environ.items() if k != "RETL_SANDBOX_PORT"}
    if first:
        env["RETL_SANDBOX_PORT"] = first
    ui = ui_ports(env)
    assert set(ui) == set(SANDBOXES) == set(README_PORTS)
    defaults = {}
    for name in SANDBOXES:
        text = help_text(name, env)
        assert text.startswith(f"usage: python -m sandbox.{name} [-h] [--host HOST] [--port PORT]")
        assert "--host HOST address to listen on (default: 127.0.0.1)" in text
        for knob in KNOBS[name]:
            assert f" {knob} " in text, (name, knob)
        defaults[name] = default_port(text)
    assert defaults == ui
    assert len(set(defaults.values())) == len(defaults)  # no two sandboxes on one port
    if first is None:
        assert defaults == README_PORTS
    else:
        assert defaults == {name: port - 8010 + int(first) for name, port in README_PORTS.items()}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_sandbox_started_with_python_m_serves_on_its_port_with_its_knobs_and_stops_on_sigterm():
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "sandbox.datatalks", "--port", str(port), "--limit", "7", "--window", "3"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        banner = proc.stdout.readline()
        assert f"on http://127.0.0.1:{port} " in banner and "limit=7/3s" in banner
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/_sandbox/stats", timeout=10) as answer:
            stats = json.load(answer)
        assert (stats["limit"], stats["window_seconds"]) == (7, 3.0)
        request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/contacts", data=b"{}", method="POST")
        with pytest.raises(urllib.error.HTTPError) as refused:  # unsigned: API Gateway's 403
            urllib.request.urlopen(request, timeout=10)
        assert refused.value.code == 403
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0


def test_the_sftp_sandbox_prints_its_connection_then_serves_the_folder(tmp_path):
    import paramiko

    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "sandbox.sftp", "--port", str(port), "--root", str(tmp_path)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        connection = json.loads(proc.stdout.readline())
        assert (connection["host"], connection["port"], connection["login"]) == ("127.0.0.1", port, "splio")
        assert str(tmp_path) in proc.stdout.readline()
        key_file = tmp_path.parent / "client_key"
        key_file.write_text(connection["extra"]["private_key"])
        client = paramiko.SSHClient()
        kind, key = connection["extra"]["host_key"].split()
        client.get_host_keys().add(
            f"[127.0.0.1]:{port}", kind, paramiko.PKey.from_type_string(kind, _b64(key))
        )
        client.connect("127.0.0.1", port, username="splio", key_filename=str(key_file), look_for_keys=False)
        with client.open_sftp() as sftp, sftp.open("hello.csv", "w") as remote:
            remote.write("x\n")
        client.close()
        deadline = time.monotonic() + 10
        while not (tmp_path / "hello.csv").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert (tmp_path / "hello.csv").read_text() == "x\n"
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0


def _b64(text: str) -> bytes:
    import base64

    return base64.b64decode(text)


def test_the_port_variable_must_be_a_number():
    env = {**os.environ, "RETL_SANDBOX_PORT": "eighty"}
    done = subprocess.run(
        [sys.executable, "-m", "sandbox.voucherify", "--help"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 1
    assert (
        done.stderr.strip() == "RETL_SANDBOX_PORT='eighty' is not a port number: unset it or give e.g. 8010"
    )
