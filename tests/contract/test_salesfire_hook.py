"""The Salesfire hook against the sandbox: the signature covers the exact bytes sent, per list."""

from __future__ import annotations

import pytest

from reverse_etl.errors import ConfigError, VendorAuthError, VendorRejected
from reverse_etl.hooks.salesfire import SalesfireHook
from sandbox.env import conn_json
from sandbox.salesfire import SalesfireSandbox

CONN = "salesfire_contract"
LISTS = {"uk": "secret-uk", "eu": "secret-eu"}


@pytest.fixture
def sandbox():
    with SalesfireSandbox(port=0, lists={("site-1", name): secret for name, secret in LISTS.items()}) as sb:
        yield sb


@pytest.fixture
def hook(monkeypatch, state_store, sandbox):
    def make(lists=LISTS) -> SalesfireHook:
        monkeypatch.setenv(
            f"AIRFLOW_CONN_{CONN.upper()}",
            conn_json(
                "http", host=sandbox.url, login="site-1", extra={"lists": lists, "requests_per_minute": 6000}
            ),
        )
        return SalesfireHook(CONN)

    return make


def test_signed_post_is_accepted_per_list(hook, sandbox):
    h = hook()
    body = {
        "email": "zoe@example.com",
        "types": ["MARKETING"],
        "channels": ["EMAIL"],
        "update_existing": True,
        "attributes": {"name": "Zoë Ünal", "date_of_birth": "1994-09-04"},
    }
    h.post_customer("uk", body)
    h.post_customer("eu", {**body, "email": "eu@example.com"})
    assert sandbox.customer("site-1", "uk", "zoe@example.com")["attributes"]["name"] == "Zoë Ünal"
    assert sandbox.customer("site-1", "eu", "eu@example.com") is not None


def test_wrong_secret_is_an_auth_error(hook):
    h = hook(lists={"uk": "not-the-secret"})
    with pytest.raises(VendorAuthError, match=CONN):
        h.post_customer("uk", {"email": "a@example.com"})


def test_unknown_list_is_a_config_error_naming_the_lists(hook):
    with pytest.raises(ConfigError, match=r"no secret for list 'us'.*eu, uk"):
        hook().post_customer("us", {"email": "a@example.com"})


def test_validation_errors_name_the_field(hook):
    with pytest.raises(VendorRejected, match="types"):
        hook().post_customer("uk", {"email": "a@example.com", "types": ["marketing"]})
