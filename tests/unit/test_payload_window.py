import datetime as dt

import pytest

from reverse_etl.errors import ConfigError
from reverse_etl.payload import canonical_json, payload_hash, row_to_payload, serialise
from reverse_etl.window import resolve_window


def test_row_to_payload_nests_drops_meta_and_nulls():
    row = {
        "_key": "1",
        "_deleted": False,
        "source_id": "1",
        "email": None,
        "address__city": "Kraków",
        "address__line_1": None,
        "metadata__points": 3,
        "birthdate": dt.date(1990, 4, 5),
        "created_at": dt.datetime(2026, 1, 2, 3, 4, 5),
        "items__json": '[{"quantity": 2}]',
    }
    assert row_to_payload(row) == {
        "source_id": "1",
        "address": {"city": "Kraków"},
        "metadata": {"points": 3},
        "birthdate": "1990-04-05",
        "created_at": "2026-01-02T03:04:05Z",
        "items": [{"quantity": 2}],
    }


def test_payload_text_and_hash_are_those_of_earlier_versions():
    """The ledger compares these hashes with the ones it stored: a change in the text (a faster path, a
    float or a date written otherwise) would make every record look changed and send it again."""
    row = {
        "_key": "1",
        "source_id": "1",
        "name": "Zoë",
        "address__city": "Kraków",
        "metadata__points": 3,
        "metadata__score": 1.5,
        "metadata__vip": True,
        "created_at": dt.datetime(2026, 1, 2, 3, 4, 5, 600),
        "updated_at": dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.timezone(dt.timedelta(hours=1))),
        "items__json": '[{"quantity": 2, "note": null}]',
    }
    payload = row_to_payload(row)
    text, digest = serialise(payload)
    assert (
        text
        == canonical_json(payload)
        == (
            '{"address":{"city":"Kraków"},"created_at":"2026-01-02T03:04:05.000600Z","items":[{"quantity":2}],'
            '"metadata":{"points":3,"score":1.5,"vip":true},"name":"Zoë","source_id":"1",'
            '"updated_at":"2026-01-02T02:04:05Z"}'
        )
    )
    assert (
        digest == payload_hash(payload) == "a83a3e8ebbaf362db9927b21fc003f078c7f685f1b61a4397a60a23c71fc7147"
    )


def test_payload_hash_ignores_key_order_but_not_values():
    assert payload_hash({"a": 1, "b": {"c": 2}}) == payload_hash({"b": {"c": 2}, "a": 1})
    assert payload_hash({"a": 1}) != payload_hash({"a": 2})


def test_window_from_params_wins_over_data_interval():
    window = resolve_window(
        {"window_start": "2026-10-01", "window_end": "2026-10-03T00:00:00Z"},
        dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
        dt.datetime(2026, 1, 2, tzinfo=dt.UTC),
    )
    assert window.sql_literal("start") == "2026-10-01 00:00:00.000000"
    assert window.sql_literal("end") == "2026-10-03 00:00:00.000000"


def test_window_from_data_interval_and_clear_errors():
    start = dt.datetime(2026, 10, 1, tzinfo=dt.UTC)
    assert resolve_window({}, start, start + dt.timedelta(days=1)).start == start
    with pytest.raises(ConfigError, match=r"zero-width|must be after"):
        resolve_window({}, start, start)
    with pytest.raises(ConfigError, match="both"):
        resolve_window({"window_start": "2026-10-01"}, None, None)
    with pytest.raises(ConfigError, match="not an ISO date"):
        resolve_window({"window_start": "yesterday", "window_end": "today"}, None, None)


def test_manual_run_without_interval_or_params_syncs_the_last_full_day():
    window = resolve_window({}, None, None)
    assert window.end - window.start == dt.timedelta(days=1)
    assert window.end.hour == 0 and window.end <= dt.datetime.now(dt.UTC)


def test_canonical_json_is_the_standard_encoders_text_byte_for_byte():
    """The encoder built once must write what ``json.dumps`` with the same settings writes: a byte of
    difference would change every hash and resend every record once."""
    import json
    import math

    payloads = [
        {"b": 1, "a": {"z": [1, 2.5, None, True, False], "y": 'é\u2028"\\\n\t'}, "c": 1e16, "d": -0.0},
        {"n": 1e-05, "big": 2**70, "nan": math.nan, "inf": math.inf, "ninf": -math.inf, "u": "Zoë 日本"},
        {"nested": {"deeper": {"k": [{"x": 1}, {}]}}, "empty": [], "s": ""},
    ]
    for payload in payloads:
        expected = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        assert canonical_json(payload) == expected
        assert serialise(payload)[0] == expected
