"""Regenerate the README's `make demo` output from a real run, so the README shows what the demo prints.

    python scripts/readme_demo.py                 # run the demo (--fresh, in a temporary folder), then write
    python scripts/readme_demo.py --from RESULT   # write from a demo's result JSON (.airflow/demo-result.json)
    python scripts/readme_demo.py --check         # exit 1 if the README is not what RECORDED renders to

The run's result is kept in ``scripts/demo-recorded.json`` (RECORDED); the README's block between the
markers below is ``demo_report.transcript`` of it, paths shown as under the repository. A test checks
that the README block is that rendering, and the e2e test that a fresh demo counts what RECORDED counts.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from demo_report import transcript

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
RECORDED = REPO / "scripts" / "demo-recorded.json"
START, END = "<!-- demo-output:start -->", "<!-- demo-output:end -->"


def block(result: dict) -> str:
    """What goes between the markers: the demo's output as a fenced block."""
    return f"{START}\n```\n{transcript(result)}\n```\n{END}"


def readme_block(text: str) -> str:
    """The README's current block, markers included."""
    start, end = text.find(START), text.find(END)
    if start < 0 or end < start:
        raise SystemExit(
            f"{README.name} has no {START} ... {END} block: put the markers around the demo output"
        )
    return text[start : end + len(END)]


def run_demo() -> dict:
    """A fresh demo in a temporary RETL_LOCAL_DIR (the repository's .airflow/ is left alone)."""
    folder = Path(tempfile.mkdtemp(prefix="retl-readme-demo-"))
    try:
        env = {**os.environ, "RETL_LOCAL_DIR": str(folder)}
        subprocess.run([sys.executable, str(REPO / "scripts" / "demo.py"), "--fresh"], env=env, check=True)
        return json.loads((folder / ".airflow" / "demo-result.json").read_text())
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/readme_demo.py", description=__doc__.splitlines()[0])
    parser.add_argument("--from", dest="source", type=Path, help="a demo's result JSON instead of a new run")
    parser.add_argument("--check", action="store_true", help="only compare the README with RECORDED")
    args = parser.parse_args(argv)
    text = README.read_text()
    if args.check:
        same = readme_block(text) == block(json.loads(RECORDED.read_text()))
        print("README demo block is up to date" if same else "README demo block differs: run this script")
        return 0 if same else 1
    result = json.loads(args.source.read_text()) if args.source else run_demo()
    RECORDED.write_text(json.dumps(result, indent=1) + "\n")
    README.write_text(text.replace(readme_block(text), block(result)))
    print(f"wrote {RECORDED.relative_to(REPO)} and the demo block of {README.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
