"""The fault matrix: every destination through the faults a delivery meets, against its sandbox.

Destinations: Voucherify (orders), Connectif (contacts), Salesfire (customers), SALESmanago through Data
Talks (events) over HTTP, and Splio Referral over SFTP. Faults: 5xx bursts then recovery, 429 storms, a
hung connection (the sandbox stalls longer than the hook's ``timeout_seconds``), a dropped connection, the
run's process group SIGKILLed mid-load then rerun, two runs of one window at once (the ledger's lease
serialises them), a deleted and a corrupt state store (refused before any request, the store named).

After each: every record is delivered exactly once, counted at the sandbox per vendor key, or is
pending/failed in the ledger with a readable reason; and no secret is in any log, report or staging file.
Several faults share one run where their effects are separable (the sandbox records which request got
which fault), to keep the module short; windows are one day.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

import pytest
import sqlalchemy

from sandbox.connectif import ConnectifSandbox
from sandbox.datatalks import SECRET_KEY, DataTalksSandbox
from sandbox.env import CONNECTIF_KEY_SECRET, SALESFIRE_LISTS, SALESFIRE_SITE, SANDBOX_APP_TOKEN
from sandbox.salesfire import SalesfireSandbox
from sandbox.sftp import SFTPSandbox
from sandbox.voucherify import VoucherifySandbox
from tests.e2e.harness import LIMIT, WINDOW, WINDOW_SECONDS, Harness, run_env, wait_for
from tests.e2e.test_splio_e2e import NAME, expected_file

pytestmark = pytest.mark.e2e
DAY = ("2026-10-31", "2026-11-01")
NEXT_DAY = ("2026-11-01", "2026-11-02")  # no changes of its own: what it sends is carried over
HOOK_TIMEOUT, HANG = 1.5, 3.0  # the hook gives up on an answer after 1.5 s; a hung request stalls 3 s
BURST, DROPS, STORM = 5, 2, 6  # 5 x 503 = the hook's max_transient_retries; 6 x 429 > it (429s are free)


@dataclass(frozen=True)
class Destination:
    """One destination's sync and how to read, at its sandbox, what it was given."""

    dag_id: str
    ledger: str  # the destination's name in the ledger
    entity: str
    method: str
    path: str  # a delivery is ``method`` on this path (or under it, when it ends with "/")
    key: Callable[[dict], str]  # the vendor's key of one delivery request
    ledger_keys: bool  # the vendor key is the ledger's record key
    secrets: tuple[str, ...]

    def deliveries(self, sandbox, since: float = 0.0, until: float = float("inf")) -> list[dict]:
        """Requests the sandbox answered 2xx with a delivery (a hung one counts: the server went on),
        of those that arrived between ``since`` and ``until`` (``time.time()``)."""
        return [
            r
            for r in sandbox.requests
            if since <= r["t"] < until
            and r["method"] == self.method
            and (r["path"].startswith(self.path) if self.path.endswith("/") else r["path"] == self.path)
            and r["status"] is not None
            and r["status"] < 300
        ]

    def delivered(self, sandbox, since: float = 0.0, until: float = float("inf")) -> Counter:
        """Vendor key -> how many times the sandbox took it."""
        return Counter(self.key(r) for r in self.deliveries(sandbox, since, until))


HTTP = {
    "voucherify": Destination(
        "voucherify_sync", "voucherify", "orders", "POST", "/v1/orders",
        lambda r: r["body"]["source_id"], True, (SANDBOX_APP_TOKEN,),
    ),
    "connectif": Destination(
        "connectif_sync", "connectif", "contacts", "PATCH", "/contacts/",
        lambda r: unquote(r["path"].removeprefix("/contacts/")).lower(), True, (CONNECTIF_KEY_SECRET,),
    ),
    "salesfire": Destination(
        "salesfire_sync", "salesfire", "customers", "POST", f"/client/{SALESFIRE_SITE}/customers/",
        lambda r: f"{r['path']}:{(r['body'].get('email') or r['body'].get('mobile_number')).lower()}",
        False, tuple(SALESFIRE_LISTS.values()),
    ),
    "salesmanago": Destination(
        "salesmanago_sync", "salesmanago", "events", "POST", "/v1/events",
        lambda r: r["body"]["data"]["externalId"], True, (SECRET_KEY,),
    ),
}  # fmt: skip
# Over SFTP there is no request log: delivered_rows reads the complete files (a row's key is unique_id).
SPLIO = Destination(
    "splio_referral_sync", "splio_referral", "referral_contacts", "SFTP put", "/", str, True, ()
)


