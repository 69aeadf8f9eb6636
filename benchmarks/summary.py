"""Every benchmark's figures in one table: value, baseline, ratio, goal, met (✓ met, ✗ not met, — no goal).

Reads ``benchmarks/results/*.json`` (written by each script through ``results.write_results``). ``--markdown``
prints the table as Markdown (``--goals``: the headline goals, in the columns the README shows);
``--update FILE...`` rewrites the blocks between ``<!-- bench-goals:start -->`` / ``<!-- bench-goals:end -->``
(the headline goals) and ``<!-- bench-all:start -->`` / ``<!-- bench-all:end -->`` (every figure) in the
files named, as for README.md and docs/benchmarks.md after a full ``make bench``.

    .venv/bin/python benchmarks/summary.py [--results DIR] [--markdown [--goals]] [--update README.md docs/benchmarks.md]
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from results import RESULTS_DIR, load_results, markdown, table

BLOCKS = {"bench-goals": True, "bench-all": False}  # marker name -> goals only


def update(path: Path, documents: list[dict]) -> int:
    """Replace the marked blocks of ``path``; the number replaced."""
    text = path.read_text(encoding="utf-8")
    replaced = 0
    for marker, goals_only in BLOCKS.items():
        pattern = re.compile(rf"(<!-- {marker}:start -->\n).*?(<!-- {marker}:end -->)", re.S)
        body = markdown(documents, goals_only) + "\n"
        text, n = pattern.subn(lambda m, body=body: m.group(1) + body + m.group(2), text)
        replaced += n
    path.write_text(text, encoding="utf-8")
    return replaced


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=RESULTS_DIR, help="folder of the results JSON")
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table")
    parser.add_argument("--goals", action="store_true", help="only the figures that have a goal")
    parser.add_argument("--update", type=Path, nargs="+", metavar="FILE", help="rewrite the marked blocks")
    args = parser.parse_args(argv)
    documents = load_results(args.results)
    if not documents:
        print(f"no results in {args.results}: run make bench", file=sys.stderr)
        return 1
    if args.update:
        for path in args.update:
            print(f"{path}: {update(path, documents)} table(s) updated")
        return 0
    if args.markdown:
        print(markdown(documents, args.goals))
    else:
        print(table(documents))
    return 0


if __name__ == "__main__":
    sys.exit(main())
