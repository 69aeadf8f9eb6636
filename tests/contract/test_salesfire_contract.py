"""Salesfire: the request bytes built by the real hook, checked independently of our own code.

Why: the sandbox and the client were written to the same reading, so each check here comes from outside
both: ``X-Signature`` is recomputed with ``openssl dgst -sha256 -hmac`` over the exact body bytes that
went on the wire, and the body is compared with the field list of Salesfire's page ("Syncing customers
to Salesfire"). The ``update_existing`` tests show the old client (``true`` for every customer) leaving a
changed customer unchanged under the page's wording, and the new default updating it.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import subprocess
import tempfile

import pytest

from reverse_etl.hooks.salesfire import SalesfireHook
from reverse_etl.operators.salesfire import SalesfireCustomersOperator
from sandbox.env import conn_json
from sandbox.salesfire import SalesfireSandbox
from tests.contract.capture import capture_sent

CONN = "salesfire_bytes"
SITE = "site-1"
LISTS = {"customers-uk": "s3cr3t-uk", "customers-eu": "s3cr3t-eu"}
OPENSSL = "/usr/bin/openssl"

# The page's request fields and their rules (help.salesfire.co.uk, sync customers to Salesfire).
DOCUMENTED = {"email", "mobile_number", "types", "channels", "update_existing", "attributes"}
ENUMS = {"types": {"MARKETING", "TRANSACTIONAL"}, "channels": {"EMAIL", "SMS"}}
ATTRIBUTE_KEY = re.compile(r"[a-z][a-z0-9_]*")
# The page's date_of_birth examples: 04-09-1994 04/09/1994 04091994 4-9-94 4/9/94 1994-09-04 1994/09/04
DOB = re.compile(
    r"\d{2}-\d{2}-\d{4}|\d{2}/\d{2}/\d{4}|\d{8}|\d{1,2}-\d{1,2}-\d{2}|\d{1,2}/\d{1,2}/\d{2}"
    r"|\d{4}-\d{2}-\d{2}|\d{4}/\d{2}/\d{2}"
)


@pytest.fixture
def sandbox():
    with SalesfireSandbox(port=0, lists={(SITE, name): secret for name, secret in LISTS.items()}) as sb:
        yield sb


@pytest.fixture
def hook(monkeypatch, state_store, sandbox):
    """A hook whose session hands every prepared request to ``sent`` before it goes out."""

    def make(**extra) -> tuple[SalesfireHook, list]:
        monkeypatch.setenv(
            f"AIRFLOW_CONN_{CONN.upper()}",
            conn_json(
                "http",
                host=sandbox.url,
                login=SITE,
                extra={"lists": LISTS, "requests_per_minute": 6000, **extra},
            ),
        )
        h = SalesfireHook(CONN)
        return h, capture_sent(h.get_conn())

    return make


def openssl_hmac(secret: str, body: bytes) -> str:
    """``openssl dgst -sha256 -hmac <secret>`` over the body bytes: lowercase hex."""
    with tempfile.NamedTemporaryFile() as f:
        f.write(body)
        f.flush()
        out = subprocess.run(
            [OPENSSL, "dgst", "-sha256", "-hmac", secret, f.name], capture_output=True, check=True, text=True
        ).stdout
    return out.strip().rsplit(" ", 1)[-1].lower()


def check_documented(body: dict) -> list[str]:
    """Departures of one customer object from the page's field list (empty when it conforms)."""
    problems = [f"undocumented field {k}" for k in body if k not in DOCUMENTED]
    contacts = [body.get(k) for k in ("email", "mobile_number")]
    if not any(isinstance(v, str) and v.strip() for v in contacts):
        problems.append("needs a non-blank email or mobile_number")
    for field, allowed in ENUMS.items():
        if field in body and not (isinstance(body[field], list) and set(body[field]) <= allowed):
            problems.append(f"{field} outside {sorted(allowed)}")
    if "update_existing" in body and not isinstance(body["update_existing"], bool):
        problems.append("update_existing not a boolean")
    for key, value in (body.get("attributes") or {}).items():
        if not ATTRIBUTE_KEY.fullmatch(key):
            problems.append(f"attribute key {key!r} not lowercase snake_case")
        if value is not None and not isinstance(value, str):
            problems.append(f"attribute {key} is not a string or null")
    dob = (body.get("attributes") or {}).get("date_of_birth")
    if dob is not None and not DOB.fullmatch(dob):
        problems.append(f"date_of_birth {dob!r} in no documented format")
    return problems


def mapped_customer() -> dict:
    """A row as the SQL mapping selects it, through the real operator's payload builder."""
    row = {
        "_key": "42",
        "_deleted": False,
        "_list": "customers-uk",
        "_email_or_mobile": "zoe@example.com+447700900123",
        "email": "zoe@example.com",
        "mobile_number": "+447700900123",
        "types__json": '["MARKETING","TRANSACTIONAL"]',
        "channels__json": '["EMAIL","SMS"]',
        "attributes__name": "Zoë Ünal",
        "attributes__date_of_birth": dt.date(1994, 9, 4),
        "attributes__city": "Leeds",
        "attributes__loyalty_points": "120",
    }
    op = SalesfireCustomersOperator(task_id="t", manifest={}, vendor_conn_id=CONN)
    return op.build_payload(row, {})


