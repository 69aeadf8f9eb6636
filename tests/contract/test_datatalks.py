"""The Data Talks sandbox checks SigV4 for real, and DataTalksHook passes it; errors read well.

The hook's signatures are also checked by botocore (AWS's own SigV4 signer) over the very bytes the hook
sends, and the bodies against the fields the Data Talks integration page documents. The old payloads
(products with ``product_id`` and no ``id``, the price as text in ``detail2``, ``DELETE /v1/contacts``)
are refused by the sandbox; the fixed ones pass.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
from unittest import mock

import pytest
import requests
from requests.adapters import BaseAdapter

from reverse_etl.errors import VendorAuthError, VendorRejected
from reverse_etl.hooks.datatalks import DELETE_CONTACT_URL, DataTalksHook
from sandbox.datatalks import (
    ACCESS_KEY,
    AUTH_RE,
    CONTACT_FIELDS,
    DELETE_PATH,
    GROUP_KEY,
    PRODUCT_FIELDS,
    PRODUCT_REQUIRED,
    REGION,
    SECRET_KEY,
    DataTalksSandbox,
    canonical_request,
    signing_key,
)
from sandbox.env import conn_json

PRODUCT = {  # a documented product item, as the mapping now builds it
    "id": "P000001",
    "name": "Linen shirt - blue",
    "description": "A linen shirt.",
    "category": "Apparel",
    "sub_category": "Shirts",
    "brand": "Acme",
    "url": "https://shop.example.com/p/P000001",
    "image_url": "https://shop.example.com/i/P000001.jpg",
    "color": "blue",
    "season": "SS26",
    "detail1": "ACM-1234ABCD",
    "price": 49.9,
    "stock_available": 12,
}
OLD_PRODUCT = {  # what the mapping sent before: product_id and no id, the price as text in detail2
    **{k: v for k, v in PRODUCT.items() if k not in ("id", "price", "stock_available")},
    "product_id": "P000001",
    "detail2": "49.9",
}


@pytest.fixture
def sandbox():
    with DataTalksSandbox(port=0, limit=5, window_seconds=2.0) as sb:
        yield sb


def wire(monkeypatch, tmp_path, sb, **extra) -> DataTalksHook:
    fields = {
        "login": ACCESS_KEY,
        "password": SECRET_KEY,
        **{k: extra.pop(k) for k in ("login", "password") if k in extra},
    }
    monkeypatch.setenv(
        "AIRFLOW_CONN_SALESMANAGO_DEFAULT",
        conn_json(
            "http",
            host=sb.url,
            **fields,
            extra={
                "group_key": GROUP_KEY,
                "delete_contact_url": sb.url + DELETE_PATH,
                "backoff_base_seconds": 0.05,
                **extra,
            },
        ),
    )
    monkeypatch.setenv("RETL_RATE_LIMIT_URL", f"sqlite:///{tmp_path / 'rl.sqlite'}")
    return DataTalksHook()


def signed(
    sb,
    body: dict,
    *,
    when: dt.datetime | None = None,
    secret: str = SECRET_KEY,
    region: str = REGION,
    path: str = "/v1/contacts",
    method: str = "POST",
):
    """A request signed by hand, by the AWS rules, at a chosen time (now by default)."""
    raw = json.dumps(body).encode()
    amz = (when or dt.datetime.now(dt.UTC)).strftime("%Y%m%dT%H%M%SZ")
    host = sb.url.removeprefix("http://")
    headers = {"host": host, "x-amz-date": amz, "content-type": "application/json"}
    names = sorted(headers)
    canonical = canonical_request(method, path, {}, headers, names, raw)
    scope = f"{amz[:8]}/{region}/execute-api/aws4_request"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", amz, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    signature = hmac.new(signing_key(secret, amz[:8], region), to_sign.encode(), hashlib.sha256).hexdigest()
    auth = f"AWS4-HMAC-SHA256 Credential={ACCESS_KEY}/{scope}, SignedHeaders={';'.join(names)}, Signature={signature}"
    return requests.request(
        method, sb.url + path, data=raw, headers={**headers, "Authorization": auth}, timeout=10
    )


def test_the_hook_signs_what_the_sandbox_verifies(sandbox, monkeypatch, tmp_path):
    hook = wire(monkeypatch, tmp_path, sandbox)
    hook.upsert_contact({"email": "zoë@example.com", "name": "Zoë"})
    assert hook.contact_by_email("Zoë@example.com")["contact"]["name"] == "Zoë"  # a signed query string too
    body = next(r["body"] for r in sandbox.requests if r["method"] == "POST")
    assert body == {"data": {"email": "zoë@example.com", "name": "Zoë"}, "group_key": GROUP_KEY}


def test_signatures_by_hand_wrong_secret_wrong_region_and_old_timestamps_are_refused(sandbox):
    now = dt.datetime.now(dt.UTC)
    body = {"data": {"email": "a@example.com"}, "group_key": GROUP_KEY}
    assert signed(sandbox, body, when=now).status_code == 200
    wrong = signed(sandbox, body, when=now, secret="not-the-secret")
    assert wrong.status_code == 403 and "signature we calculated does not match" in wrong.json()["message"]
    assert signed(sandbox, body, when=now, region="us-east-1").status_code == 403
    old = signed(sandbox, body, when=now - dt.timedelta(minutes=20))
    assert old.status_code == 403 and "Signature expired" in old.json()["message"]
    unsigned = requests.post(sandbox.url + "/v1/contacts", json=body, timeout=10)
    assert unsigned.status_code == 403 and unsigned.json() == {"message": "Missing Authentication Token"}
    assert signed(sandbox, body, when=now, path="/v1/nowhere").json() == {
        "message": "Missing Authentication Token"
    }


def test_wrong_secret_is_an_auth_error_that_says_what_to_check(sandbox, monkeypatch, tmp_path):
    hook = wire(monkeypatch, tmp_path, sandbox, password="wrong")
    with pytest.raises(VendorAuthError, match=r"signing or path problem.*region"):
        hook.upsert_contact({"email": "a@example.com"})


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (
            lambda h: h.upsert_contact({"email": "a@example.com", "address": {"city": "Oslo"}}),
            "data must be flat",
        ),
        (
            lambda h: h.add_event({"email": "a@example.com", "contactExtEventType": "purchase"}),
            "contactExtEventType must be one of",
        ),
        (lambda h: h.upsert_products([{**PRODUCT, "id": "P" * 40}]), r"data\[0\]\.id: longer than 32"),
    ],
)
def test_refusals_carry_data_talks_messages_and_request_id(sandbox, monkeypatch, tmp_path, call, message):
    hook = wire(monkeypatch, tmp_path, sandbox)
    with pytest.raises(VendorRejected, match=message) as raised:
        call(hook)
    assert "requestId" in str(raised.value)


def test_unknown_group_key_is_refused(sandbox, monkeypatch, tmp_path):
    hook = wire(monkeypatch, tmp_path, sandbox, group_key="someone-else")
    with pytest.raises(VendorRejected, match="Unknown group_key"):
        hook.upsert_contact({"email": "a@example.com"})


def test_504s_are_retried_and_429s_waited_out(sandbox, monkeypatch, tmp_path):
    hook = wire(
        monkeypatch, tmp_path, sandbox, requests_per_minute=100000
    )  # our pacing off: the sandbox limits
    sandbox.inject("status", status=504, count=2)
    for i in range(12):
        hook.upsert_contact({"email": f"c{i}@example.com"})
    assert len(sandbox.store["contacts"]) == 12
    assert hook.stats.transient_errors == 2 and hook.stats.throttled >= 1


# --- products: the documented item, and the old one refused -------------------------------------------
def test_the_old_product_payload_is_refused_and_the_documented_one_passes(sandbox, monkeypatch, tmp_path):
    hook = wire(monkeypatch, tmp_path, sandbox)
    with pytest.raises(VendorRejected) as raised:
        hook.upsert_products([OLD_PRODUCT])
    body = raised.value.body
    assert raised.value.status == 400 and body["success"] is False and body["requestId"]
    assert "data[0].id: is required and must not be blank" in body["messages"]
    assert any("data[0].product_id: unknown field" in m for m in body["messages"])
    assert sandbox.store["products"] == {}

    hook.upsert_products([PRODUCT])
    assert sandbox.store["products"] == {"P000001": PRODUCT}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"id": None}, "data[0].id: is required and must not be blank"),
        ({"brand": "   "}, "data[0].brand: is required and must not be blank"),
        ({"description": ""}, "data[0].description: is required and must not be blank"),
        ({"price": "49.90"}, "data[0].price: must be a Decimal number"),
        ({"price": True}, "data[0].price: must be a Decimal number"),
        ({"stock_available": 12.5}, "data[0].stock_available: must be an Integer"),
        ({"stock_available": "12"}, "data[0].stock_available: must be an Integer"),
        ({"sex": "F"}, "data[0].sex: must be an Integer"),
        ({"name": "n" * 101}, "data[0].name: longer than 100 characters"),
        ({"image2_url": "u" * 129}, "data[0].image2_url: longer than 128 characters"),
        ({"color": 7}, "data[0].color: must be a String"),
        ({"in_stock": True}, "data[0].in_stock: unknown field"),
    ],
)
def test_each_product_rule_of_the_page_is_enforced(sandbox, monkeypatch, tmp_path, change, message):
    item = {k: v for k, v in {**PRODUCT, **change}.items() if v is not None}
    response = signed(sandbox, {"data": [item], "group_key": GROUP_KEY}, path="/v1/products")
    body = response.json()
    assert response.status_code == 400 and body["success"] is False and body["requestId"]
    assert any(m.startswith(message) for m in body["messages"]), body["messages"]


def test_every_problem_of_an_array_is_listed_once(sandbox):
    items = [PRODUCT, {**PRODUCT, "id": "", "price": "x"}, OLD_PRODUCT]
    body = signed(sandbox, {"data": items, "group_key": GROUP_KEY}, path="/v1/products").json()
    assert not any(m.startswith("data[0].") for m in body["messages"])
    # detail2 is a documented String: only its meaning (the price as text) was wrong, so it is not listed
    assert sorted(m.split(":")[0] for m in body["messages"]) == [
        "data[1].id",
        "data[1].price",
        "data[2].id",
        "data[2].product_id",
    ]


# --- deletes and lookups: documented paths only --------------------------------------------------------
def test_the_old_delete_path_is_refused_and_the_documented_one_deletes(sandbox, monkeypatch, tmp_path):
    hook = wire(monkeypatch, tmp_path, sandbox)
    hook.upsert_contact({"email": "gone@example.com"})
    old = signed(
        sandbox,
        {"data": {"email": "gone@example.com"}, "group_key": GROUP_KEY},
        path="/v1/contacts",
        method="DELETE",
    )
    assert old.status_code == 403 and old.json() == {"message": "Missing Authentication Token"}
    assert "gone@example.com" in sandbox.store["contacts"]

    hook.delete_contact("gone@example.com")
    assert sandbox.store["deleted"] == ["gone@example.com"]
    delete = sandbox.requests[-1]
    assert (delete["method"], delete["path"], delete["status"]) == ("DELETE", DELETE_PATH, 200)
    assert delete["body"] == {"data": {"email": "gone@example.com"}, "group_key": GROUP_KEY}


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("DELETE", "/v1/contacts"),
        ("POST", "/Production/contacts"),
        ("GET", "/v1/contacts"),
        ("POST", "/v1/contact_by_email"),
        ("POST", "/v2/profiles"),
        ("DELETE", "/v1/products"),
    ],
)
def test_undocumented_paths_answer_as_api_gateway_does(sandbox, method, path):
    body = {"data": {"email": "a@example.com"}, "group_key": GROUP_KEY}
    response = signed(sandbox, body, path=path, method=method)
    assert response.status_code == 403 and response.json() == {"message": "Missing Authentication Token"}


def test_contact_lookup_by_email_and_by_sm_id(sandbox, monkeypatch, tmp_path):
    hook = wire(monkeypatch, tmp_path, sandbox)
    hook.upsert_contact({"email": "ann@example.com", "name": "Ann"})
    by_email = hook.contact_by_email("ann@example.com")["contact"]
    by_id = hook.contact_by_sm_id(by_email["sm_id"])["contact"]
    assert by_id == by_email and by_id["name"] == "Ann"
    assert hook.contact_by_sm_id("no-such-id") is None and hook.contact_by_email("nobody@example.com") is None
    assert [r["path"] for r in sandbox.requests if r["method"] == "GET"] == [
        "/v1/contact_by_email",
        "/v1/contact_by_sm_id",
        "/v1/contact_by_sm_id",
        "/v1/contact_by_email",
    ]


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda h: h.upsert_contact({"email": "   "}), "email is required and must not be blank"),
        (
            lambda h: h.upsert_contact({"email": "a" * 65 + "@example.com"}),
            "at most 64 characters before the @",
        ),
        (lambda h: h.upsert_contact({"email": "a@" + "b" * 250 + ".com"}), "254 in all"),
        (
            lambda h: h.upsert_contact({"email": "a@example.com", "zipCode": 12345}),
            "zipCode: must be a String",
        ),
        (
            lambda h: h.add_event({"email": "a@example.com", "contactExtEventType": " "}),
            "contactExtEventType must be",
        ),
        (
            lambda h: h.add_event({"email": "a@example.com", "contactExtEventType": "VISIT", "value": "9.5"}),
            "value must be a Float",
        ),
    ],
)
def test_contact_and_event_rules_are_enforced(sandbox, monkeypatch, tmp_path, call, message):
    hook = wire(monkeypatch, tmp_path, sandbox)
    with pytest.raises(VendorRejected, match=message):
        call(hook)


# --- an independent check: botocore signs the same bytes the same way ---------------------------------
class _Capture(BaseAdapter):
    """A transport that keeps the prepared request (the exact bytes the hook would send) and answers 200."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[requests.PreparedRequest] = []

    def send(self, request, **kwargs):
        self.sent.append(request)
        response = requests.Response()
        response.status_code, response.url, response.request = 200, request.url, request
        response._content = b'{"success": true, "messages": [], "requestId": "r-1"}'
        return response

    def close(self) -> None:
        pass


