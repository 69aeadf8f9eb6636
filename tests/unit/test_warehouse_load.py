"""Loading a vendor export (CSV) back into the warehouse: a snapshot replaces the table, a windowed load
replaces only its window's rows; awkward CSV content survives; on DuckDB and PostgreSQL."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest

from reverse_etl.warehouse import WarehouseHook
from sandbox.env import conn_json

AWKWARD = 'id;name;note\n1;Zoë;"says ""hi""; then\nleaves"\n2;Дмитро;\n'


def _rows(hook: WarehouseHook, table: str, columns: str = "*") -> list[tuple]:
    batches = list(hook.stream(f"SELECT {columns} FROM {table} ORDER BY 1", 100))
    return [tuple(row.values()) for batch in batches for row in batch.to_pylist()]


@pytest.fixture(params=["duckdb", pytest.param("postgres", marks=pytest.mark.postgres)])
def hook(request, tmp_path, monkeypatch):
    if request.param == "duckdb":
        conn = conn_json("duckdb", host=str(tmp_path / "wh.duckdb"))
    else:
        dsn = urlsplit(request.getfixturevalue("postgres_database"))
        conn = conn_json(
            "postgres", host=dsn.hostname, port=dsn.port, login=dsn.username, schema=dsn.path.lstrip("/")
        )
    monkeypatch.setenv("AIRFLOW_CONN_RETL_WAREHOUSE", conn)
    return WarehouseHook()


def test_snapshot_replaces_the_table_and_keeps_awkward_text(hook, tmp_path):
    path = tmp_path / "export.csv"
    path.write_text(AWKWARD, encoding="utf-8")
    stamps = {"_exported_at": "2026-11-30T10:00:00", "_window_start": "2026-11-29T00:00:00"}
    assert hook.load_csv("exp", str(path), delimiter=";", stamps=stamps) == 2
    rows = _rows(hook, "exp")
    assert [r[:3] for r in rows] == [("1", "Zoë", 'says "hi"; then\nleaves'), ("2", "Дмитро", None)]
    assert str(rows[0][3]).startswith("2026-11-30 10:00")
    path.write_text("id;name\n3;Ann\n", encoding="utf-8")
    assert hook.load_csv("exp", str(path), delimiter=";", stamps=stamps) == 1  # a snapshot, not appended


def test_windowed_load_replaces_its_window_only_and_adds_new_columns(hook, tmp_path):
    path = tmp_path / "activities.csv"

    def load(text: str, start: str, end: str) -> int:
        path.write_text(text, encoding="utf-8")
        stamps = {"_window_start": start, "_window_end": end}
        return hook.load_csv(
            "acts",
            str(path),
            delimiter=",",
            stamps=stamps,
            replace_rows_where={k: (start, end) for k in stamps},
        )

    assert load("id,kind\na,purchase\nb,purchase\n", "2026-11-01", "2026-11-02") == 2
    assert load("id,kind\nc,purchase\n", "2026-11-02", "2026-11-03") == 3
    # The first day again, with a column Connectif added meanwhile: its rows are replaced, not doubled.
    assert load("id,kind,value\na,purchase,10\n", "2026-11-01", "2026-11-02") == 2
    assert _rows(hook, "acts", "id, kind, value") == [("a", "purchase", "10"), ("c", "purchase", None)]


def test_a_file_without_header_names_the_file(hook, tmp_path):
    path = tmp_path / "empty.csv"
    path.write_text("", encoding="utf-8")
    with pytest.raises(ValueError, match=r"empty\.csv has no header row"):
        hook.load_csv("exp", str(path), delimiter=";", stamps={})