def test_signature_recomputed_by_openssl_over_the_exact_bytes(hook, sandbox):
    h, sent = hook()
    planned = mapped_customer()
    h.post_customer(planned["list"], planned["customer"])
    (request,) = sent
    body = request.body if isinstance(request.body, bytes) else request.body.encode("utf-8")
    assert request.method == "POST" and request.url == f"{sandbox.url}/client/{SITE}/customers/customers-uk"
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["X-Signature"] == openssl_hmac(LISTS["customers-uk"], body)
    assert request.headers["X-Signature"] != openssl_hmac(LISTS["customers-eu"], body)  # keyed per list
    assert "Zoë".encode() in body  # UTF-8 bytes, not \u escapes: the signature covers what is sent
    customer = json.loads(body)
    assert check_documented(customer) == []
    assert customer["update_existing"] is False  # the connection's default, not the SQL's
    assert customer["attributes"]["date_of_birth"] == "1994-09-04"
    assert sandbox.customer(SITE, "customers-uk", "zoe@example.com")["attributes"]["name"] == "Zoë Ünal"


def test_the_independent_checks_catch_what_they_claim():
    """The checks above are not vacuous: each flags a payload that breaks its rule."""
    # RFC 4231 test case 2: the openssl call itself computes HMAC-SHA-256.
    expected = "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    assert openssl_hmac("Jefe", b"what do ya want for nothing?") == expected
    assert openssl_hmac("k", b"{}") != openssl_hmac("k", b"{} ")
    assert check_documented({"email": "   "}) == ["needs a non-blank email or mobile_number"]
    assert check_documented({"email": "a@b.co", "types": ["marketing"]}) == [
        "types outside ['MARKETING', 'TRANSACTIONAL']"
    ]
    assert check_documented({"email": "a@b.co", "product_id": "1"}) == ["undocumented field product_id"]
    assert check_documented({"email": "a@b.co", "attributes": {"date_of_birth": "1994.09.04"}})
    assert check_documented({"email": "a@b.co", "attributes": {"Loyalty": "1", "n": 2}}) == [
        "attribute key 'Loyalty' not lowercase snake_case",
        "attribute n is not a string or null",
    ]


def test_update_existing_is_per_list(hook):
    h, _ = hook(update_existing={"customers-eu": True})
    assert h.update_existing("customers-uk") is False and h.update_existing("customers-eu") is True
    assert json.loads(h.body("customers-eu", {"email": "a@example.com"}))["update_existing"] is True
    h, _ = hook(update_existing=True)
    assert h.update_existing("customers-uk") is True
    h, _ = hook(update_existing="maybe")
    with pytest.raises(Exception, match="update_existing"):
        h.update_existing("customers-uk")


def test_old_client_true_for_everyone_leaves_a_changed_customer_stale(hook, sandbox):
    """Sandbox default = the page's words: true skips the existing profile."""
    old, _ = hook(update_existing=True)  # what the old SQL sent for every customer
    old.post_customer("customers-uk", {"email": "c@example.com", "attributes": {"name": "Old Name"}})
    old.post_customer("customers-uk", {"email": "c@example.com", "attributes": {"name": "New Name"}})
    stored = sandbox.customer(SITE, "customers-uk", "c@example.com")
    assert stored["attributes"]["name"] == "Old Name"  # the change never arrived
    assert (stored["_posts"], stored["_updates"], stored["_skipped"]) == (2, 0, 1)


def test_new_default_updates_the_changed_customer(hook, sandbox):
    new, sent = hook()
    new.post_customer("customers-uk", {"email": "c@example.com", "attributes": {"name": "Old Name"}})
    new.post_customer("customers-uk", {"email": "c@example.com", "attributes": {"name": "New Name"}})
    stored = sandbox.customer(SITE, "customers-uk", "c@example.com")
    assert stored["attributes"]["name"] == "New Name"
    assert (stored["_posts"], stored["_updates"], stored["_skipped"]) == (2, 1, 0)
    assert all(json.loads(r.body)["update_existing"] is False for r in sent)


def test_the_other_reading_is_a_switch_away(hook, sandbox):
    """If an account turns out to behave the other way, the sandbox option and the extra both flip."""
    sandbox.configure(update_semantics="true_updates")
    h, _ = hook(update_existing={"customers-uk": True})
    h.post_customer("customers-uk", {"email": "c@example.com", "attributes": {"name": "Old Name"}})
    h.post_customer("customers-uk", {"email": "c@example.com", "attributes": {"name": "New Name"}})
    assert sandbox.customer(SITE, "customers-uk", "c@example.com")["attributes"]["name"] == "New Name"


@pytest.mark.parametrize(
    ("customer", "field"),
    [
        ({"email": "   "}, "email"),
        ({"mobile_number": "  "}, "mobile_number"),
        ({"email": "a@example.com", "types": ["marketing"]}, "types.0"),
        ({"email": "a@example.com", "channels": ["PUSH"]}, "channels.0"),
        ({"email": "a@example.com", "attributes": {"date_of_birth": "0001/1/1"}}, "attributes.date_of_birth"),
        ({"email": "a@example.com", "attributes": {"loyalty_points": 120}}, "attributes.loyalty_points"),
        ({"email": "a@example.com", "customer_id": "42"}, "customer_id"),
    ],
)
def test_sandbox_refuses_what_the_page_forbids(hook, sandbox, customer, field):
    from reverse_etl.errors import VendorRejected

    h, _ = hook()
    with pytest.raises(VendorRejected, match=re.escape(field)):
        h.post_customer("customers-uk", customer)
    assert all(c == {} for c in sandbox.store.values())
