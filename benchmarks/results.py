"""One place for the figures every benchmark writes: ``benchmarks/results/NAME.json``.

Each figure is ``{"what", "value", "unit", "baseline", "goal", "ratio", "met"}``: the measured value, the
baseline measured in the same run, the goal in words, the ratio value/baseline when both are numbers, and
whether the goal is met (``None`` when the figure has no goal). ``make bench`` prints them all as one table
(``benchmarks/summary.py``) and ``tests/unit/test_bench_results.py`` checks each benchmark writes them.
"""

from __future__ import annotations

import json
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
) -> dict:
    """One measured figure; ``ratio`` is derived when value and baseline are numbers."""
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


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