def botocore_authorization(prepared: requests.PreparedRequest, region: str) -> str:
    """What botocore's SigV4Auth puts in Authorization for the same method, URL, signed headers and body,
    at the same X-Amz-Date."""
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    signed_names = AUTH_RE.match(prepared.headers["Authorization"])["headers"].split(";")
    headers = {k: v for k, v in prepared.headers.items() if k.lower() in signed_names and k.lower() != "host"}
    request = AWSRequest(method=prepared.method, url=prepared.url, headers=headers, data=prepared.body)
    when = dt.datetime.strptime(prepared.headers["X-Amz-Date"], "%Y%m%dT%H%M%SZ")
    with mock.patch("botocore.auth.get_current_datetime", return_value=when):
        SigV4Auth(Credentials(ACCESS_KEY, SECRET_KEY), "execute-api", region).add_auth(request)
    return request.headers["Authorization"]


def signature_holds(prepared: requests.PreparedRequest, region: str = REGION) -> bool:
    """botocore agrees with the hook's Authorization, and the signed body hash is the body's. (botocore
    takes a signed X-Amz-Content-SHA256 header as the payload hash, so that hash is checked by hashlib.)"""
    body = prepared.body or b""
    declared = prepared.headers.get("X-Amz-Content-SHA256", hashlib.sha256(body).hexdigest())
    return declared == hashlib.sha256(body).hexdigest() and prepared.headers[
        "Authorization"
    ] == botocore_authorization(prepared, region)


