"""Environment for running the DAGs locally against the sandboxes: one place for demo, UI and tests.

Everything is an environment variable, as in a real deployment: Airflow's own settings and one
``AIRFLOW_CONN_*`` per connection.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SANDBOX_APP_ID = "sandbox-app-id"
SANDBOX_APP_TOKEN = "sandbox-app-token"
SALESFIRE_SITE = "site-1"
CONNECTIF_KEY_ID, CONNECTIF_KEY_SECRET = "sandbox-key", "sandbox-secret"
SALESFIRE_LISTS = {"customers-uk": "sandbox-secret-uk", "customers-eu": "sandbox-secret-eu"}
# Default ports of `python -m sandbox.NAME` and of `make ui`: the first sandbox's port, the others next.
FIRST_SANDBOX_PORT = 8010
SANDBOXES = ("voucherify", "salesfire", "connectif", "sftp", "datatalks")
PORT_ENV = "RETL_SANDBOX_PORT"


def sandbox_port(name: str) -> int:
    """The port ``name`` listens on unless told otherwise: ``RETL_SANDBOX_PORT`` (8010) plus its place in
    SANDBOXES, so the sandboxes started by hand are where ``make ui`` wires its connections."""
    first = os.environ.get(PORT_ENV) or FIRST_SANDBOX_PORT
    try:
        first = int(first)
    except ValueError:
        raise SystemExit(f"{PORT_ENV}={first!r} is not a port number: unset it or give e.g. 8010") from None
    return first + SANDBOXES.index(name)


class _HelpWithDefaults(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each knob's default, except the unset ones and flags."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)


def sandbox_parser(name: str, description: str) -> argparse.ArgumentParser:
    """The CLI every sandbox shares: ``python -m sandbox.NAME [--host H] [--port P] [knobs]``, each knob's
    default shown by ``--help``."""
    parser = argparse.ArgumentParser(
        prog=f"python -m sandbox.{name}",
        description=description,
        formatter_class=_HelpWithDefaults,
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    offset = SANDBOXES.index(name)
    parser.add_argument(
        "--port",
        type=int,
        default=sandbox_port(name),
        help=f"port to listen on, 0 for any free one; {PORT_ENV} + {offset}, where make ui puts it",
    )
    return parser


def conn_json(conn_type: str, **fields: object) -> str:
    extra = fields.pop("extra", None)
    body = {"conn_type": conn_type, **{k: v for k, v in fields.items() if v is not None}}
    if extra:
        body["extra"] = extra
    return json.dumps(body)


def airflow_env(home: Path) -> dict[str, str]:
    """Airflow settings for a self-contained local install under ``home``."""
    return {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
        "GX_ANALYTICS_ENABLED": "False",
        "PYTHONPATH": os.pathsep.join([str(REPO / "plugins"), str(REPO)]),
        # `airflow standalone` starts its parts as `airflow ...`: the venv's bin must be on PATH.
        "PATH": os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")]),
        "RETL_STAGING_URL": (home / "retl" / "staging").as_uri(),
    }


def connections_env(
    *,
    warehouse: str,
    state: str,
    voucherify_url: str | None = None,
    warehouse_type: str = "duckdb",
    state_type: str = "sqlite",
    voucherify_extra: dict | None = None,
    salesfire_url: str | None = None,
    salesfire_extra: dict | None = None,
    connectif_url: str | None = None,
    connectif_extra: dict | None = None,
    splio_sftp: dict | None = None,
    salesmanago_url: str | None = None,
    salesmanago_extra: dict | None = None,
) -> dict[str, str]:
    """``AIRFLOW_CONN_*`` for the warehouse, the state store and the vendor sandboxes."""
    env = {}
    if warehouse_type == "duckdb":
        env["AIRFLOW_CONN_RETL_WAREHOUSE"] = conn_json("duckdb", host=warehouse)
    else:
        env["AIRFLOW_CONN_RETL_WAREHOUSE"] = warehouse  # a postgres:// URI
    if state_type == "sqlite":
        env["AIRFLOW_CONN_RETL_STATE"] = conn_json("sqlite", host=state)
    else:
        env["AIRFLOW_CONN_RETL_STATE"] = state
    if voucherify_url:
        env["AIRFLOW_CONN_VOUCHERIFY_DEFAULT"] = conn_json(
            "http",
            host=voucherify_url,
            login=SANDBOX_APP_ID,
            password=SANDBOX_APP_TOKEN,
            extra={"requests_per_minute": 100, **(voucherify_extra or {})},
        )
    if salesfire_url:
        env["AIRFLOW_CONN_SALESFIRE_DEFAULT"] = conn_json(
            "http",
            host=salesfire_url,
            login=SALESFIRE_SITE,
            extra={
                "lists": SALESFIRE_LISTS,
                # false: the sandbox follows the page's words, under which true skips existing profiles
                "update_existing": False,
                "requests_per_minute": 100,
                **(salesfire_extra or {}),
            },
        )
    if connectif_url:
        env["AIRFLOW_CONN_CONNECTIF_DEFAULT"] = conn_json(
            "http",
            host=connectif_url,
            login=CONNECTIF_KEY_ID,
            password=CONNECTIF_KEY_SECRET,
            extra={"requests_per_minute": 100, **(connectif_extra or {})},
        )
    if salesmanago_url:
        from sandbox.datatalks import ACCESS_KEY, DELETE_PATH, GROUP_KEY, SECRET_KEY

        # The documented delete lives on another host (execute-api): here the sandbox serves it too.
        env["AIRFLOW_CONN_SALESMANAGO_DEFAULT"] = conn_json(
            "http",
            host=salesmanago_url,
            login=ACCESS_KEY,
            password=SECRET_KEY,
            extra={
                "group_key": GROUP_KEY,
                "delete_contact_url": salesmanago_url.rstrip("/") + DELETE_PATH,
                "requests_per_minute": 100,
                **(salesmanago_extra or {}),
            },
        )
    if splio_sftp:  # {"host", "port", "login", "extra"} as SFTPSandbox gives them
        env["AIRFLOW_CONN_SPLIO_REFERRAL_DEFAULT"] = conn_json("sftp", **splio_sftp)
    return env
