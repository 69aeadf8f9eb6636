"""One place for the figures every benchmark writes: ``benchmarks/results/NAME.json``.

Each figure is ``{"what", "value", "unit", "baseline", "goal", "ratio", "met"}``: the measured value, the
baseline measured in the same run, the goal in words, the ratio value/baseline when both are numbers, and
whether the goal is met (``None`` when the figure has no goal). ``make bench`` prints them all as one table
(``benchmarks/summary.py``) and ``tests/unit/test_bench_results.py`` checks each benchmark writes them.
"""

from __future__ import annotations

import json
import math
import platform
import time
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def figure(
    what: str,
    value: Any,
    *,
    unit: str = "",
    baseline: Any = None,
    goal: str | None = None,
    met: bool | None = None,
    headline: bool = False,
) -> dict:
    """One measured figure; ``ratio`` is derived when value and baseline are numbers. A number that could not
    be measured (NaN: too short a run) is written as ``null``, which JSON can hold. ``headline``: one of the
    goals the README's table shows (without any, a benchmark shows every figure that has a goal)."""
    value, baseline = _number(value), _number(baseline)
    ratio = None
    if isinstance(value, int | float) and isinstance(baseline, int | float) and baseline:
        ratio = round(value / baseline, 3)
    return {
        "what": what,
        "value": value,
        "unit": unit,
        "baseline": baseline,
        "goal": goal,
        "ratio": ratio,
        "met": met,
        **({"headline": True} if headline else {}),
    }


def write_results(name: str, figures: list[dict], folder: Path | None = None, **extra: Any) -> Path:
    """Write ``NAME.json`` with the figures and anything else worth keeping (per-size details)."""
    folder = folder or RESULTS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.json"
    document = {
        "name": name,
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cpus": _cpus(), "python": platform.python_version()},
        "figures": figures,
        **extra,
    }
    path.write_text(json.dumps(document, indent=1, default=str) + "\n", encoding="utf-8")
    return path


def add_results_option(parser) -> None:
    """``--results DIR``: where ``NAME.json`` goes (tests write into a temporary folder)."""
    parser.add_argument(
        "--results", type=Path, default=RESULTS_DIR, help="folder of the results JSON (benchmarks/results)"
    )


def exit_status(figures: list[dict]) -> int:
    """A benchmark's exit status: 1 when a goal is not met (``met`` false), else 0 (``run_all`` reads it)."""
    return 1 if any(f["met"] is False for f in figures) else 0


def finish(name: str, figures: list[dict], folder: Path | None = None, **extra: Any) -> int:
    """Write the results, print every figure with its baseline and goal; the exit status: 1 when a goal is
    not met (``met`` false), else 0."""
    path = write_results(name, figures, folder, **extra)
    print()
    print(table([{"name": name, "figures": figures}]))
    print(f"written to {path}")
    return exit_status(figures)


def load_results(folder: Path | None = None) -> list[dict]:
    """Every ``NAME.json`` of the folder, by name."""
    folder = folder or RESULTS_DIR
    return [json.loads(p.read_text(encoding="utf-8")) for p in sorted(folder.glob("*.json"))]


MET = {True: "✓", False: "✗", None: "—"}


def rows(documents: list[dict], goals_only: bool = False) -> list[dict]:
    """One row of display strings per figure (``goals_only``: the headline figures of each benchmark, or all
    those that have a goal when it marks none)."""
    out = []
    for document in documents:
        figures = document.get("figures") or []
        if goals_only:
            figures = [f for f in figures if f.get("headline")] or [
                f for f in figures if f.get("goal") is not None
            ]
        for f in figures:
            unit = f.get("unit") or ""
            out.append(
                {
                    "benchmark": document.get("name", "?"),
                    "what": f.get("what", "?"),
                    "value": show(f.get("value"), unit),
                    "baseline": show(f.get("baseline"), unit),
                    "ratio": show(f.get("ratio")),
                    "goal": "—" if f.get("goal") is None else str(f["goal"]),
                    "met": MET.get(f.get("met"), "?"),
                }
            )
    return out


def table(
    documents: list[dict], columns: tuple = ("benchmark", "what", "value", "baseline", "ratio", "goal", "met")
) -> str:
    """The figures as a plain-text table."""
    found = rows(documents)
    widths = {c: max([len(c), *(len(r[c]) for r in found)]) for c in columns}
    right = {"value", "baseline", "ratio"}

    def line(cells: dict) -> str:
        return "  ".join(
            cells[c].rjust(widths[c]) if c in right else cells[c].ljust(widths[c]) for c in columns
        ).rstrip()

    header = line({c: c for c in columns})
    return "\n".join([header, "-" * len(header), *(line(r) for r in found)])


def markdown(documents: list[dict], goals_only: bool = False) -> str:
    """The figures as a Markdown table: all of them (docs/benchmarks.md), or the goals (README)."""
    columns = (
        ("what", "figure", "baseline", "goal", "met")
        if goals_only
        else ("benchmark", "what", "value", "baseline", "ratio", "goal", "met")
    )
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for r in rows(documents, goals_only):
        r = {**r, "figure": r["value"]}
        lines.append("| " + " | ".join(r[c].replace("|", "\\|") for c in columns) + " |")
    return "\n".join(lines)


def show(value: Any, unit: str = "") -> str:
    """A number as people read it (thousands separated, 2-3 significant digits), with its unit."""
    if value is None:
        return "—"
    if isinstance(value, bool) or not isinstance(value, int | float):
        text = str(value)
    elif isinstance(value, int):
        text = f"{value:,}"
    else:
        digits = min(6, max(0, 2 - math.floor(math.log10(abs(value))))) if value else 0
        text = f"{value:,.{digits}f}"
    return f"{text} {unit}" if unit else text


def short(count: int) -> str:
    """1,000,000 as 1M, 100,000 as 100k: sizes in the figures' names."""
    for unit, size in (("M", 1_000_000), ("k", 1_000)):
        if count >= size and count % (size // 10) == 0:
            return f"{count / size:g}{unit}"
    return f"{count:,}"


def _number(value: Any) -> Any:
    return None if isinstance(value, float) and value != value else value


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