@pytest.fixture
def offline_hook(monkeypatch, tmp_path):
    """A DataTalksHook on Data Talks' default host and delete URL whose requests a capture transport keeps:
    nothing leaves the machine."""
    monkeypatch.setenv(
        "AIRFLOW_CONN_SALESMANAGO_DEFAULT",
        conn_json("http", login=ACCESS_KEY, password=SECRET_KEY, extra={"group_key": GROUP_KEY}),
    )
    monkeypatch.setenv("RETL_RATE_LIMIT_URL", f"sqlite:///{tmp_path / 'rl.sqlite'}")
    hook = DataTalksHook()
    capture = _Capture()
    hook.get_conn().mount("https://", capture)
    return hook, capture


@pytest.mark.parametrize(
    ("call", "method", "url", "check_data"),
    [
        (
            lambda h: h.upsert_contact({"email": "zoë@example.com", "name": "Zoë", "city": "Malmö"}),
            "POST",
            "https://api.datatalks.se/v1/contacts",
            lambda data: (
                isinstance(data, dict)
                and set(data) <= set(CONTACT_FIELDS)
                and not any(isinstance(v, dict | list) for v in data.values())
            ),
        ),
        (
            lambda h: h.upsert_products([PRODUCT, {**PRODUCT, "id": "P000002"}]),
            "POST",
            "https://api.datatalks.se/v1/products",
            lambda data: (
                isinstance(data, list)
                and all(set(PRODUCT_REQUIRED) <= set(p) and set(p) <= set(PRODUCT_FIELDS) for p in data)
                and [p["id"] for p in data] == ["P000001", "P000002"]
                and all(isinstance(p["price"], float) and isinstance(p["stock_available"], int) for p in data)
            ),
        ),
        (
            lambda h: h.delete_contact("zoë@example.com"),
            "DELETE",
            DELETE_CONTACT_URL,
            lambda data: data == {"email": "zoë@example.com"},
        ),
        (
            lambda h: h.contact_by_email("zoë@example.com"),
            "GET",
            "https://api.datatalks.se/v1/contact_by_email?email=zo%C3%AB%40example.com",
            lambda data: data is None,
        ),
    ],
    ids=["contacts", "products", "delete", "lookup"],
)
def test_botocore_computes_the_hooks_signature_on_the_documented_urls(
    offline_hook, call, method, url, check_data
):
    """No host (Data Talks' default) and no delete_contact_url (the documented one): nothing leaves the
    machine, the capture transport keeps the request."""
    hook, capture = offline_hook
    call(hook)
    (prepared,) = capture.sent
    assert (prepared.method, prepared.url) == (method, url)
    authorization = prepared.headers["Authorization"]
    signed_names = AUTH_RE.match(authorization)["headers"].split(";")
    assert {"host", "x-amz-date"} <= set(signed_names)
    assert method == "GET" or "content-type" in signed_names
    # The execute-api host of the documented delete is signed for its own region (eu-west-1).
    assert authorization == botocore_authorization(prepared, REGION) and signature_holds(prepared)
    assert f"/{REGION}/execute-api/aws4_request" in authorization
    if prepared.body:
        envelope = json.loads(prepared.body)
        assert set(envelope) == {"data", "group_key"} and envelope["group_key"] == GROUP_KEY
        assert check_data(envelope["data"])
    else:
        assert check_data(None)


