"""`make ui`: the Airflow UI (``airflow standalone``) with the DAGs, the Voucherify, Salesfire and
Connectif sandboxes, an SFTP server for Splio Referral, the Data Talks sandbox and every connection
wired. Login is disabled for local use (every visitor is admin). Ctrl-C stops everything.
"""

from __future__ import annotations

import os
import subprocess
import sys

from local import (
    HOME,
    REPO,
    ensure_warehouse,
    environment,
    migrate,
    say,
    start_connectif,
    start_salesfire,
    start_sandbox,
    start_sftp,
    start_voucherify,
)

PORT = int(os.environ.get("RETL_UI_PORT", "8080"))
# Voucherify; Salesfire, Connectif, the Splio SFTP server and Data Talks on the next four ports
SANDBOX_PORT = int(os.environ.get("RETL_SANDBOX_PORT", "8010"))


def main() -> int:
    ensure_warehouse()
    (HOME / "retl").mkdir(parents=True, exist_ok=True)
    sandbox, url = start_voucherify(SANDBOX_PORT, 100, 60)
    salesfire, salesfire_url = start_salesfire(SANDBOX_PORT + 1)
    connectif, connectif_url = start_connectif(SANDBOX_PORT + 2, 100, 60)
    sftp, splio_sftp = start_sftp(SANDBOX_PORT + 3)
    datatalks, datatalks_url = start_sandbox(
        "datatalks", SANDBOX_PORT + 4, ["--limit", "100", "--window", "60"]
    )
    env = environment(url, 100, salesfire_url, connectif_url, splio_sftp, datatalks_url)
    env.update(
        {
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
            "AIRFLOW__API__PORT": str(PORT),
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        }
    )
    try:
        with (HOME / "ui-setup.log").open("w") as log:
            migrate(env, log)
        say(f"Voucherify sandbox at {url} (100 requests/minute, like the Business plan)")
        say(f"Salesfire sandbox at {salesfire_url} (site-1, lists customers-uk and customers-eu)")
        say(f"Connectif sandbox at {connectif_url} (100 requests/minute per account)")
        say("Connectif exports are loaded into .airflow/retl/exports.duckdb (connection retl_exports)")
        say(f"Data Talks (SALESmanago) sandbox at {datatalks_url} (SigV4, group_key sandbox-group)")
        say(
            f"Splio Referral SFTP sandbox on port {splio_sftp['port']}: files land in .airflow/retl/splio-sftp"
        )
        say(f"Airflow UI at http://localhost:{PORT} (no login: local use only). Ctrl-C to stop.")
        say(
            "Trigger voucherify_sync with params window_start=2026-10-31, window_end=2026-11-01 for sample data."
        )
        return subprocess.call([sys.executable, "-m", "airflow", "standalone"], env=env, cwd=REPO)
    except KeyboardInterrupt:
        return 0
    finally:
        sandbox.terminate()
        salesfire.terminate()
        connectif.terminate()
        sftp.terminate()
        datatalks.terminate()


if __name__ == "__main__":
    sys.exit(main())
