"""Contract tests for the Salesfire sandbox: real HTTP against the documented customer-sync contract.

Why: the pipeline's Salesfire client is tested against this sandbox, so the sandbox must keep to what
Salesfire documents (signature over the exact body bytes with the list's secret, the field rules, one
customer per request, upserts into the list) and to the defaults we chose where the docs say nothing,
or those client tests prove nothing.  Source: docs/destinations/salesfire.md.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from sandbox.salesfire import DOB_EXAMPLES, DOB_FORMATS, SalesfireSandbox, sign

pytestmark = pytest.mark.serial  # clock-checked pacing: run alone (make test's second call)

REPO = Path(__file__).resolve().parents[2]
LISTS = {("site-1", "list-a"): "secret-a", ("site-1", "list-b"): "secret-b", ("site-2", "list-a"): "s2"}
PATH_A = "/client/site-1/customers/list-a"
PATH_B = "/client/site-1/customers/list-b"
DEFAULTS = {
    "signature_encoding": "hex",
    "accept_uppercase_hex": False,
    "auth_failure_status": 401,
    "validation_status": 422,
    "array_body_status": 422,
    "require_json_content_type": True,
    "unknown_fields": "reject",
    "mobile_number_pattern": None,
    "allowed_attributes": None,
    "date_of_birth_formats": list(DOB_FORMATS),
    "email_key_case_insensitive": True,
    "update_semantics": "documented",
    "update_existing_default": False,
    "success_status": 200,
    "success_body": {"success": True},
}


@pytest.fixture(scope="module")
def sb():
    with SalesfireSandbox(port=0, lists=LISTS) as sandbox:
        yield sandbox


@pytest.fixture(autouse=True)
def fresh(sb):
    sb.reset()
    sb.configure(unlimited=True, window_seconds=60, lists={f"{s}/{lst}": k for (s, lst), k in LISTS.items()})
    sb.configure(**DEFAULTS)
    yield


def raw(customer) -> bytes:
    return json.dumps(customer, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def post(sb, customer, *, path=PATH_A, secret="secret-a", body=None, signature=None, headers=None):
    """POST a customer the way a correct client does: serialise once, sign those bytes, send them."""
    data = raw(customer) if body is None else body
    hdrs = {"Content-Type": "application/json", "X-Signature": signature or sign(secret, data)}
    hdrs.update(headers or {})
    hdrs = {k: v for k, v in hdrs.items() if v is not None}
    return requests.post(sb.url + path, data=data, headers=hdrs, timeout=10)


def assert_validation(resp, *fields, status=422):
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert body["message"] == "The given data was invalid."
    assert set(fields) <= set(body["errors"]), body["errors"]
    assert all(
        isinstance(m, list) and m and all(isinstance(x, str) for x in m) for m in body["errors"].values()
    )
    return body["errors"]


def stored_nothing(sb):
    return all(customers == {} for customers in sb.store.values())


# ------------------------------------------------------------------------------------------ signature
def test_signed_request_accepted_and_stored(sb):
    customer = {
        "email": "Ann@Example.com",
        "mobile_number": "123456789",
        "types": ["MARKETING", "TRANSACTIONAL"],
        "channels": ["EMAIL", "SMS"],
        "update_existing": True,
        "attributes": {"name": "Ann Ó", "date_of_birth": "04-09-1994", "loyalty_tier_2": None},
    }
    body = raw(customer)
    expected = hmac.new(b"secret-a", body, hashlib.sha256).hexdigest()
    assert sign("secret-a", body) == expected and expected == expected.lower()
    resp = post(sb, customer, signature=expected)
    assert resp.status_code == 200 and resp.json() == {"success": True}
    assert resp.headers["Content-Type"].startswith("application/json")
    assert not any(h.lower().startswith("x-ratelimit") for h in resp.headers)  # no limit documented
    stored = sb.store["site-1/list-a"]["ann@example.com"]  # email key, case-insensitive by default
    assert stored == {
        "email": "Ann@Example.com",
        "mobile_number": "123456789",
        "types": ["MARKETING", "TRANSACTIONAL"],
        "channels": ["EMAIL", "SMS"],
        "attributes": {"name": "Ann Ó", "date_of_birth": "04-09-1994", "loyalty_tier_2": None},
        "_posts": 1,
        "_updates": 0,
        "_skipped": 0,
    }
    assert sb.store["site-1/list-b"] == {} and sb.customer("site-1", "list-a", "ANN@example.com") == stored


def test_signature_is_over_the_exact_bytes_received(sb):
    # Unusual but valid JSON bytes: spaces, newlines, escaped unicode, odd key order. Signed as sent.
    body = b'{ "attributes" : {"name": "Z\\u00f6e"},\n  "email":"zoe@example.com" }'
    assert post(sb, None, body=body).status_code == 200
    assert sb.store["site-1/list-a"]["zoe@example.com"]["attributes"] == {"name": "Zöe"}


@pytest.mark.parametrize(
    "case",
    ["wrong_secret", "reserialised", "missing", "empty", "uppercase", "base64", "prefixed", "truncated"],
)
def test_bad_signature_refused(sb, case):
    customer = {"email": "eve@example.com"}
    body = raw(customer)
    good = sign("secret-a", body)
    signature = {
        "wrong_secret": sign("secret-x", body),
        # client signed its compact serialisation but sent json.dumps' default ", " / ": " spacing
        "reserialised": good,
        "missing": None,
        "empty": "",
        "uppercase": good.upper(),
        "base64": sign("secret-a", body, "base64"),
        "prefixed": "sha256=" + good,
        "truncated": good[:-2],
    }[case]
    sent = json.dumps(customer).encode() if case == "reserialised" else body
    assert sent != body or case != "reserialised"
    hdrs = {"Content-Type": "application/json"}
    if signature is not None:
        hdrs["X-Signature"] = signature
    resp = requests.post(sb.url + PATH_A, data=sent, headers=hdrs, timeout=10)
    assert resp.status_code == 401, resp.text
    assert resp.json()["message"] in ("Missing signature.", "Invalid signature.")
    assert set(resp.json()) == {"message"}
    assert stored_nothing(sb) and sb.stats()["signature_failures"] == 1
    assert sb.stats()["accepted_by_limiter"] == 0  # refused before the limiter


def test_secret_of_one_list_does_not_open_another(sb):
    customer = {"email": "x@example.com"}
    assert post(sb, customer, path=PATH_B, secret="secret-a").status_code == 401
    assert post(sb, customer, path="/client/site-2/customers/list-a", secret="secret-a").status_code == 401
    assert post(sb, customer, path=PATH_B, secret="secret-b").status_code == 200
    assert list(sb.store["site-1/list-b"]) == ["x@example.com"] and sb.store["site-1/list-a"] == {}


def test_signature_options(sb):
    customer = {"email": "opt@example.com"}
    body = raw(customer)
    sb.configure(accept_uppercase_hex=True)
    assert post(sb, customer, signature=sign("secret-a", body).upper()).status_code == 200
    sb.configure(accept_uppercase_hex=False, signature_encoding="base64")
    b64 = sign("secret-a", body, "base64")
    assert b64 == base64.b64encode(hmac.new(b"secret-a", body, hashlib.sha256).digest()).decode()
    assert post(sb, customer, signature=b64).status_code == 200
    assert post(sb, customer, signature=sign("secret-a", body)).status_code == 401  # hex now refused
    sb.configure(signature_encoding="hex", auth_failure_status=403)
    resp = post(sb, customer, signature=b64)
    assert resp.status_code == 403 and resp.json() == {"message": "Invalid signature."}
    with pytest.raises(ValueError):
        sb.configure(signature_encoding="HEX")
    with pytest.raises(ValueError):
        SalesfireSandbox(signature_encoding="base32")


# ----------------------------------------------------------------------------------------- validation
OK = "ok@example.com"


@pytest.mark.parametrize(
    ("customer", "fields"),
    [
        ({}, ["email", "mobile_number"]),
        ({"types": ["MARKETING"]}, ["email", "mobile_number"]),
        ({"email": "not-an-email"}, ["email"]),
        ({"email": "a@b"}, ["email"]),
        ({"email": "two@@example.com"}, ["email"]),
        ({"email": ""}, ["email"]),
        ({"email": None, "mobile_number": "123"}, ["email"]),
        ({"email": 42}, ["email"]),
        ({"mobile_number": 123456789}, ["mobile_number"]),
        ({"mobile_number": ""}, ["mobile_number"]),
        ({"email": OK, "types": "MARKETING"}, ["types"]),
        ({"email": OK, "types": ["marketing"]}, ["types.0"]),
        ({"email": OK, "types": ["MARKETING", "PROMO"]}, ["types.1"]),
        ({"email": OK, "types": None}, ["types"]),
        ({"email": OK, "channels": ["email"]}, ["channels.0"]),
        ({"email": OK, "channels": ["EMAIL", "Sms"]}, ["channels.1"]),
        ({"email": OK, "channels": ["PUSH"]}, ["channels.0"]),
        ({"email": OK, "channels": "SMS"}, ["channels"]),
        ({"email": OK, "update_existing": "true"}, ["update_existing"]),
        ({"email": OK, "update_existing": 1}, ["update_existing"]),
        ({"email": OK, "attributes": [["name", "x"]]}, ["attributes"]),
        ({"email": OK, "attributes": "name=x"}, ["attributes"]),
        ({"email": OK, "attributes": {"DateOfBirth": "04-09-1994"}}, ["attributes.DateOfBirth"]),
        ({"email": OK, "attributes": {"firstName": "x"}}, ["attributes.firstName"]),
        ({"email": OK, "attributes": {"first-name": "x"}}, ["attributes.first-name"]),
        ({"email": OK, "attributes": {"1st_visit": "x"}}, ["attributes.1st_visit"]),
        ({"email": OK, "attributes": {"_name": "x"}}, ["attributes._name"]),
        ({"email": OK, "attributes": {"age": 30}}, ["attributes.age"]),
        ({"email": OK, "attributes": {"vip": True}}, ["attributes.vip"]),
        ({"email": OK, "attributes": {"tags": ["a"]}}, ["attributes.tags"]),
        ({"email": OK, "attributes": {"date_of_birth": "1994.09.04"}}, ["attributes.date_of_birth"]),
    ],
)
def test_validation_rules(sb, customer, fields):
    errors = assert_validation(post(sb, customer), *fields)
    assert set(errors) == set(fields)
    assert stored_nothing(sb) and sb.stats()["validation_failures"] == 1


def test_all_errors_reported_at_once(sb):
    customer = {
        "email": "nope",
        "types": ["marketing"],
        "channels": ["sms"],
        "update_existing": "yes",
        "attributes": {"DateOfBirth": "x", "date_of_birth": "1994.09.04"},
    }
    errors = assert_validation(post(sb, customer))
    assert set(errors) == {
        "email",
        "types.0",
        "channels.0",
        "update_existing",
        "attributes.DateOfBirth",
        "attributes.date_of_birth",
    }
    assert errors["email"] == ["The email field must be a valid email address."]


def test_documented_date_of_birth_formats(sb):
    for i, dob in enumerate((*DOB_EXAMPLES, "14-12-94", "29-02-2000", "31/12/1999", None)):
        resp = post(sb, {"email": f"dob{i}@example.com", "attributes": {"date_of_birth": dob}})
        assert resp.status_code == 200, (dob, resp.text)
    assert len(sb.store["site-1/list-a"]) == len(DOB_EXAMPLES) + 4


@pytest.mark.parametrize(
    "dob",
    [
        *("1994.09.04", "31-02-1994", "29-02-1993", "04-09-94", "4-9-1994", "1994-9-4", "04-09/1994"),
        *("4091994", "", " 04-09-1994", "04 09 1994", "1994-13-04", "32/01/1994", "Sept 4 1994"),
        "1994-09-04T00:00:00",
    ],
)
def test_other_date_of_birth_formats_refused(sb, dob):
    assert_validation(
        post(sb, {"email": OK, "attributes": {"date_of_birth": dob}}), "attributes.date_of_birth"
    )


def test_date_of_birth_formats_option(sb):
    sb.configure(date_of_birth_formats=["D-M-YYYY"])
    assert post(sb, {"email": OK, "attributes": {"date_of_birth": "4-9-1994"}}).status_code == 200
    assert post(sb, {"email": OK, "attributes": {"date_of_birth": "1994-09-04"}}).status_code == 422
    with pytest.raises(ValueError):
        sb.configure(date_of_birth_formats=["DD-MM"])


def test_validation_options(sb):
    sb.configure(validation_status=400)
    assert_validation(post(sb, {"email": "bad"}), "email", status=400)
    sb.configure(validation_status=422, mobile_number_pattern=r"\+?[0-9]{6,15}")
    assert_validation(post(sb, {"mobile_number": "12-34"}), "mobile_number")
    assert post(sb, {"mobile_number": "+447700900123"}).status_code == 200
    sb.configure(allowed_attributes=["name", "date_of_birth"])
    assert_validation(post(sb, {"email": OK, "attributes": {"shoe_size": "9"}}), "attributes.shoe_size")
    assert post(sb, {"email": OK, "attributes": {"name": "Ok"}}).status_code == 200


def test_unknown_top_level_fields(sb):
    # Default: only the documented fields (a client sending others is refused, naming them).
    assert_validation(post(sb, {"email": OK, "favourite_colour": "blue"}), "favourite_colour")
    assert_validation(post(sb, {"email": OK, "Types": ["MARKETING"]}), "Types")
    assert stored_nothing(sb)
    sb.configure(unknown_fields="ignore")
    assert post(sb, {"email": OK, "favourite_colour": "blue", "Types": 1}).status_code == 200
    assert "favourite_colour" not in sb.store["site-1/list-a"][OK]  # accepted and ignored


# ------------------------------------------------------------------------------ body / routing errors
def test_array_body_refused(sb):
    body = raw([{"email": "a1@example.com"}, {"email": "a2@example.com"}])
    errors = assert_validation(post(sb, None, body=body), "body")
    assert "one customer per request" in errors["body"][0].lower()
    assert stored_nothing(sb)
    sb.configure(array_body_status=400)
    assert_validation(post(sb, None, body=raw([{"email": OK}])), "body", status=400)
    assert_validation(post(sb, None, body=b'"ok@example.com"'), "body")  # a scalar is no customer either


def test_transport_errors(sb):
    assert post(sb, None, body=b'{"email": ').status_code == 400  # malformed JSON, correctly signed
    assert post(sb, None, body=b"").status_code == 400
    form = post(sb, None, body=b"email=ok%40example.com", headers={"Content-Type": "text/plain"})
    assert form.status_code == 415
    sb.configure(require_json_content_type=False)
    assert post(sb, None, body=raw({"email": OK}), headers={"Content-Type": None}).status_code == 200
    assert stored_nothing(sb) is False


def test_unknown_site_or_list_and_other_paths(sb):
    for path in ("/client/site-1/customers/list-z", "/client/site-9/customers/list-a"):
        resp = post(sb, {"email": OK}, path=path, secret="secret-a")
        assert resp.status_code == 404 and set(resp.json()) == {"message"}
    assert post(sb, {"email": OK}, path="/client/site-1/lists/list-a").status_code == 404
    get = requests.get(sb.url + PATH_A, timeout=10)
    assert get.status_code == 405 and get.headers["Allow"] == "POST"
    sb.add_list("site-9", "list-a", "nine")
    assert post(sb, {"email": OK}, path="/client/site-9/customers/list-a", secret="nine").status_code == 200
    assert sb.stats()["accepted_by_limiter"] == 1  # 404/405 used no slot


# --------------------------------------------------------------------------------------------- upserts
def test_update_existing_semantics(sb):
    """Default = the page's words: with update_existing true "the system will skip duplicates"."""
    first = {"email": "u@example.com", "types": ["MARKETING"], "attributes": {"name": "Old", "city": "Leeds"}}
    assert post(sb, first).status_code == 200
    same_key = {"email": "U@example.com", "types": ["TRANSACTIONAL"], "attributes": {"name": "New"}}
    sb.configure(update_existing_default=True)  # absent taken as true here, to show both ways to skip
    for flag in (True, None):  # true (or absent = true): existing profile left unchanged, a skipped duplicate
        body = same_key if flag is None else {**same_key, "update_existing": flag}
        resp = post(sb, body)
        assert resp.status_code == 200 and resp.json() == {"success": True}
    stored = sb.store["site-1/list-a"]["u@example.com"]
    assert stored["types"] == ["MARKETING"] and stored["attributes"] == {"name": "Old", "city": "Leeds"}
    assert (stored["_posts"], stored["_updates"], stored["_skipped"]) == (3, 0, 2)
    assert post(sb, {**same_key, "update_existing": False, "mobile_number": "0777"}).status_code == 200
    stored = sb.store["site-1/list-a"]["u@example.com"]
    assert stored["email"] == "U@example.com" and stored["types"] == ["TRANSACTIONAL"]
    assert stored["mobile_number"] == "0777"
    assert stored["attributes"] == {"name": "New", "city": "Leeds"}  # attributes merged key by key
    assert (stored["_posts"], stored["_updates"], stored["_skipped"]) == (4, 1, 2)
    stats = sb.stats()
    assert (stats["customers_created"], stats["customers_updated"], stats["skipped_duplicates"]) == (1, 1, 2)


