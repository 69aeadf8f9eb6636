"""Benchmark: build and upload the Splio Referral CSV for 100k and 1M referral contacts.

For each size, a child process writes the validated rows (a Parquet file with no rejected positions, read
through ``staging.iter_valid`` as after the validate task) and a fresh child process runs ``SplioReferralUploadOperator``'s own steps on them: build the CSV
parts (200,000 lines each), upload them with ``SplioSFTPHook`` to the SFTP sandbox (asyncssh, loopback, in
this parent process), and record every delivery in the SQLite ledger. It reports seconds per step, rows
per second, megabytes sent, and the peak RSS of the measuring process over its baseline after imports
(must stay flat with size: rows stream through in chunks).

The figures go to benchmarks/results/splio.json: per size, rows per second (build + upload), the ledger's
seconds and the peak memory; the goal is the largest size's peak at most 1.5 times the smallest's. A quick
run (the tests): ``--sizes 2000 5000``.

    .venv/bin/python benchmarks/bench_splio.py [--sizes 100000 1000000] [--results DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
for _path in (str(REPO / "plugins"), str(REPO), str(REPO / "benchmarks")):
    if _path not in sys.path:
        sys.path.insert(0, _path)

from results import add_results_option, figure, finish, short  # noqa: E402

MEMORY_GOAL = 1.5  # the largest size's peak over the smallest's: rows stream through in chunks


def _say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def prepare(path: str, size: int) -> None:
    """Synthetic validated referral contacts, written in chunks (a tenth with a line break to fold)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    chunk = 50_000
    writer = None
    for first in range(0, size, chunk):
        n = min(chunk, size - first)
        ids = [f"R{first + i:08d}" for i in range(n)]
        table = pa.table(
            {
                "_key": ids,
                "_deleted": [False] * n,
                "unique_id": ids,
                "email": [f"referral{first + i}@example.com" for i in range(n)],
                "lastname": [f"Nowak{i % 97}" + ("\nJr" if i % 10 == 0 else "") for i in range(n)],
                "firstname": [("Zoë", "Дмитро", "Anna", "José")[i % 4] for i in range(n)],
                "language": [("fr", "en", "pl", "es")[i % 4] for i in range(n)],
                "cellphone": [f"+336{first + i:08d}" for i in range(n)],
                "referrer_code": [f"REF{first + i:07d}" for i in range(n)],
                "referred_by": [None if i % 3 else f"REF{i:07d}" for i in range(n)],
                "loyalty_card": [None if i % 2 else f"29{first + i:011d}" for i in range(n)],
            }
        )
        if writer is None:
            writer = pq.ParquetWriter(path, table.schema)
        writer.write_table(table)
    writer.close()


