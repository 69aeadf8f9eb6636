"""`make demo` as a new user runs it: scripts/demo.py from the repository in a folder of its own, twice.

The first run prints the report for all five destinations, exits 0, and counts what the README's recorded
run counts (the warehouse is seeded: any difference means the README is stale or the pipeline changed).
The demo itself checks that each sandbox holds what the runs report sent and what the ledger recorded (the
check's failing side is tested in tests/unit/test_demo_report.py). The second run sends nothing new.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from sandbox.env import REPO

sys.path.insert(0, str(REPO / "scripts"))

from demo_report import SANDBOX_OF, counts, sent_per_entity
from readme_demo import RECORDED

pytestmark = pytest.mark.e2e


def demo(folder, *args) -> tuple[subprocess.CompletedProcess, dict]:
    env = {**os.environ, "RETL_LOCAL_DIR": str(folder)}
    for name in [k for k in env if k.startswith(("AIRFLOW_", "AIRFLOW__"))]:
        del env[name]  # the demo sets up its own Airflow home, as from a clean shell
    done = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "demo.py"), *args],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    result_file = folder / ".airflow" / "demo-result.json"
    assert result_file.exists(), done.stdout[-3000:] + done.stderr[-3000:]
    return done, json.loads(result_file.read_text())


def test_make_demo_reports_five_destinations_that_match_the_sandboxes_and_a_rerun_sends_nothing(tmp_path):
    done, result = demo(tmp_path)
    assert done.returncode == 0, done.stdout[-5000:]
    out = done.stdout
    table = out[out.index("destination     run") : out.index("Quarantined rows")]
    for destination in SANDBOX_OF:
        assert f"\n{destination} " in table
    assert "every run succeeded" in out
    assert "= what the runs report sent = what the ledger records delivered in these runs." in out

    # what the demo printed is what the sandboxes hold and the ledger records
    sent = sent_per_entity(result["runs"])
    assert result["landed"] == result["ledger"] == sent
    for destination, entities in result["landed"].items():
        held = ", ".join(f"{entity} {n:,}" for entity, n in entities.items())
        assert f"  {destination:<15} {held};" in out
    assert sum(sum(e.values()) for e in result["landed"].values()) > 10_000
    # ... and what the README shows
    assert counts(result) == counts(json.loads(RECORDED.read_text()))

    again, rerun = demo(tmp_path)
    assert again.returncode == 0, again.stdout[-5000:]
    assert "Nothing new went to the APIs" in again.stdout
    apis = {d: e for d, e in sent_per_entity(rerun["runs"]).items() if d != "splio_referral"}
    assert apis and all(n == 0 for entities in apis.values() for n in entities.values())
    assert all(
        n == 0 for d, entities in rerun["landed"].items() if d != "splio_referral" for n in entities.values()
    )
    # Splio's file is the window's delta: rebuilt and replaced, the same rows
    assert rerun["landed"]["splio_referral"] == result["landed"]["splio_referral"]