@pytest.mark.parametrize(
    ("semantics", "default", "flag", "updated"),
    [
        ("always", False, True, True),
        ("never", False, False, False),
        ("documented", False, None, True),
        ("documented", True, None, False),
        ("documented", False, True, False),
        ("documented", False, False, True),
        ("true_updates", False, True, True),
        ("true_updates", False, False, False),
        ("true_updates", True, None, True),
    ],
)
def test_update_semantics_options(sb, semantics, default, flag, updated):
    sb.configure(update_semantics=semantics, update_existing_default=default)
    assert post(sb, {"email": OK, "attributes": {"name": "A"}}).status_code == 200
    second = {"email": OK, "attributes": {"name": "B"}}
    if flag is not None:
        second["update_existing"] = flag
    assert post(sb, second).status_code == 200
    assert sb.store["site-1/list-a"][OK]["attributes"]["name"] == ("B" if updated else "A")


def test_upsert_keys(sb):
    assert post(sb, {"mobile_number": "123456789"}).status_code == 200
    assert post(sb, {"mobile_number": "123456789", "update_existing": True}).status_code == 200
    assert post(sb, {"email": "Case@Example.com"}).status_code == 200
    assert post(sb, {"email": "case@example.COM"}).status_code == 200
    assert post(sb, {"email": "Case@Example.com"}, path=PATH_B, secret="secret-b").status_code == 200
    counts = sb.post_counts()
    assert counts["site-1/list-a"] == {"123456789": 2, "case@example.com": 2}
    assert counts["site-1/list-b"] == {"case@example.com": 1}  # lists are separate
    sb.configure(email_key_case_insensitive=False)
    sb.reset()
    post(sb, {"email": "Case@Example.com"})
    post(sb, {"email": "case@example.com"})
    assert sb.post_counts()["site-1/list-a"] == {"Case@Example.com": 1, "case@example.com": 1}


