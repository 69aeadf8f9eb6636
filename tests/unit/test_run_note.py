"""The DAG run note the report task writes: the grid's note box holds at most 1000 characters."""

from __future__ import annotations

import pytest

from reverse_etl.tasks import NOTE_LIMIT, format_note
from tests.e2e.harness import note_table


def report(entity: str, **counts) -> dict:
    base = {
        "entity": entity,
        "dry_run": False,
        "extracted": 10,
        "valid": 8,
        "rejected": 2,
        "to_send": 8,
        "sent": 8,
        "to_delete": 1,
        "deleted": 1,
        "erased": 2,
        "failed": 0,
        "requests": 3,
        "throttled": 1,
        "seconds": 0.5,
        "quarantine": f"file:///staging/voucherify_sync/run/{entity}/quarantine.jsonl",
    }
    return {**base, **counts}


def test_a_live_run_note_has_one_row_per_entity_and_the_quarantine_files():
    note = format_note([report("customers"), report("orders", rejected=0)], [], dry_run=False)
    # the first line is all the UI shows until the note is opened: the run's totals
    assert note.startswith("**Run report:** sent 16, rejected 2, failed 0\n")
    table = note_table(note)
    assert table["customers"] == {
        "extracted": "10",
        "valid": "8",
        "rejected": "2",
        "sent": "8",
        "deleted": "3",  # planned deletes and erasures
        "failed": "0",
        "requests": "3",
        "throttled": "1",
        "seconds": "0.5",
    }
    assert "customers/quarantine.jsonl" in note and "orders/quarantine.jsonl" not in note  # nothing rejected
    assert "Failed" not in note


def test_a_dry_run_note_says_what_it_would_send_and_delete():
    note = format_note([report("customers", dry_run=True, sent=0, deleted=0)], [], dry_run=True)
    assert note.startswith("**Dry run report:** would send 8, rejected 2\n")
    row = note_table(note)["customers"]
    assert row["sent"] == "would send 8" and row["deleted"] == "would delete 3"


def test_a_failed_run_note_names_the_failed_tasks():
    note = format_note([report("customers")], ["orders.load"], dry_run=False)
    assert note.startswith("**Run report:** sent 8, rejected 2, failed 0; orders.load failed\n")
    assert note.endswith("**Failed:** orders.load: see its log.")
    note = format_note([], ["customers.extract", "orders.load"], dry_run=False)
    assert "No load report." in note and note.endswith("customers.extract, orders.load: see their log.")


def test_long_quarantine_paths_collapse_to_their_folder_within_the_limit():
    deep = "/".join(["x" * 40] * 5)
    reports = [report(e, quarantine=f"file:///{deep}/{e}/quarantine.jsonl") for e in ("a", "b", "c", "d")]
    note = format_note(reports, ["d.load"], dry_run=False)
    assert len(note) <= NOTE_LIMIT
    assert f"Quarantine: `file:///{deep}`" in note and "a/quarantine.jsonl" not in note
    assert note.endswith("**Failed:** d.load: see its log.")
    assert set(note_table(note)) == {"a", "b", "c", "d"}


def test_the_listener_adds_the_failed_tasks_the_report_could_not_name():
    from reverse_etl.run_notes import add_failures

    ran = format_note([report("contacts")], [], dry_run=False)
    assert add_failures(ran, ["export"]).endswith("\n\n**Failed:** export: see its log.")
    assert add_failures(ran, []) == ran
    # The report failed because of the load its note names: nothing to add.
    named = format_note([report("contacts")], ["contacts.load"], dry_run=False)
    assert add_failures(named, ["contacts.load", "report"]) == named
    assert add_failures(named, ["contacts.load", "export", "report"]).endswith(
        "**Also failed:** export: see its log."
    )
    # The report task crashed before writing its note.
    assert add_failures("", ["report"]) == "**Failed:** report: see its log."
    # A note at the limit gives way to the failure line, which stays whole.
    full = "x" * NOTE_LIMIT
    noted = add_failures(full, ["export"])
    assert len(noted) == NOTE_LIMIT and noted.endswith("**Failed:** export: see its log.")


@pytest.mark.parametrize("syntax", ["glob", "regexp"])
def test_the_plugins_folder_yields_both_plugins_and_no_engine_module(syntax):
    """plugins/.airflowignore keeps Airflow from importing reverse_etl/ file by file in every task process
    (the SFTP provider among them); the run-notes listener is still found, through its top-level file."""
    from pathlib import Path

    from airflow._shared.plugins_manager.plugins_manager import _load_plugins_from_plugin_directory

    folder = Path(__file__).resolve().parents[2] / "plugins"
    plugins, errors = _load_plugins_from_plugin_directory(str(folder), ignore_file_syntax=syntax)
    assert not errors
    assert sorted(p.name for p in plugins) == ["reverse_etl_run_notes", "reverse_etl_ui"]
    assert sorted(p.source.path for p in plugins) == ["retl_run_notes_plugin.py", "retl_ui_plugin.py"]
    [notes] = [p for p in plugins if p.name == "reverse_etl_run_notes"]
    assert [m.__name__ for m in notes.listeners] == ["reverse_etl.run_notes"]
