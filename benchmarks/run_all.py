"""Run every benchmark, then print one table of their figures (``make bench``).

Each script runs in its own process with its default sizes and writes ``benchmarks/results/NAME.json``; a
script that fails does not stop the others. At the end ``summary.py`` prints every figure with its
baseline and goal, and a line per script: ``ok``, ``goal not met`` (exit 1 with fresh results) or
``failed`` (no fresh results: it crashed, or is missing). The exit status is 1 unless every script is ok.

    .venv/bin/python benchmarks/run_all.py [bench_ui bench_splio ...]   # a subset, by script name
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from results import RESULTS_DIR  # noqa: E402

# (script, the results' name), in the order make bench runs them
BENCHMARKS = [
    ("bench_extract_validate", "extract_validate"),
    ("bench_ledger", "ledger"),
    ("bench_delivery", "delivery"),
    ("bench_connectif", "connectif"),
    ("bench_batches", "batches"),
    ("bench_splio", "splio"),
    ("bench_ui", "ui"),
    ("bench_task_cost", "task_cost"),
    ("bench_scale", "scale"),  # needs PostgreSQL and Redis, like make stack
]


def run(script: str, name: str) -> str:
    """Run one script; its status from its exit code and whether it wrote fresh results."""
    path = HERE / f"{script}.py"
    if not path.exists():
        return "failed (missing)"
    out = RESULTS_DIR / f"{name}.json"
    started = time.time()
    print(f"\n==> {script}", flush=True)
    code = subprocess.run([sys.executable, str(path)], cwd=HERE.parent).returncode
    fresh = out.exists() and out.stat().st_mtime >= started
    if not fresh:
        return f"failed (exit {code}, no {out.name})"
    return "ok" if code == 0 else f"goal not met (exit {code})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scripts", nargs="*", help="run only these (default: all)")
    args = parser.parse_args(argv)
    chosen = [(s, n) for s, n in BENCHMARKS if not args.scripts or s in args.scripts]
    unknown = set(args.scripts) - {s for s, _ in BENCHMARKS}
    if unknown:
        parser.error(f"unknown benchmarks: {', '.join(sorted(unknown))}")
    statuses = {script: run(script, name) for script, name in chosen}
    print("\n==> summary (benchmarks/results/*.json)\n", flush=True)
    subprocess.run([sys.executable, str(HERE / "summary.py")], check=False)
    print()
    for script, status in statuses.items():
        print(f"{script:<24} {status}")
    return 0 if all(s == "ok" for s in statuses.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