def test_exactly_once_counters_under_concurrency(sb):
    customers = [{"email": f"c{i}@example.com", "attributes": {"n": str(i)}} for i in range(40)]
    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(lambda c: post(sb, c).status_code, customers))
    assert statuses == [200] * 40
    counts = sb.post_counts()["site-1/list-a"]
    assert len(counts) == 40 and set(counts.values()) == {1}
    post(sb, customers[0])
    assert sb.post_counts()["site-1/list-a"]["c0@example.com"] == 2  # a duplicate delivery shows


def test_success_response_options(sb):
    sb.configure(success_status=202, success_body={"status": "queued"})
    resp = post(sb, {"email": OK})
    assert resp.status_code == 202 and resp.json() == {"status": "queued"}
    sb.configure(success_status=204)
    resp = post(sb, {"email": OK})
    assert resp.status_code == 204 and resp.content == b""


# ---------------------------------------------------------------------------------------- rate limit
def test_rate_limit_when_configured(sb):
    cfg = sb.configure(limit=3, window_seconds=1)
    assert cfg["limit"] == 3 and cfg["window_seconds"] == 1
    responses = [post(sb, {"email": f"r{i}@example.com"}) for i in range(4)]
    assert [r.status_code for r in responses] == [200, 200, 200, 429]
    assert [r.headers["X-RateLimit-Remaining"] for r in responses] == ["2", "1", "0", "0"]
    assert all(r.headers["X-RateLimit-Limit"] == "3" for r in responses)
    throttled = responses[-1]
    assert throttled.json() == {"message": "Too Many Attempts."}
    assert 1 <= int(throttled.headers["Retry-After"]) <= 1
    assert abs(int(throttled.headers["X-RateLimit-Reset"]) - time.time()) <= 2
    assert "r3@example.com" not in sb.store["site-1/list-a"]  # a 429 stores nothing
    time.sleep(float(throttled.headers["Retry-After"]) + 0.05)
    assert post(sb, {"email": "r3@example.com"}).status_code == 200
    assert sb.max_in_window() <= 3 and sb.stats()["throttled_by_limiter"] == 1
    cfg = sb.configure(unlimited=True)
    assert cfg["limit"] is None and sb.stats()["limit"] is None
    assert all(post(sb, {"email": f"u{i}@example.com"}).status_code == 200 for i in range(5))
    with pytest.raises(ValueError):
        sb.configure(limit=0)
    assert sb.unlimited


