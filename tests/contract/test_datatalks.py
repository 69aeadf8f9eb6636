"""The Data Talks sandbox checks SigV4 for real, and DataTalksHook passes it; errors read well."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json

import pytest
import requests

from reverse_etl.errors import VendorAuthError, VendorRejected
from reverse_etl.hooks.datatalks import DataTalksHook
from sandbox.datatalks import (
    ACCESS_KEY,
    GROUP_KEY,
    REGION,
    SECRET_KEY,
    DataTalksSandbox,
    canonical_request,
    signing_key,
)
from sandbox.env import conn_json


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
            extra={"group_key": GROUP_KEY, "backoff_base_seconds": 0.05, **extra},
        ),
    )
    monkeypatch.setenv("RETL_RATE_LIMIT_URL", f"sqlite:///{tmp_path / 'rl.sqlite'}")
    return DataTalksHook()


def signed(
    sb,
    body: dict,
    *,
    when: dt.datetime,
    secret: str = SECRET_KEY,
    region: str = REGION,
    path: str = "/v1/contacts",
):
    """A request signed by hand, by the AWS rules, at a chosen time."""
    raw = json.dumps(body).encode()
    amz = when.strftime("%Y%m%dT%H%M%SZ")
    host = sb.url.removeprefix("http://")
    headers = {"host": host, "x-amz-date": amz, "content-type": "application/json"}
    names = sorted(headers)
    canonical = canonical_request("POST", path, {}, headers, names, raw)
    scope = f"{amz[:8]}/{region}/execute-api/aws4_request"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", amz, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    signature = hmac.new(signing_key(secret, amz[:8], region), to_sign.encode(), hashlib.sha256).hexdigest()
    auth = f"AWS4-HMAC-SHA256 Credential={ACCESS_KEY}/{scope}, SignedHeaders={';'.join(names)}, Signature={signature}"
    return requests.post(sb.url + path, data=raw, headers={**headers, "Authorization": auth}, timeout=10)


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
        (lambda h: h.upsert_products([{"product_id": "P" * 40, "name": "n"}]), "product_id: longer than 32"),
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
