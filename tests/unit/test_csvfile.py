"""CSV parts for file-based vendors: safe cells, line limits, names, gzip."""

from __future__ import annotations

import gzip

import pytest

from reverse_etl.csvfile import CellStats, CsvParts, cell, file_names, window_regex


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ('=HYPERLINK("http://x")', '\'=HYPERLINK("http://x")'),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("-2+3+cmd|' /C calc'!A0", "'-2+3+cmd|' /C calc'!A0"),
        ("+33612345678", "+33612345678"),  # a plain number runs nothing
        ("-12.5", "-12.5"),
        ("O'Brien\nJr", "O'Brien Jr"),
        ("a\r\nb\rc", "a b c"),
        (None, ""),
        (True, "true"),
    ],
)
def test_cells_are_folded_and_neutralised(value, expected):
    assert cell(value, CellStats()) == expected


def test_parts_hold_at_most_max_lines_with_the_header_in_each(tmp_path):
    parts = CsvParts(tmp_path, header=["id", "name"], delimiter=";", max_lines=3, gzipped=True)
    for i in range(5):
        parts.write([f"R{i}", f"Zoë;{i}"])
    paths = parts.close()
    texts = [gzip.decompress(p.read_bytes()).decode("utf-8") for p in paths]
    assert texts == [
        'id;name\nR0;"Zoë;0"\nR1;"Zoë;1"\n',
        'id;name\nR2;"Zoë;2"\nR3;"Zoë;3"\n',
        'id;name\nR4;"Zoë;4"\n',
    ]
    assert not gzip.decompress(paths[0].read_bytes()).startswith(b"\xef\xbb\xbf")  # no BOM


def test_names_and_the_window_pattern():
    pattern = "referral_contacts_{date}{part}.csv"
    assert file_names(pattern, "20261031", 1, False) == ["referral_contacts_20261031.csv"]
    assert file_names(pattern, "20261031", 2, True) == [
        "referral_contacts_20261031_01.csv.gz",
        "referral_contacts_20261031_02.csv.gz",
    ]
    regex = window_regex(pattern, "20261031")
    assert regex.fullmatch("referral_contacts_20261031_07.csv.gz")
    assert not regex.fullmatch("referral_contacts_20261030.csv")
    with pytest.raises(ValueError, match=r"has no \{part\}"):
        file_names("contacts_{date}.csv", "20261031", 2, False)