def with_extra(env: dict, conn: str, **extra) -> None:
    """Add extras to the connection ``conn`` of ``env`` (an ``AIRFLOW_CONN_*`` JSON)."""
    body = json.loads(env[conn])
    body["extra"] = {**body.get("extra", {}), **extra}
    env[conn] = json.dumps(body)


def start_http_sandbox(name: str):
    if name == "voucherify":
        return VoucherifySandbox(port=0, limit=LIMIT, window_seconds=WINDOW_SECONDS, async_delay=0.02)
    if name == "connectif":
        return ConnectifSandbox(port=0, limit=LIMIT, window_seconds=WINDOW_SECONDS, async_delay=0.02)
    if name == "salesfire":
        lists = {(SALESFIRE_SITE, list_name): secret for list_name, secret in SALESFIRE_LISTS.items()}
        return SalesfireSandbox(port=0, lists=lists)
    return DataTalksSandbox(port=0, limit=LIMIT, window_seconds=WINDOW_SECONDS)


@contextlib.contextmanager
def http_harness(name: str, warehouse: Path, tmp: Path):
    """One HTTP destination's harness; its hook gives up on an answer after HOOK_TIMEOUT seconds."""
    with start_http_sandbox(name) as sandbox:
        env = run_env(tmp, warehouse, **{f"{name}_url": sandbox.url})
        with_extra(env, f"AIRFLOW_CONN_{name.upper()}_DEFAULT", timeout_seconds=HOOK_TIMEOUT)
        harness = Harness(sandbox, env, tmp, dag_id=HTTP[name].dag_id)
        harness.dest = HTTP[name]
        yield harness


@contextlib.contextmanager
def splio_harness(warehouse: Path, tmp: Path):
    """Splio Referral's harness on the SFTP sandbox; ``configure(**extra)`` changes connection extras."""
    with SFTPSandbox(tmp / "splio") as sftp:
        harness = Harness(sftp, {}, tmp, dag_id=SPLIO.dag_id)
        harness.configure = lambda **more: harness.env.update(
            run_env(tmp, warehouse, splio_sftp=sftp.connection(**{"backoff_base_seconds": 0.05, **more}))
        )
        harness.configure()
        harness.dest = SPLIO
        harness.secret_lines = [
            line for line in sftp.client_private_key_openssh.splitlines() if "-----" not in line
        ]
        yield harness


@pytest.fixture(params=list(HTTP))
def http(request, airflow_db, warehouse, tmp_path):
    with http_harness(request.param, warehouse, tmp_path) as harness:
        yield harness


@pytest.fixture
def splio(airflow_db, warehouse, tmp_path):
    with splio_harness(warehouse, tmp_path) as harness:
        yield harness


@pytest.fixture(params=[*HTTP, "splio"])
def any_destination(request, airflow_db, warehouse, tmp_path):
    """Each destination's harness, for the cells every transport shares."""
    if request.param == "splio":
        with splio_harness(warehouse, tmp_path) as harness:
            yield harness
    else:
        with http_harness(request.param, warehouse, tmp_path) as harness:
            yield harness


# --- what the sandboxes and the ledger say ------------------------------------------------------------
def delivered_rows(harness) -> Counter:
    """Vendor key -> times taken: HTTP from the request log, SFTP from the rows of the complete files
    Splio's pickup would import (temporary dot-files are not picked up)."""
    if harness.dest is not SPLIO:
        return harness.dest.delivered(harness.sandbox)
    counts: Counter = Counter()
    for name, data in harness.sandbox.files().items():
        if not name.rsplit("/", 1)[-1].startswith("."):
            counts.update(line.split(b";", 1)[0].decode() for line in data.splitlines()[1:])
    return counts


