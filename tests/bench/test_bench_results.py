"""Every benchmark runs in its quick mode and writes its figures (benchmarks/results.py) in the shape the
summary reads; the summary prints a row for each. Nothing here looks at a figure's speed: a goal not met
(exit status 1) is a benchmark's verdict, not a failed test.

Each script runs as ``make bench`` runs it (its own process), with small sizes and ``--results`` in a
temporary folder, so the real benchmarks/results/ is left alone. A benchmark joins with one line in
``BENCHMARKS``: (script, its quick options, the results' name).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from sandbox.env import REPO

BENCHMARKS = [
    ("bench_extract_validate", ["--sizes", "2000"], "extract_validate"),
    ("bench_ledger", ["--records", "2000", "--stores", "sqlite"], "ledger"),
    ("bench_task_cost", ["--repeat", "1", "--kinds", "report"], "task_cost"),
    (
        "bench_batches",
        ["--customers", "2000", "--contacts", "5000", "--order-days", "1", "--connectif-poll", "0.2"],
        "batches",
    ),
    (
        "bench_ui",
        ["--records", "2000", "--runs", "5", "--repeat", "3", "--accounts", "1", "--minute-days", "1"],
        "ui",
    ),
    ("bench_splio", ["--sizes", "2000", "5000"], "splio"),
    (
        "bench_connectif",
        [
            "--sizes",
            "300",
            "--per-record-max",
            "300",
            "--limit",
            "200",
            "--window",
            "1",
            "--poll",
            "0.1",
            *["--real-windows", "0"],
        ],
        "connectif",
    ),
    (
        "bench_delivery",
        ["--limit", "20", "--window", "1", "--workers", "1", "--seconds", "4", "--skip-bulk"],
        "delivery",
    ),
]
KEYS = {"what", "value", "unit", "baseline", "goal", "ratio", "met"}


def run(*command: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *command], cwd=REPO, capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize(("script", "options", "name"), BENCHMARKS, ids=[b[0] for b in BENCHMARKS])
def test_the_benchmark_writes_its_figures(tmp_path, script, options, name):
    results = tmp_path / "results"
    extra = ["--cache", str(tmp_path / "cache")] if script == "bench_batches" else []
    done = run(f"benchmarks/{script}.py", *options, *extra, "--results", str(results))
    assert done.returncode in (0, 1), done.stderr[-3000:]  # 1: a goal not met, which is not this test's
    assert [p.name for p in results.iterdir()] == [f"{name}.json"], done.stderr[-3000:]

    document = json.loads((results / f"{name}.json").read_text())
    assert document["name"] == name and document["measured_at"]
    figures = document["figures"]
    assert figures, "no figures"
    for f in figures:
        assert f.keys() >= KEYS, f
        assert isinstance(f["what"], str) and f["what"]
        assert f["value"] is not None and f["value"] != "", f"not measured: {f}"
        if f["unit"] or isinstance(f["baseline"], int | float):  # a numeric figure
            assert isinstance(f["value"], int | float) and not isinstance(f["value"], bool), f
        assert f["met"] in (True, False, None), f
        assert f["goal"] is not None or f["met"] is None, f"a verdict without a goal: {f}"
    # make bench says "ok" or "goal not met" by the exit status alone
    assert done.returncode == (1 if any(f["met"] is False for f in figures) else 0), done.stderr[-3000:]

    shown = run("benchmarks/summary.py", "--results", str(results))
    assert shown.returncode == 0, shown.stderr
    rows = shown.stdout.splitlines()[2:]
    assert len(rows) == len(figures)
    for row, f in zip(rows, figures, strict=True):
        assert row.startswith(name) and f["what"] in row and row.rstrip()[-1] in "✓✗—"


def test_the_summary_rewrites_the_readme_and_docs_tables(tmp_path, monkeypatch):
    """``summary.py --update``: the README's block gets the headline goals, the docs' block every figure."""
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    from results import figure, write_results

    results = tmp_path / "results"
    write_results(
        "demo",
        [
            figure("requests per 1M", 46, baseline=1000, goal="<= 60", met=True, headline=True),
            figure("429s", 0, goal="0", met=True),
            figure("seconds", 1.5, unit="s"),
        ],
        results,
    )
    page = tmp_path / "page.md"
    page.write_text(
        "intro\n<!-- bench-goals:start -->\nold\n<!-- bench-goals:end -->\n"
        "middle\n<!-- bench-all:start -->\n<!-- bench-all:end -->\nend\n"
    )
    done = run("benchmarks/summary.py", "--results", str(results), "--update", str(page))
    assert done.returncode == 0, done.stderr
    text = page.read_text()
    goals = text.split("<!-- bench-goals:start -->\n")[1].split("<!-- bench-goals:end -->")[0]
    every = text.split("<!-- bench-all:start -->\n")[1].split("<!-- bench-all:end -->")[0]
    assert goals.splitlines() == [
        "| what | figure | baseline | goal | met |",
        "|---|---|---|---|---|",
        "| requests per 1M | 46 | 1,000 | <= 60 | ✓ |",
    ]
    assert [line.split(" | ")[1] for line in every.splitlines()[2:]] == ["requests per 1M", "429s", "seconds"]
    assert "| demo | seconds | 1.50 s | — | — | — | — |" in every
    assert text.startswith("intro\n") and "\nmiddle\n" in text and text.endswith("end\n")