def test_unlimited_by_default():
    with SalesfireSandbox(port=0, lists={"s/l": "k"}) as other:
        assert other.unlimited and other.stats()["limit"] is None
        body = raw({"email": OK})
        hdrs = {"Content-Type": "application/json", "X-Signature": sign("k", body)}
        codes = {requests.post(other.url + "/client/s/customers/l", data=body, headers=hdrs).status_code}
        for _ in range(30):
            codes.add(requests.post(other.url + "/client/s/customers/l", data=body, headers=hdrs).status_code)
        assert codes == {200} and other.post_counts() == {"s/l": {OK: 31}}
    with SalesfireSandbox(port=0, limit=5, window_seconds=2) as limited:
        assert not limited.unlimited and limited.stats()["limit"] == 5


# --------------------------------------------------------------------------------------------- faults
def test_fault_status(sb):
    sb.inject("status", status=503, count=2, skip=1, path_prefix="/client/site-1/customers/list-a")
    codes = [post(sb, {"email": f"f{i}@example.com"}).status_code for i in range(4)]
    assert codes == [200, 503, 503, 200]
    assert set(sb.store["site-1/list-a"]) == {"f0@example.com", "f3@example.com"}
    assert [r["fault"] for r in sb.requests] == [None, "status", "status", None]
    sb.inject("status", status=500)
    resp = post(sb, {"email": OK})
    assert resp.status_code == 500 and resp.json() == {"message": "Internal Server Error"}


