"""Child processes of the local launchers, each in a session of its own, and one way to end them all.

Why: Airflow's scheduler forks executor workers and task supervisors (which move into process groups of
their own), the api-server forks its workers. Terminating only the direct child leaves the rest running,
so stopping takes the whole tree: every process group started here plus every descendant seen before or
during the shutdown.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import time

import psutil

GRACE_SECONDS = 20


def _die_with_parent() -> None:
    """Linux: SIGTERM to the child if the launcher itself is killed (SIGKILL) and cannot clean up."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def spawn(command: list[str], **kwargs) -> subprocess.Popen:
    """``Popen`` in a new session: a Ctrl-C on the terminal reaches only the launcher, which then stops
    the children in order (see ``stop``) instead of every process getting SIGINT at once."""
    return subprocess.Popen(command, start_new_session=True, preexec_fn=_die_with_parent, **kwargs)


def _tree(procs: list[subprocess.Popen]) -> dict[int, psutil.Process]:
    found: dict[int, psutil.Process] = {}
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            root = psutil.Process(proc.pid)
            for member in (root, *root.children(recursive=True)):
                found[member.pid] = member
    return found


def _alive(member: psutil.Process) -> bool:
    try:
        return member.is_running() and member.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _describe(member: psutil.Process) -> str:
    try:
        return f"{' '.join(member.cmdline())[:100]} ({member.pid})"
    except psutil.Error:
        return str(member.pid)


def _signal_all(procs: list[subprocess.Popen], tree: dict[int, psutil.Process], sig: int) -> None:
    for proc in procs:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, sig)  # the child leads its session's group
    for member in tree.values():
        with contextlib.suppress(psutil.Error):
            member.send_signal(sig)


def stop(procs: list[subprocess.Popen], grace: float = GRACE_SECONDS) -> list[str]:
    """SIGTERM every process of ``procs``' trees, SIGKILL what is left after ``grace`` seconds; return
    the processes that had to be killed ("command line (pid)"). SIGINT and SIGTERM are ignored meanwhile so the shutdown completes."""
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        tree = _tree(procs)
        _signal_all(procs, tree, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            tree.update(_tree(procs))  # children forked while shutting down
            for proc in procs:
                proc.poll()  # reap direct children
            if not any(_alive(m) for m in tree.values()):
                return []
            time.sleep(0.2)
        killed = [_describe(m) for m in tree.values() if _alive(m)]
        _signal_all(procs, tree, signal.SIGKILL)
        for proc in procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
        return killed
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