def test_botocore_would_notice_a_changed_body(offline_hook):
    """The check is not vacuous: the same request with one byte changed no longer matches."""
    hook, capture = offline_hook
    hook.upsert_contact({"email": "a@example.com"})
    prepared = capture.sent[0]
    assert signature_holds(prepared)
    assert not signature_holds(prepared, "us-east-1")
    prepared.body = prepared.body.replace(b"a@", b"b@")
    assert not signature_holds(prepared)  # the signed body hash no longer matches
    prepared.headers["X-Amz-Content-SHA256"] = hashlib.sha256(prepared.body).hexdigest()
    assert not signature_holds(prepared)  # and a recomputed hash no longer matches the signature


def test_the_documented_delete_is_signed_for_its_own_region_whatever_the_region_extra(monkeypatch, tmp_path):
    """api.datatalks.se is signed for the ``region`` extra; the execute-api host names its region
    (eu-west-1), and API Gateway only accepts a signature scoped to it."""
    monkeypatch.setenv(
        "AIRFLOW_CONN_SALESMANAGO_DEFAULT",
        conn_json(
            "http",
            login=ACCESS_KEY,
            password=SECRET_KEY,
            extra={"group_key": GROUP_KEY, "region": "us-east-1"},
        ),
    )
    monkeypatch.setenv("RETL_RATE_LIMIT_URL", f"sqlite:///{tmp_path / 'rl.sqlite'}")
    hook = DataTalksHook()
    capture = _Capture()
    hook.get_conn().mount("https://", capture)
    hook.upsert_contact({"email": "a@example.com"})
    hook.delete_contact("a@example.com")
    post, delete = capture.sent
    assert "/us-east-1/execute-api/" in post.headers["Authorization"] and signature_holds(post, "us-east-1")
    assert delete.url == DELETE_CONTACT_URL
    assert "/eu-west-1/execute-api/" in delete.headers["Authorization"] and signature_holds(
        delete, "eu-west-1"
    )