def ledger_rows(harness) -> dict[str, tuple[str, str | None]]:
    engine = sqlalchemy.create_engine(harness.state_url)
    try:
        with engine.connect() as con:
            rows = con.execute(
                sqlalchemy.text(
                    "SELECT record_key, status, error FROM sync_ledger WHERE destination = :d AND entity = :e"
                ),
                {"d": harness.dest.ledger, "e": harness.dest.entity},
            ).fetchall()
    finally:
        engine.dispose()
    return {key: (status, error) for key, status, error in rows}


def assert_all_delivered_once(harness, counts: Counter, may_double: set[str] = frozenset()) -> None:
    """Each record the ledger holds as delivered was taken once at the vendor (``may_double``: keys whose
    request the sandbox went on with after the client gave up on it); nothing is left pending, and what
    failed says why."""
    rows = ledger_rows(harness)
    statuses = Counter(status for status, _ in rows.values())
    assert set(statuses) <= {"delivered", "rejected", "failed"}, statuses
    failed = [error for status, error in rows.values() if status == "failed"]
    assert all(failed), "a failed record without its reason"
    # Only the vendor's refusals fail a record: an outage, a drop, a hang or a 429 never does.
    transient = ("503", "429", "Timeout", "timed out", "Connection", "VendorUnavailable")
    assert not [e for e in failed if any(t in e for t in transient)], failed
    delivered = {k for k, (status, _) in rows.items() if status == "delivered"}
    assert len(delivered) == len(counts) > 10
    if harness.dest.ledger_keys:
        assert delivered == set(counts)
    doubled = {k for k, n in counts.items() if n > 1}
    assert doubled <= may_double and max(counts.values()) <= 2, doubled - may_double


def assert_no_secret_leaked(harness, ledger: bool = True) -> None:
    """No credential in the run logs (they hold the report JSON), staging or quarantine files, nor in
    the errors the ledger keeps (``ledger``: the store is readable)."""
    secrets = [*harness.dest.secrets, *getattr(harness, "secret_lines", [])]
    assert secrets
    files = [*harness.tmp.glob("*.log"), *(p for p in (harness.tmp / "staging").rglob("*") if p.is_file())]
    assert any(p.suffix == ".log" for p in files)
    for path in files:
        text = path.read_bytes().decode("utf-8", "replace")
        leaked = [s[:6] + "..." for s in secrets if s in text]
        assert not leaked, f"{leaked} in {path}"
    for _status, error in ledger_rows(harness).values() if ledger else ():
        assert not any(s in (error or "") for s in secrets)