def test_fault_drop(sb):
    sb.inject("drop", method="POST")
    with pytest.raises(requests.ConnectionError):
        post(sb, {"email": "d@example.com"})
    assert post(sb, {"email": "d@example.com"}).status_code == 200
    dropped = sb.requests[0]
    assert (
        dropped["fault"] == "drop"
        and dropped["status"] is None
        and dropped["body"] == {"email": "d@example.com"}
    )
    assert sb.post_counts()["site-1/list-a"] == {"d@example.com": 1}


def test_fault_slow(sb):
    sb.inject("slow", delay=0.3)
    t0 = time.monotonic()
    assert post(sb, {"email": "slow@example.com"}).status_code == 200
    assert time.monotonic() - t0 >= 0.3
    sb.inject("slow", delay=0.5)
    data = raw({"email": "late@example.com"})
    hdrs = {"Content-Type": "application/json", "X-Signature": sign("secret-a", data)}
    with pytest.raises(requests.Timeout):
        requests.post(sb.url + PATH_A, data=data, headers=hdrs, timeout=0.1)
    time.sleep(0.5)  # the slow request is still processed server-side: the client must not assume it failed
    assert sb.post_counts()["site-1/list-a"] == {"slow@example.com": 1, "late@example.com": 1}


def test_fault_throttle(sb):
    resp = requests.post(sb.url + "/_sandbox/faults", json={"kind": "throttle", "retry_after": 7})
    assert resp.status_code == 200 and resp.json()["rules"][0]["kind"] == "throttle"
    throttled = post(sb, {"email": OK})
    assert throttled.status_code == 429 and throttled.headers["Retry-After"] == "7"
    assert throttled.json() == {"message": "Too Many Attempts."}
    assert post(sb, {"email": OK}).status_code == 200
    stats = sb.stats()
    assert stats["throttled_by_fault"] == 1 and stats["throttled_by_limiter"] == 0
    assert stats["faults_fired"] == {"throttle": 1} and sb.post_counts()["site-1/list-a"] == {OK: 1}


