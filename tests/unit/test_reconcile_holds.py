"""``holds``: does a vendor's record hold the payload we would send? Normalisation of what vendors echo back
in other forms, and the refusal message of syncs that cannot be read back."""

from __future__ import annotations

import datetime as dt
import decimal

import pytest

from reverse_etl.reconcile import holds, refusal, same_value


@pytest.mark.parametrize(
    ("vendor", "ours"),
    [
        ("12.50", 12.5),  # CSV exports give text
        (1250, 1250.0),
        (decimal.Decimal("3.10"), 3.1),
        ("120", 120),
        ("true", True),
        (False, False),
        ("1990-01-01T00:00:00.000Z", "1990-01-01"),  # a date is its midnight UTC
        ("2026-10-30T14:00:00+02:00", "2026-10-30T12:00:00Z"),
        ("2026-10-30T12:00:00", "2026-10-30T12:00:00Z"),  # naive means UTC
        (dt.date(1990, 1, 1), "1990-01-01"),
        ("Ann@Example.COM", "ann@example.com"),
        ("Kraków", "Kraków"),
    ],
)
def test_same_value_after_normalising(vendor, ours):
    assert same_value(vendor, ours)


@pytest.mark.parametrize(
    ("vendor", "ours"),
    [
        ("12.51", 12.5),
        ("false", True),
        ("1", True),  # a number is not a boolean
        ("1990-01-02", "1990-01-01"),
        ("2026-10-30T12:00:01Z", "2026-10-30T12:00:00Z"),
        ("Kraków", "krakow"),  # only emails ignore case
        ("Smith", "smith"),
        (None, "x"),
        ("", 0),
        ("00123", "123"),  # text stays text: a postal code keeps its zeros
    ],
)
def test_different_values_are_not_held(vendor, ours):
    assert not same_value(vendor, ours)


def test_fields_we_send_must_all_be_there_and_the_rest_is_ignored():
    vendor = {
        "id": "cust_1",
        "source_id": "42",
        "email": "ANN@example.com",
        "address": {"city": "Lyon", "country": "FR", "line_1": None},
        "metadata": {"loyalty_points": "120", "language": "fr"},
        "summary": {"orders": {"total_count": 3}},
    }
    payload = {
        "source_id": "42",
        "email": "ann@example.com",
        "address": {"city": "Lyon", "country": "FR"},
        "metadata": {"loyalty_points": 120},
    }
    assert holds(vendor, payload)
    assert not holds(vendor, {**payload, "phone": "+33123456789"})  # a field the vendor lacks
    assert not holds(vendor, {**payload, "address": {"city": "Paris"}})  # nested difference
    assert not holds(vendor, {**payload, "metadata": {"loyalty_points": 121}})
    assert not holds({**vendor, "address": "Lyon"}, payload)  # an object where we send one


def test_lists_compare_item_by_item():
    vendor = {"items": [{"source_id": "p1", "quantity": "2", "object": "order_item"}, {"source_id": "p2"}]}
    assert holds(vendor, {"items": [{"source_id": "p1", "quantity": 2}, {"source_id": "p2"}]})
    assert not holds(vendor, {"items": [{"source_id": "p1", "quantity": 2}]})  # a line fewer
    assert not holds(vendor, {"items": [{"source_id": "p2"}, {"source_id": "p1", "quantity": 2}]})


def test_refusal_names_the_sync_why_and_the_dry_run():
    from reverse_etl.operators.salesfire import SalesfireCustomersOperator

    text = refusal(SalesfireCustomersOperator)
    assert "salesfire.customers cannot be reconciled" in text
    assert "no endpoint that reads customers back" in text
    assert "dry_run" in text and "--dry-run" in text and "dry_run_payloads.jsonl" in text


def test_cli_refuses_a_sync_that_cannot_be_read_back_before_touching_anything(tmp_path, capsys):
    from reverse_etl import cli

    state = tmp_path / "absent.db"
    assert cli.main(["--state", str(state), "reconcile", "salesfire", "customers"]) == 2
    err = capsys.readouterr().err
    assert "salesfire.customers cannot be reconciled" in err and "--dry-run" in err
    assert not state.exists()  # nothing opened, nothing created


def test_cli_names_the_syncs_when_the_sync_is_unknown(tmp_path, capsys):
    from reverse_etl import cli

    assert cli.main(["--state", str(tmp_path / "s.db"), "reconcile", "voucherify", "vouchers"]) == 2
    err = capsys.readouterr().err
    assert "No sync voucherify vouchers" in err and "voucherify customers" in err
    assert "splio_referral referral_contacts" in err
