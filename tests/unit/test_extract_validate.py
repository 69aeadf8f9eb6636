"""Extract and validate against the sample warehouse: counts, duplicates, quarantine, threshold, bad config."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from reverse_etl.errors import ConfigError, RejectedShareExceeded
from reverse_etl.extract import extract
from reverse_etl.ledger import record_history
from reverse_etl.staging import iter_parquet, iter_valid
from reverse_etl.validate import validate
from reverse_etl.window import Window
from sandbox.env import conn_json

WINDOW = Window(dt.datetime(2026, 10, 1, tzinfo=dt.UTC), dt.datetime(2026, 11, 1, tzinfo=dt.UTC))


@pytest.fixture
def wired(monkeypatch, state_store, warehouse, tmp_path):
    monkeypatch.setenv("AIRFLOW_CONN_RETL_WAREHOUSE", conn_json("duckdb", host=str(warehouse)))
    monkeypatch.setenv("RETL_STAGING_URL", (tmp_path / "staging").as_uri())
    monkeypatch.setenv("RETL_CHUNK_ROWS", "300")  # several chunks even at test size
    return warehouse


def run_extract(entity: str = "customers") -> dict:
    return extract(destination="voucherify", entity=entity, window=WINDOW, dag_id="d", run_id="r")


def local(url: str) -> str:
    return url.removeprefix("file://")


def test_extract_streams_the_whole_window(wired):
    manifest = run_extract()
    con = duckdb.connect(str(wired), read_only=True)
    (total,) = con.execute("SELECT count(*) FROM customers").fetchone()
    (deleted,) = con.execute("SELECT count(*) FROM customers WHERE deleted_at IS NOT NULL").fetchone()
    assert manifest["rows"] == total and manifest["deletes"] == deleted
    batches = list(iter_parquet(manifest["path"], 300))
    assert len(batches) > 3 and sum(b.num_rows for b in batches) == total


def test_validate_quarantines_with_reasons_and_keeps_newest_duplicate(wired):
    extracted = run_extract()
    manifest = validate(extract_manifest=extracted, dag_id="d", run_id="r", max_rejected_share=0.5)
    assert manifest["valid"] + manifest["rejected"] == extracted["rows"]
    with open(local(manifest["quarantine_path"]), encoding="utf-8") as handle:
        lines = [json.loads(line) for line in handle]
    assert len(lines) == manifest["rejected"] > 0
    assert all(line["reason"] and line["failures"] for line in lines)
    reasons = " ".join(line["reason"] for line in lines)
    for rule in ("valid address", "uppercase", "255 characters", "superseded"):
        assert rule in reasons

    con = duckdb.connect(str(wired), read_only=True)
    dup_keys = {
        str(k)
        for (k,) in con.execute(
            "SELECT customer_id FROM customers GROUP BY customer_id HAVING count(*) > 1"
        ).fetchall()
    }
    valid = [row for b in iter_valid(manifest, 1000) for row in b.to_pylist()]
    keys = [row["_key"] for row in valid]
    assert len(keys) == len(set(keys)), "a key survives validation at most once"
    assert len(valid) == manifest["valid"]
    broken = {line["record_key"] for line in lines if "superseded" not in line["reason"]}
    assert broken and not broken & set(keys), "a row that broke a rule is not read as valid"
    assert manifest["valid_path"] == extracted["path"], "no second copy of the valid rows"
    newest = dict(
        con.execute(
            "SELECT CAST(customer_id AS VARCHAR), max(updated_at) FROM customers GROUP BY customer_id"
        ).fetchall()
    )
    for row in valid:
        if row["_key"] in dup_keys:
            assert row["_updated_at"] == newest[row["_key"]]
    rejected = next(line for line in lines if "superseded" not in line["reason"])
    assert (
        record_history("voucherify", "customers", str(rejected["record_key"]))["current"]["status"]
        == "rejected"
    )


def test_threshold_fails_after_writing_the_quarantine(wired):
    extracted = run_extract()
    with pytest.raises(RejectedShareExceeded, match="max_rejected_share") as raised:
        validate(extract_manifest=extracted, dag_id="d", run_id="r", max_rejected_share=0.001)
    path = str(raised.value).split("quarantined in ")[1].split(";")[0]
    with open(local(path), encoding="utf-8") as handle:
        assert sum(1 for _ in handle) > 0


def test_bad_config_gets_a_clear_error(wired, monkeypatch, tmp_path):
    include = tmp_path / "include"
    (include / "sql" / "v").mkdir(parents=True)
    (include / "expectations" / "v").mkdir(parents=True)
    monkeypatch.setenv("RETL_INCLUDE_DIR", str(include))
    with pytest.raises(ConfigError, match=r"No SQL mapping for v\.customers"):
        extract(destination="v", entity="customers", window=WINDOW, dag_id="d", run_id="r")
    (include / "sql" / "v" / "customers.sql").write_text("SELECT customer_id FROM customers")
    with pytest.raises(ConfigError, match="_key, _deleted"):
        extract(destination="v", entity="customers", window=WINDOW, dag_id="d", run_id="r")
    (include / "sql" / "v" / "customers.sql").write_text("SELECT {{ nope }}")
    with pytest.raises(ConfigError, match="nope"):
        extract(destination="v", entity="customers", window=WINDOW, dag_id="d", run_id="r")
    (include / "sql" / "v" / "customers.sql").write_text(
        "SELECT CAST(customer_id AS VARCHAR) AS _key, false AS _deleted, email FROM customers"
    )
    extracted = extract(destination="v", entity="customers", window=WINDOW, dag_id="d", run_id="r")
    (include / "expectations" / "v" / "customers.json").write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        validate(extract_manifest=extracted, dag_id="d", run_id="r", max_rejected_share=1)
    (include / "expectations" / "v" / "customers.json").write_text(
        json.dumps(
            {
                "expectations": [
                    {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "no_such_column"}}
                ]
            }
        )
    )
    with pytest.raises(ConfigError, match="no_such_column"):
        validate(extract_manifest=extracted, dag_id="d", run_id="r", max_rejected_share=1)


def test_missing_warehouse_connection_names_the_variable(monkeypatch, state_store):
    monkeypatch.delenv("AIRFLOW_CONN_RETL_WAREHOUSE", raising=False)
    with pytest.raises(ConfigError, match="AIRFLOW_CONN_RETL_WAREHOUSE"):
        run_extract()


def test_staging_prune_removes_only_old_run_folders(monkeypatch, tmp_path):
    import os
    import time

    from reverse_etl.staging import prune

    monkeypatch.setenv("RETL_STAGING_URL", (tmp_path / "staging").as_uri())
    for run, age_days in (("old", 20), ("recent", 1)):
        folder = tmp_path / "staging" / "dag" / run / "customers"
        folder.mkdir(parents=True)
        (folder / "quarantine.jsonl").write_text("{}\n")
        stamp = time.time() - age_days * 86400
        os.utime(folder / "quarantine.jsonl", (stamp, stamp))
    assert prune("dag", keep_days=14) == ["old"]
    assert sorted(p.name for p in (tmp_path / "staging" / "dag").iterdir()) == ["recent"]
    assert prune("dag", keep_days=0) == []  # 0 keeps everything


def test_suite_parameters_judge_dates_by_the_run_window_and_blanks_fail():
    """A birthdate after the window end, before 1900 or absurd fails; so does a blank required value.
    The window, not today, is the yardstick: the same row passes in a later window."""
    import pyarrow as pa

    from reverse_etl.validate import SuiteRunner, suite_parameters

    runner = SuiteRunner(
        "t",
        [
            {
                "type": "expect_column_values_to_be_between",
                "kwargs": {
                    "column": "birthdate",
                    "min_value": "1900-01-01",
                    "max_value": {"$PARAMETER": "window_end_date"},
                },
            },
            {
                "type": "expect_column_values_to_be_between",
                "kwargs": {"column": "ordered_at", "max_value": {"$PARAMETER": "window_end"}},
            },
            {"type": "expect_column_values_to_match_regex", "kwargs": {"column": "name", "regex": r"\S"}},
        ],
    )
    frame = pa.table(
        {
            "_key": ["ok", "year1", "future", "blank", "late"],
            "birthdate": pa.array(
                [dt.date(1990, 5, 1), dt.date(1, 1, 1), dt.date(2026, 11, 2), dt.date(1980, 1, 1), None]
            ),
            "ordered_at": pa.array(
                [dt.datetime(2026, 10, 5), None, None, None, dt.datetime(2026, 11, 3)], pa.timestamp("us")
            ),
            "name": ["Ann", "Bo", "Cy", " \t", "Di"],
        }
    ).to_pandas()
    window = WINDOW.as_dict()
    assert suite_parameters(window) == {
        "window_start": "2026-10-01T00:00:00",
        "window_start_date": "2026-10-01",
        "window_end": "2026-11-01T00:00:00",
        "window_end_date": "2026-11-01",
    }
    failed = runner.failures(frame, suite_parameters(window))
    by_key = {frame.at[i, "_key"]: {f["column"] for f in fs} for i, fs in failed.items()}
    assert by_key == {
        "year1": {"birthdate"},
        "future": {"birthdate"},
        "blank": {"name"},
        "late": {"ordered_at"},
    }
    later = Window(dt.datetime(2026, 11, 1, tzinfo=dt.UTC), dt.datetime(2026, 12, 1, tzinfo=dt.UTC))
    failed = runner.failures(frame, suite_parameters(later.as_dict()))
    assert {frame.at[i, "_key"] for i in failed} == {"year1", "blank"}


def test_a_date_rule_on_a_column_of_another_type_names_the_rule_and_the_fix():
    import pyarrow as pa

    from reverse_etl.validate import SuiteRunner, suite_parameters

    runner = SuiteRunner(
        "t",
        [
            {
                "type": "expect_column_values_to_be_between",
                "kwargs": {
                    "column": "ordered_at",
                    "min_value": "1900-01-01",
                    "max_value": {"$PARAMETER": "window_end"},
                },
            }
        ],
    )
    frame = pa.table({"_key": ["a"], "ordered_at": pa.array([dt.datetime(2026, 10, 5)], pa.timestamp("us"))})
    with pytest.raises(ConfigError, match=r"could not run.*window_end_date"):
        runner.failures(frame.to_pandas(), suite_parameters(WINDOW.as_dict()))


def test_gx_heavy_imports_wait_until_used():
    """A validate task does not import scipy.stats and altair with Great Expectations (about 1 s of its
    start); an expectation that needs them still gets the real modules on first use."""
    repo = Path(__file__).resolve().parents[2]
    code = """