def test_faults_over_http(sb):
    ctl = sb.url + "/_sandbox/faults"
    resp = requests.post(ctl, json={"rules": [{"kind": "status", "status": 502}, {"kind": "drop"}]})
    assert len(resp.json()["rules"]) == 2
    assert post(sb, {"email": OK}).status_code == 502
    assert len(requests.get(ctl).json()["rules"]) == 1
    requests.delete(ctl)
    assert requests.get(ctl).json() == {"rules": [], "item_errors": []}
    assert requests.post(ctl, json={"kind": "explode"}).status_code == 400
    assert post(sb, {"email": OK}).status_code == 200


# ------------------------------------------------------------------------------------------- readback
def test_readback_endpoints(sb):
    post(sb, {"email": "rb@example.com"})
    post(sb, {"email": "rb@example.com"}, secret="wrong")
    store = requests.get(sb.url + "/_sandbox/store").json()
    assert set(store) == {"site-1/list-a", "site-1/list-b", "site-2/list-a"}
    assert store["site-1/list-a"] == {
        "rb@example.com": {"email": "rb@example.com", "_posts": 1, "_updates": 0, "_skipped": 0}
    }
    recorded = requests.get(sb.url + "/_sandbox/requests").json()
    assert [r["status"] for r in recorded] == [200, 401]
    first = recorded[0]
    assert (
        first["method"] == "POST" and first["path"] == PATH_A and first["body"] == {"email": "rb@example.com"}
    )
    stats = requests.get(sb.url + "/_sandbox/stats").json()
    assert stats["requests_total"] == 2 and stats["status_counts"] == {"200": 1, "401": 1}
    assert stats["store_counts"]["site-1/list-a"] == 1 and stats["signature_failures"] == 1
    config = requests.get(sb.url + "/_sandbox/config").json()
    assert config["limit"] is None and {k: config[k] for k in DEFAULTS} == DEFAULTS
    assert config["lists"] == ["site-1/list-a", "site-1/list-b", "site-2/list-a"]
    cfg = requests.post(
        sb.url + "/_sandbox/config", json={"limit": 3, "window_seconds": 2, "update_semantics": "always"}
    )
    assert cfg.status_code == 200 and cfg.json()["limit"] == 3 and sb.update_semantics == "always"
    assert requests.post(sb.url + "/_sandbox/config", json={"bogus": 1}).status_code == 400
    assert requests.post(sb.url + "/_sandbox/config", json={"validation_status": 200}).status_code == 400
    cfg = requests.post(sb.url + "/_sandbox/config", json={"unlimited": True, "lists": {"s/l": "k"}}).json()
    assert cfg["limit"] is None and cfg["lists"] == ["s/l"]
    reset = requests.post(sb.url + "/_sandbox/reset", json={})
    assert reset.status_code == 200 and reset.json()["reset"] is True
    assert sb.requests == [] and sb.store == {"s/l": {}} and sb.stats()["requests_total"] == 0


# ------------------------------------------------------------------------------------------------ CLI
def test_cli_runs_until_sigterm():
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "sandbox.salesfire", "--port", "0"]
    cmd += ["--list", "site-1/list-a=secret-a", "--list", "site-1/list-b=secret-b", "--limit", "5"]
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert "site-1/list-a=secret-a" in line and "site-1/list-b=secret-b" in line
        url = next(tok for tok in line.split() if tok.startswith("http://"))
        body = raw({"email": OK})
        hdrs = {"Content-Type": "application/json", "X-Signature": sign("secret-b", body)}
        resp = requests.post(url + PATH_B, data=body, headers=hdrs, timeout=10)
        assert resp.status_code == 200 and resp.headers["X-RateLimit-Limit"] == "5"
        assert requests.get(url + "/_sandbox/store").json()["site-1/list-b"][OK]["_posts"] == 1
    finally:
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    assert err == ""
    bad = subprocess.run(
        [*cmd[:5], "--list", "no-slash=secret"], cwd=REPO, env=env, capture_output=True, text=True, timeout=30
    )
    assert bad.returncode != 0 and "SITE/LIST=SECRET" in bad.stderr