def run_twice_at_once(harness, conf: dict, window: tuple[str, str], airflow_db: Path) -> list[dict]:
    """Two runs of one window at once, as two Airflow deployments on one state store would start them
    (each its own metadata database: two ``dag.test()`` runs of one logical date would collide there)."""
    other = harness.tmp / "airflow-other.db"
    shutil.copy(airflow_db / "airflow.db", other)
    envs = [harness.env, {**harness.env, "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{other}"}]
    logs = [harness.tmp / f"together{n}.log" for n in range(2)]
    procs = []
    for env, log in zip(envs, logs, strict=True):
        with log.open("w") as out:
            procs.append(
                subprocess.Popen(
                    harness.command(conf, window),
                    env=env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )
    results = []
    for proc, log in zip(procs, logs, strict=True):
        assert proc.wait(timeout=600) == 0, f"run failed; log in {log}"
        lines = [line for line in log.read_text().splitlines() if line.startswith("{")]
        result = json.loads(lines[-1])
        results.append({r["entity"]: r for r in result["reports"]}[harness.dest.entity])
    return results


# --- HTTP: a killed run, an outage, then 5xx, drops, a hang and a 429 storm while two runs recover ------
def test_kill_outage_bursts_drops_hang_429_storm_and_two_runs_at_once_deliver_each_record_once(
    http, airflow_db
):
    dest, sandbox = http.dest, http.sandbox
    conf = {"entities": [dest.entity]}

    # SIGKILL of the run's process group while it delivers (each answer slowed to catch it mid-load).
    sandbox.inject("slow", delay=0.05, count=100000, path_prefix=dest.path)
    proc = http.start(conf, window=DAY)
    wait_for(lambda: len(dest.deliveries(sandbox)) >= 20, timeout=300)
    http.kill(proc)
    killed_at = time.time()  # a request that arrived before is the killed run's, answered or not
    sandbox.clear_faults()

    # An outage longer than the hook's retries: the run fails; the rest is pending, and the report says why.
    mark = time.time()
    sandbox.inject("status", status=503, count=100000, path_prefix=dest.path)
    down = http.run(conf, window=DAY, expect_success=False)
    report = down["reports"][dest.entity]
    assert down["state"] == "failed" and report["status"] == "failed" and report["sent"] == 0
    assert "VendorUnavailable" in report["error"] and "503" in report["error"], report["error"]
    assert not dest.deliveries(sandbox, mark)
    pending = {k for k, (status, _) in ledger_rows(http).items() if status == "pending"}
    assert len(pending) >= 10
    sandbox.clear_faults()

    # Recovery by the next day's run - twice at once - which has no changes of its own but delivers what
    # the failed run left pending, through a 5xx burst the hook's retries absorb, dropped connections, one
    # request that hangs past the hook's timeout and a 429 storm longer than the retry budget. The lease
    # lets one run deliver at a time (long enough here not to lapse during the storm).
    mark = time.time()
    sandbox.inject("status", status=503, count=BURST, path_prefix=dest.path)
    sandbox.inject("drop", count=DROPS, skip=3, path_prefix=dest.path)
    sandbox.inject("slow", delay=HANG, count=1, skip=6, path_prefix=dest.path)
    sandbox.inject("throttle", count=STORM, skip=9, retry_after=1, path_prefix=dest.path)
    http.env["RETL_LEASE_SECONDS"] = "60"
    reports = run_twice_at_once(http, conf, NEXT_DAY, airflow_db)
    assert all(r["extracted"] == 0 for r in reports)
    fired = sandbox.stats()["faults_fired"]
    assert fired == {"status": BURST, "drop": DROPS, "slow": 1, "throttle": STORM}
    assert sum(r["transient_errors"] for r in reports) >= BURST + DROPS + 1
    assert sum(r["throttled"] for r in reports) >= STORM
    hung = {dest.key(r) for r in sandbox.requests if r["t"] >= mark and r["fault"] == "slow"}
    assert len(hung) == 1
    taken = dest.delivered(sandbox, mark)
    assert sum(r["sent"] for r in reports) == sum(r["carried_over"] for r in reports) == len(taken)
    after = ledger_rows(http)  # what was pending is now delivered (or refused by the vendor, with why)
    assert {after[k][0] for k in pending} <= {"delivered", "failed"}
    recovered = {k for k in pending if after[k][0] == "delivered"}
    assert len(recovered) == len(taken) and (recovered == set(taken) or not dest.ledger_keys)

    counts = dest.delivered(sandbox)
    # Twice at most, and only: the hung request's record (the server went on with it after the hook gave
    # up, and the retry sent it again) and the one record whose answer was lost with the killed run.
    lost_answer = {k for k, n in counts.items() if n > 1} - hung
    assert len(lost_answer) <= 1 and lost_answer <= set(dest.delivered(sandbox, until=killed_at))
    assert_all_delivered_once(http, counts, may_double=hung | lost_answer)
    assert_no_secret_leaked(http)


# --- SFTP: a connection dropped mid-file, the server unreachable then back, a killed upload, two reruns --
# No 429 storm: Splio documents no throttling and SFTP has none. No hung transfer: the Splio hook sets no
# timeout on SFTP reads and writes (paramiko waits for ever), so a stalled server would stall the task.
def test_sftp_unreachable_dropped_mid_file_killed_and_two_runs_at_once_leave_each_row_once(
    splio, warehouse, airflow_db
):
    sftp = splio.sandbox
    expected, _ = expected_file(warehouse)
    lines = expected.split(b"\n")[1:-1]

    # The connection drops mid-file and the server stays unreachable: the upload's attempts fail, the
    # run fails, nothing is marked delivered, the ledger's report of the run says why, and the partial
    # file is not one Splio would pick up.
    splio.configure(max_lines=41)  # parts of 40 rows
    sftp.drop_after(3000, stay_down=True)
    down = splio.run(window=WINDOW, expect_success=False)
    report = down["reports"][SPLIO.entity]
    assert down["state"] == "failed" and report["status"] == "failed" and report["sent"] == 0
    assert f"127.0.0.1:{sftp.port}" in report["error"] and "VendorUnavailable" in report["error"]
    assert "delivered" not in {status for status, _ in ledger_rows(splio).values()}
    assert sftp.drops == 1 and sftp.pickup() == {}

    # Back, and the connection drops once more in the middle of the first part: that upload is retried,
    # and only complete parts are there, in order, holding every row once.
    sftp.bring_up()
    sftp.drop_after(3000)
    first = splio.run(window=WINDOW)["reports"][SPLIO.entity]
    files = sftp.files()
    parts = -(-len(lines) // 40)
    assert sftp.drops == 2 and len(files) == parts == len(first["files"]) > 1
    assert sorted(files) == [NAME.replace(".csv", f"_{n:02d}.csv") for n in range(1, parts + 1)]
    assert (
        b"".join(b"\n".join(f.split(b"\n")[1:]) for _, f in sorted(files.items()))
        == b"\n".join(lines) + b"\n"
    )
    assert all(p["status"] == "imported" for p in sftp.pickup().values())
    assert_all_delivered_once(splio, delivered_rows(splio))

    # Killed in the middle of an upload (the link is slow), then two reruns at once, back to one file per
    # window: the window's single file replaces every part; no temporary file is left, no row twice.
    splio.configure()
    sftp.write_delay = 1.0
    sftp.events.clear()
    proc = splio.start({"full_resync": True}, window=WINDOW)
    wait_for(lambda: any(e[0] == "open" for e in sftp.events), timeout=300)
    splio.kill(proc)
    reports = run_twice_at_once(splio, {"full_resync": True}, WINDOW, airflow_db)
    assert [r["sent"] for r in reports] == [first["sent"]] * 2
    assert sftp.files() == {NAME: expected}
    assert_all_delivered_once(splio, delivered_rows(splio))
    assert_no_secret_leaked(splio)


# --- every destination: a deleted, then a corrupt state store --------------------------------------------
def test_a_deleted_or_corrupt_state_store_is_refused_before_any_request(any_destination):
    harness = any_destination
    store = Path(json.loads(harness.env["AIRFLOW_CONN_RETL_STATE"])["host"])
    harness.env["RETL_TASK_RETRIES"] = "1"  # a refusal no retry can fix is not retried
    for damage in ("deleted", "corrupt"):
        for path in (store, Path(f"{store}-wal"), Path(f"{store}-shm")):
            path.unlink(missing_ok=True)
        if damage == "corrupt":
            store.write_bytes(b"this is not a state store\n" * 200)
        result = harness.run({"entities": [harness.dest.entity]}, window=DAY, expect_success=False)
        log = result["log"].read_text()
        assert result["state"] == "failed", damage
        assert str(store) in log and "state store" in log.lower(), (damage, result["log"])
        failed = [task for task, state in result["tasks"].items() if state == "failed"]
        assert failed and all(result["tries"][task] == 1 for task in failed), (damage, result["tries"])
        if harness.dest is SPLIO:
            assert harness.sandbox.connections == 0 and harness.sandbox.files() == {}, damage
        else:
            assert harness.sandbox.requests == [], damage
        assert store.exists() == (damage == "corrupt"), "a missing store must not be created implicitly"
    assert_no_secret_leaked(harness, ledger=False)