import sys
import pandas as pd
from reverse_etl.validate import SuiteRunner
runner = SuiteRunner("s", [{"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "a"}}])
failures = runner.failures(pd.DataFrame({"_key": ["1", "2"], "a": [1, None]}))
assert list(failures) == [1], failures
assert [type(sys.modules[n]).__name__ for n in ("scipy.stats", "altair")] == ["_DeferredModule"] * 2
from scipy import stats
import altair as alt
assert round(stats.entropy([0.5, 0.5], [0.9, 0.1]), 3) == 0.511 and alt.Chart.__name__ == "Chart"
assert type(sys.modules["scipy.stats"]).__name__ == "module"
"""
    env = {**os.environ, "PYTHONPATH": str(repo / "plugins"), "GX_ANALYTICS_ENABLED": "False"}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=repo)
    assert done.returncode == 0, done.stderr[-2000:]


def test_iter_valid_skips_the_rejected_positions_across_batches(tmp_path):
    """The load reads the staged extract without validate's rejected positions, whatever its batch size
    and columns; a manifest without rejected rows reads every row."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from reverse_etl.staging import as_path, write_positions

    pq.write_table(
        pa.table({"_key": [str(i) for i in range(10)], "n": list(range(10))}), tmp_path / "x.parquet"
    )
    skip = write_positions(as_path((tmp_path / "skip.parquet").as_uri()), [0, 3, 4, 9])
    manifest = {"valid_path": (tmp_path / "x.parquet").as_uri(), "rejected_rows_path": str(skip)}
    for rows in (1, 3, 4, 100):
        got = [r["n"] for b in iter_valid(manifest, rows, columns=["n"]) for r in b.to_pylist()]
        assert got == [1, 2, 5, 6, 7, 8], rows
    del manifest["rejected_rows_path"]
    assert sum(b.num_rows for b in iter_valid(manifest, 3)) == 10
    assert list(iter_valid({"valid_path": None}, 3)) == []


def test_sub_suites_give_the_suites_results_in_its_order(tmp_path):
    """Column groups run as separate GX sub-suites: a row's failures still come in the suite's order, the
    file pass skips deleted rows, and it finds what the one-frame run finds."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from reverse_etl.validate import SuiteRunner

    runner = SuiteRunner(
        "t",
        [
            {"type": "expect_column_values_to_be_in_set", "kwargs": {"column": "b", "value_set": ["x"]}},
            {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "a"}},
            {"type": "expect_column_value_lengths_to_be_between", "kwargs": {"column": "b", "max_value": 1}},
        ],
    )
    assert [g[0] for g in runner.groups] == [("_key",), ("b",), ("a",)]
    table = pa.table(
        {
            "_key": ["k0", "k1", None, "k3", "k4"],
            "_deleted": [False, False, False, False, True],
            "a": [1, None, 3, None, None],
            "b": ["x", "yy", "x", "x", "zz"],
        }
    )
    pq.write_table(table, tmp_path / "s.parquet", row_group_size=2)
    failed = runner.file_failures((tmp_path / "s.parquet").as_uri(), None, block_rows=2)
    assert {row: [(f["expectation"], f["column"], f["value"]) for f in fs] for row, fs in failed.items()} == {
        1: [
            ("expect_column_values_to_be_in_set", "b", "yy"),
            ("expect_column_values_to_not_be_null", "a", None),
            ("expect_column_value_lengths_to_be_between", "b", "yy"),
        ],
        2: [("expect_column_values_to_not_be_null", "_key", None)],
        3: [("expect_column_values_to_not_be_null", "a", None)],
    }
    live = table.slice(0, 4).to_pandas()
    assert runner.failures(live) == failed


def test_a_row_condition_sees_the_columns_it_names(tmp_path):
    """An expectation with a row_condition reads another column than its own: it runs on whole rows."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from reverse_etl.validate import SuiteRunner

    runner = SuiteRunner(
        "t",
        [
            {
                "type": "expect_column_values_to_not_be_null",
                "kwargs": {"column": "phone", "row_condition": 'country=="PL"', "condition_parser": "pandas"},
            }
        ],
    )
    table = pa.table(
        {
            "_key": ["a", "b", "c"],
            "_deleted": [False, False, False],
            "country": ["PL", "DE", "PL"],
            "phone": [None, None, "+48600123456"],
        }
    )
    pq.write_table(table, tmp_path / "r.parquet")
    failed = runner.file_failures((tmp_path / "r.parquet").as_uri(), None, block_rows=2)
    assert list(failed) == [0]


def test_gx_sql_engine_on_duckdb_names_a_rule_duckdb_cannot_run(tmp_path):
    """The staged file runs in GX's SQL engine on DuckDB (RE2): a look-ahead, which RE2 lacks, stops
    validation with a configuration error naming the rule, not a silent pass."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from reverse_etl import gx_duckdb
    from reverse_etl.validate import SuiteRunner

    runner = SuiteRunner(
        "t", [{"type": "expect_column_values_to_match_regex", "kwargs": {"column": "a", "regex": "^(?=x)x$"}}]
    )
    pq.write_table(pa.table({"_key": ["k"], "_deleted": [False], "a": ["x"]}), tmp_path / "l.parquet")
    url = (tmp_path / "l.parquet").as_uri()
    assert gx_duckdb.usable(url, runner.suite.expectations)
    with pytest.raises(
        ConfigError, match=r"expect_column_values_to_match_regex.*could not run: .*perl operator"
    ):
        runner.file_failures(url, None, block_rows=2)


def test_gx_sql_engine_gives_dates_and_numbers_back_as_the_quarantine_writes_them(tmp_path):
    """Failing values come back from DuckDB as JSON: dates as ISO text (the quarantine's own form), numbers
    as numbers; a DATE rule takes date text and the window's $PARAMETER, as in GX's pandas engine."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from reverse_etl.validate import SuiteRunner, suite_parameters

    runner = SuiteRunner(
        "t",
        [
            {
                "type": "expect_column_values_to_be_between",
                "kwargs": {
                    "column": "born",
                    "min_value": "1900-01-01",
                    "max_value": {"$PARAMETER": "window_end_date"},
                },
            },
            {"type": "expect_column_values_to_be_between", "kwargs": {"column": "n", "min_value": 0}},
        ],
    )
    table = pa.table(
        {
            "_key": ["ok", "old", "late", "neg"],
            "_deleted": [False, False, False, False],
            "born": [dt.date(1990, 1, 1), dt.date(1, 1, 1), dt.date(2026, 11, 2), None],
            "n": [1, 2, 3, -4],
        }
    )
    pq.write_table(table, tmp_path / "d.parquet")
    failed = runner.file_failures((tmp_path / "d.parquet").as_uri(), suite_parameters(WINDOW.as_dict()), 10)
    assert {row: [(f["column"], f["value"]) for f in fs] for row, fs in failed.items()} == {
        1: [("born", "0001-01-01")],
        2: [("born", "2026-11-02")],
        3: [("n", -4)],
    }


@pytest.mark.parametrize("window_rows", [20_000, 2])
def test_duckdb_writes_the_quarantine_lines_python_writes(tmp_path, monkeypatch, window_rows):
    """GX's SQL engine has DuckDB write each quarantined row's line; GX's pandas engine (object storage)
    has Python write it. Same rows, same rules and ledger reasons, same lines: the head byte for byte
    (Python's spacing, values as json.dumps writes them, cut at 120 characters), the row as the same JSON.
    DuckDB sorts the lines a window of rejected rows at a time: with windows of 2, the same, in file order."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from reverse_etl import gx_duckdb
    from reverse_etl.validate import SuiteRunner, _pandas_rejections, superseded_sql

    monkeypatch.setattr(gx_duckdb, "WINDOW_ROWS", window_rows)

    suite = [
        {"type": "expect_column_value_lengths_to_be_between", "kwargs": {"column": "s", "max_value": 5}},
        {"type": "expect_column_values_to_be_between", "kwargs": {"column": "n", "min_value": 0}},
        {
            "type": "expect_column_values_to_be_between",
            "kwargs": {"column": "born", "max_value": "2026-11-01"},
            "meta": {"rule": 'born "before" the window\'s end'},
        },
        {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "n"}},
    ]
    long = 'ä"\\/😀' * 40  # quotes, a backslash, a slash, non-ASCII: its JSON is cut inside an escape
    table = pa.table(
        {
            "_key": ["ok", "long", "two", None, "dup", "dup", None, "late"],
            "_deleted": [False, False, False, False, False, False, True, False],
            "_updated_at": [dt.datetime(2026, 10, 2, 3, 4, 5, 600)] * 8,
            "s": ["fine", long, "tab\there", "x", "y", "z", "gone", "é"],
            "n": [1, 2, -3, 4, 5, 6, None, None],
            "born": [dt.date(1990, 1, 1)] * 7 + [dt.date(2027, 1, 1)],
        }
    )
    pq.write_table(table, tmp_path / "q.parquet", row_group_size=3)
    url = (tmp_path / "q.parquet").as_uri()
    runner = SuiteRunner("t", suite)
    names = table.column_names
    assert gx_duckdb.usable(url, runner.suite.expectations)
    by_sql = [
        r for b in runner.iter_sql_rejections(url, None, 2, lambda s: superseded_sql(s, names)) for r in b
    ]
    by_python = [r for b in _pandas_rejections(runner, url, {}, 3, names) for r in b]

    assert [r.position for r in by_sql] == [1, 2, 3, 4, 6, 7]
    assert [r[:5] for r in by_sql] == [r[:5] for r in by_python]
    for sql, python in zip(by_sql, by_python, strict=True):
        assert json.loads(sql.line) == json.loads(python.line)
        assert sql.line.split(', "row": ')[0] == python.line.split(', "row": ')[0]
    lines = {r.key: json.loads(r.line) for r in by_sql}
    assert (
        lines["long"]["reason"]
        == f"expect_column_value_lengths_to_be_between on s: {json.dumps(long, ensure_ascii=False)[:120]}"
    )
    assert [f["value"] for f in lines["two"]["failures"]] == ["tab\there", -3]
    assert lines["dup"]["failures"][-1]["rule"].startswith("duplicate key: superseded")
    assert lines[None]["reason"] == "expect_column_values_to_not_be_null on _key: null"  # the deleted row
    assert (
        lines["late"]["reason"]
        == 'born "before" the window\'s end on born: "2027-01-01"; expect_column_values_to_not_be_null on n: null'
    )
    assert lines["late"]["row"]["_updated_at"] == "2026-10-02 03:04:05.000600"


def test_a_multi_column_rule_is_counted_and_sampled(tmp_path):
    """A rule on a ``column_list`` fails rows in both engines; its failures are counted per rule and the
    UI samples them, masked when one of its columns is personal."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from reverse_etl.ui.quarantine import Masker, _samples
    from reverse_etl.validate import SuiteRunner, _pandas_rejections, rule_of, superseded_sql

    table = pa.table({"_key": ["a", "b"], "_deleted": [False, False], "x": ["1", "1"], "y": ["1", "2"]})
    pq.write_table(table, tmp_path / "m.parquet")
    url = (tmp_path / "m.parquet").as_uri()
    runner = SuiteRunner(
        "t",
        [
            {
                "type": "expect_select_column_values_to_be_unique_within_record",
                "kwargs": {"column_list": ["x", "y"]},
            }
        ],
    )
    names = table.column_names
    by_sql = [
        r for b in runner.iter_sql_rejections(url, None, 5, lambda s: superseded_sql(s, names)) for r in b
    ]
    by_python = [r for b in _pandas_rejections(runner, url, {}, 5, names) for r in b]
    rule = ("expect_select_column_values_to_be_unique_within_record on ['x', 'y']", ("x", "y"))
    assert (
        [(r.key, set(r.rules)) for r in by_sql]
        == [(r.key, set(r.rules)) for r in by_python]
        == [("a", {rule})]
    )
    (tmp_path / "q.jsonl").write_text(by_sql[0].line + "\n")
    samples, counted, _ = _samples(str(tmp_path / "q.jsonl"), {rule}, Masker(frozenset({"y"}), reveal=False))
    assert counted == {rule: 1} == {rule_of(json.loads(by_sql[0].line)["failures"][0]): 1}
    assert samples[rule][0]["row"]["y"] == "***" and samples[rule][0]["row"]["x"] == "1"


def test_great_expectations_logs_warnings_only_unless_asked(tmp_path, monkeypatch):
    """At INFO, GX writes a DuckDB "Binder Error" into the task log for every data source (its PostgreSQL
    column introspection, then its own fallback): quiet by default, back with RETL_GX_LOG_LEVEL=INFO."""
    import logging

    import pyarrow as pa
    import pyarrow.parquet as pq

    from reverse_etl.gx_suite import quiet_gx_logs
    from reverse_etl.validate import SuiteRunner

    pq.write_table(
        pa.table({"_key": ["a", "b"], "_deleted": [False, False], "n": [1, -4]}), tmp_path / "d.parquet"
    )
    rules = [{"type": "expect_column_values_to_be_between", "kwargs": {"column": "n", "min_value": 0}}]

    def gx_info_lines() -> list[str]:
        seen: list[logging.LogRecord] = []
        catch = logging.Handler()
        catch.emit = seen.append
        gx_logger = logging.getLogger("great_expectations")  # every GX module's logger propagates here
        gx_logger.addHandler(catch)
        try:
            runner = SuiteRunner("t", rules)
            assert list(runner.file_failures((tmp_path / "d.parquet").as_uri(), {}, 10)) == [1]
        finally:
            gx_logger.removeHandler(catch)
        return [r.getMessage() for r in seen if r.levelno < logging.WARNING]

    assert gx_info_lines() == []
    monkeypatch.setenv("RETL_GX_LOG_LEVEL", "info")
    try:
        assert any("While introspecting columns" in line for line in gx_info_lines())
        monkeypatch.setenv("RETL_GX_LOG_LEVEL", "loud")
        with pytest.raises(ConfigError, match="RETL_GX_LOG_LEVEL='LOUD' is not a log level"):
            quiet_gx_logs()
    finally:
        monkeypatch.delenv("RETL_GX_LOG_LEVEL")
        quiet_gx_logs()


def test_validate_out_of_memory_says_which_setting_to_raise(tmp_path, monkeypatch):
    """The quarantined rows are sorted with their lines a window at a time: past RETL_VALIDATE_MEMORY (a
    window of wide rows) validate fails with a message naming it (a ConfigError: not retried), not with
    DuckDB's own error; a value that is not a size is refused by name before anything runs."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from reverse_etl.validate import SuiteRunner, superseded_sql

    rows = 20_000
    pq.write_table(
        pa.table(
            {
                "_key": [f"k{i}" for i in range(rows)],
                "_deleted": [False] * rows,
                "n": [-1] * rows,  # every row fails
                "note": [f"{i:06d}" + "x" * 2000 for i in range(rows)],  # a 2 KB line each
            }
        ),
        tmp_path / "d.parquet",
    )
    runner = SuiteRunner(
        "t", [{"type": "expect_column_values_to_be_between", "kwargs": {"column": "n", "min_value": 0}}]
    )
    url = (tmp_path / "d.parquet").as_uri()

    def rejected() -> int:
        batches = runner.iter_sql_rejections(url, {}, 1000, lambda source: superseded_sql(source, ["_key"]))
        return sum(len(batch) for batch in batches)

    assert rejected() == rows  # the default limit holds 40 MB of lines
    monkeypatch.setenv("RETL_VALIDATE_MEMORY", "16MB")
    with pytest.raises(ConfigError, match=r"ran out of memory .* 16MB \(RETL_VALIDATE_MEMORY\)"):
        rejected()
    monkeypatch.setenv("RETL_VALIDATE_MEMORY", "lots")
    with pytest.raises(ConfigError, match="RETL_VALIDATE_MEMORY='lots' is not a memory size"):
        rejected()