def measure(valid_path: str, size: int) -> dict:
    """Runs in a fresh process with the environment the parent set."""
    from types import SimpleNamespace

    from reverse_etl.csvfile import window_regex
    from reverse_etl.hooks.splio import SplioSFTPHook
    from reverse_etl.ledger import Ledger
    from reverse_etl.operators.splio import SplioReferralUploadOperator
    from reverse_etl.staging import iter_parquet

    operator = SplioReferralUploadOperator(task_id="bench", manifest={})
    hook = SplioSFTPHook()
    context = {"dag": SimpleNamespace(dag_id="bench_splio"), "run_id": f"bench-{size}"}
    manifest = {"valid_path": Path(valid_path).as_uri(), "valid": size}
    ledger = Ledger(operator.destination, operator.entity, context["run_id"])
    ledger.lookup(["warm-up"])  # the state store's engine and tables exist before the baseline
    next(iter(iter_parquet(manifest["valid_path"], 10)))  # pyarrow and the parquet reader are loaded
    baseline = _rss_mb()
    report = {"deletes_skipped": 0, "to_send": 0}
    t0 = time.monotonic()
    parts = operator._build(hook, manifest, report, context, 200_000)
    t1 = time.monotonic()
    names = operator._names(hook, operator.default_pattern, "20261031", len(parts))
    sent = sum(hook.upload(str(p), n) for p, n in zip(parts, names, strict=True))
    hook.remove_others(window_regex(operator.default_pattern, "20261031"), set(names))
    t2 = time.monotonic()
    recorded = operator._record_delivery(ledger, manifest, names, 199_999)
    t3 = time.monotonic()
    return {
        "rows": report["to_send"],
        "files": len(parts),
        "mb": sent / 1e6,
        "build_s": t1 - t0,
        "upload_s": t2 - t1,
        "ledger_s": t3 - t2,
        "recorded": recorded,
        "peak_mb": _rss_mb() - baseline,
        "folded": report["folded_line_breaks"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    add_results_option(parser)
    args = parser.parse_args(argv)
    if args.child:
        mode, path, size = args.child
        if mode == "prepare":
            prepare(path, int(size))
        else:
            print(json.dumps(measure(path, int(size))))
        return 0

    from sandbox.env import airflow_env, connections_env
    from sandbox.sftp import SFTPSandbox

    results = []
    with (
        tempfile.TemporaryDirectory(prefix="retl-bench-splio-") as tmp,
        SFTPSandbox(Path(tmp) / "sftp") as sftp,
    ):
        for size in args.sizes:
            work = Path(tmp) / str(size)
            work.mkdir()
            env = os.environ.copy()
            env.update(airflow_env(work / "airflow"))
            env.update(
                connections_env(
                    warehouse=str(work / "unused.duckdb"),
                    state=str(work / "state.db"),
                    splio_sftp=sftp.connection(),
                )
            )
            env["RETL_STAGING_URL"] = (work / "staging").as_uri()
            from reverse_etl.store import init_store

            init_store(f"sqlite:///{work / 'state.db'}")
            valid = str(work / "valid.parquet")
            _say(f"{size:,} rows: preparing valid.parquet")
            subprocess.run(
                [sys.executable, __file__, "--child", "prepare", valid, str(size)], env=env, check=True
            )
            _say(f"{size:,} rows: build, upload, ledger")
            done = subprocess.run(
                [sys.executable, __file__, "--child", "measure", valid, str(size)],
                env=env,
                check=True,
                capture_output=True,
                text=True,
            )
            results.append(json.loads(done.stdout.strip().splitlines()[-1]))
            assert sum(len(b) for b in sftp.files().values()) >= results[-1]["mb"] * 1e6 * 0.99
            for f in (Path(tmp) / "sftp").iterdir():
                f.unlink()

    print()
    print("Splio Referral: build the CSV parts and upload them over SFTP (loopback asyncssh server)")
    header = f"{'rows':>10} {'files':>5} {'MB':>7} {'build s':>8} {'upload s':>9} {'ledger s':>9} {'rows/s (build+upload)':>22} {'peak MB over baseline':>22}"
    print(header)
    print("-" * len(header))
    for r in results:
        rate = r["rows"] / (r["build_s"] + r["upload_s"])
        print(
            f"{r['rows']:>10,} {r['files']:>5} {r['mb']:>7.1f} {r['build_s']:>8.1f} {r['upload_s']:>9.1f} "
            f"{r['ledger_s']:>9.1f} {rate:>22,.0f} {r['peak_mb']:>22.0f}"
        )
    if len(results) > 1:
        small, big = results[0], results[-1]
        print(
            f"\n{big['rows'] // small['rows']}x the rows: peak memory ratio {big['peak_mb'] / max(small['peak_mb'], 1):.2f}, "
            f"time ratio {(big['build_s'] + big['upload_s']) / (small['build_s'] + small['upload_s']):.1f}"
        )
    return finish("splio", figures(results), args.results, sizes=results)


def figures(results: list[dict]) -> list[dict]:
    out = []
    for r in results:
        size = f"{r['rows']:,} rows"
        out += [
            figure(
                f"Splio Referral CSV, {size}: build + upload",
                round(r["rows"] / (r["build_s"] + r["upload_s"])),
                unit="rows/s",
            ),
            figure(
                f"Splio Referral, {size}: deliveries recorded in the ledger",
                round(r["ledger_s"], 2),
                unit="s",
            ),
        ]
    small, big = results[0], results[-1]
    out.append(
        figure(
            f"Splio Referral, {short(big['rows'])} rows: peak memory (baseline: {short(small['rows'])})",
            round(big["peak_mb"], 1),
            unit="MB",
            baseline=round(small["peak_mb"], 1),
            goal=f"<= {MEMORY_GOAL:g} x baseline" if len(results) > 1 else None,
            met=big["peak_mb"] <= MEMORY_GOAL * max(small["peak_mb"], 1) if len(results) > 1 else None,
            headline=len(results) > 1,
        )
    )
    return out


if __name__ == "__main__":
    sys.exit(main())
