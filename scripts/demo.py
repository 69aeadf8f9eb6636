"""`make demo`: build the sample warehouse, start the Voucherify sandbox, run voucherify_sync for one
daily window through Airflow (``dag.test()``) and print the run report. Takes a minute or two.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

from local import (
    HOME,
    REPO,
    ensure_warehouse,
    environment,
    free_port,
    migrate,
    say,
    shown,
    start_voucherify,
)

WINDOW = ("2026-10-31", "2026-11-01")
# The sandbox plays an account allowed 1,200 requests a minute (Voucherify's Organization plan allows
# 2,000) so the ~700 one-request-each orders of the window take seconds; the connection says the same.
LIMIT_PER_MINUTE = 1200


def main() -> int:
    ensure_warehouse()
    shutil.rmtree(HOME / "retl", ignore_errors=True)  # a fresh state store: the sandbox starts empty too
    (HOME / "retl").mkdir(parents=True)
    sandbox, url = start_voucherify(free_port(), LIMIT_PER_MINUTE, 60)
    log_path = HOME / "demo.log"
    try:
        env = environment(url, LIMIT_PER_MINUTE)
        with log_path.open("w") as log:
            migrate(env, log)
            say(f"Voucherify sandbox at {url} ({LIMIT_PER_MINUTE} requests/minute)")
            say(
                f"running voucherify_sync for [{WINDOW[0]}, {WINDOW[1]}) - Airflow's log goes to "
                f"{shown(log_path)}"
            )
            done = subprocess.run(
                [
                    sys.executable,
                    str(REPO / "scripts" / "run_dag.py"),
                    "voucherify_sync",
                    "--window-start",
                    WINDOW[0],
                    "--window-end",
                    WINDOW[1],
                    "--json",
                ],
                env=env,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
            )
        lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
        if not lines:
            print(done.stdout)
            say(f"the run printed no report: see {log_path}")
            return 1
        result = json.loads(lines[-1])
        import requests

        stats = requests.get(f"{url}/_sandbox/stats", timeout=10).json()
    finally:
        sandbox.terminate()
        sandbox.wait(timeout=10)
    sys.path.insert(0, str(REPO / "plugins"))
    from reverse_etl.tasks import format_report

    print()
    print(f"voucherify_sync [{WINDOW[0]}, {WINDOW[1]}): {result['state']}")
    print()
    print(format_report(result["reports"]))
    print()
    print(
        f"sandbox: {stats['requests_total']} requests, {stats['throttled_by_limiter']} answered 429, "
        f"at most {stats['max_in_window']} in any {stats['window_seconds']:g} s (limit {stats['limit']})"
    )
    for report in result["reports"]:
        if report.get("rejected"):
            print(f"quarantine of {report['entity']}: {report['quarantine']}")
    print()
    print(
        "What happened to a record:  PYTHONPATH=plugins .venv/bin/python -m reverse_etl.cli --state "
        f"{shown(HOME / 'retl' / 'state.db')} why voucherify customers <customer_id>"
    )
    return 0 if result["state"] == "success" else 1


if __name__ == "__main__":
    sys.exit(main())
