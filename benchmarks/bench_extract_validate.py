"""Benchmark: the engine's real extract + validate of ``voucherify.customers`` at several warehouse sizes.

What is measured
    For each size (customers in the sample warehouse,
    ``sandbox.warehouse.build_duckdb(..., only="customers")``) one fresh Python process runs
    ``reverse_etl.extract.extract`` and then ``reverse_etl.validate.validate`` (``max_rejected_share=1.0``)
    over the FULL window [2026-10-01, 2026-11-01), which holds every row, with the engine's default chunk
    size (``RETL_CHUNK_ROWS``, 50,000 unless ``--chunk-rows`` says otherwise). Staging (Parquet files,
    quarantine JSONL) and the SQLite state store (ledger rows of rejected records) live in a temporary
    AIRFLOW_HOME set up as ``sandbox/env.py`` does; it is removed at the end.

    Per size the child process reports
      * extract s / validate s: wall seconds of each call (the engine's own ``seconds`` / ``validate_seconds``
        are shown beside them);
      * rows/s: rows / (extract s + validate s), i.e. extract + validate + staging together;
      * peak RSS: ``getrusage(RUSAGE_SELF).ru_maxrss`` at the end (Linux: KiB; shown in MiB);
      * baseline: the same figure right after importing everything (pandas, pyarrow, duckdb, Great
        Expectations, Airflow's SDK, the engine) and a warm-up extract + validate of the last day of the window
        (a dry run: Airflow's plugins, loaded by the first connection lookup, and the lazy imports, about
        1.5 s a task process pays once), so that *peak over baseline* is what the data cost;
      * a breakdown of validate: Great Expectations setup, "GX suite over the file" (GX's SQL engine on
        DuckDB over the staged file and DuckDB's query of the quarantined whole rows,
        ``SuiteRunner.iter_sql_rejections``; with GX's pandas engine, its blocks, ``iter_failures``), the
        separate DuckDB duplicate-key pass (pandas engine only: with DuckDB it is in the rows query), the
        quarantine writes, the ledger writes, the Parquet writes (none since validate keeps no second file),
        and "other" (the rejected rows' Python work, the rejected-positions file).
    Light wrappers around those functions time them and print progress; they do not change what runs.

    Baseline, measured in the same run: DuckDB's own ``COPY (<the mapping SQL, rendered for the same
    window>) TO 'x.parquet'`` from the same warehouse, in a fresh process of its own (so it adds nothing to
    the engine's memory), once right before and once right after the engine's child; the baseline is the
    mean of the two, so both sides see the same load. Goal: extract + validate within 1.5x of that COPY.

    Floor, measured in the same run (``floor_sql.py``, a fresh process after the engine): the same COPY to
    a staged Parquet file, then the same suite written as plain DuckDB SQL over it, with the quarantine
    (rows, rules broken, superseded duplicates, missing keys) written by one more COPY; no ledger, no
    Python per row. Its ratio to COPY is what validating costs at all; the engine over the floor is what
    Great Expectations, Python and the ledger add.
    The figures go to ``benchmarks/results/extract_validate.json`` (``benchmarks/results.py``).

How to read it
    Flat memory means peak-over-baseline does not grow with the number of rows: the ratio between the largest
    and the smallest size should be about 1 (streaming in chunks), whereas a ratio near the size ratio (10 for
    100k vs 1M) would mean something holds the whole delta in memory. rows/s should stay about the same
    across sizes; if it falls with size, some step is worse than linear.

    .venv/bin/python benchmarks/bench_extract_validate.py [--sizes 100000,1000000] [--chunk-rows 50000]
    .venv/bin/python benchmarks/bench_extract_validate.py --sizes 2000 --no-results   # a quick smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WINDOW_START = "2026-10-01T00:00:00+00:00"
WINDOW_END = "2026-11-01T00:00:00+00:00"
DESTINATION, ENTITY = "voucherify", "customers"
MIB = 1024.0  # ru_maxrss is in KiB on Linux
GOAL_RATIO = 1.5  # extract + validate within 1.5x of DuckDB's COPY of the same mapping
GOAL_MEMORY_RATIO = 1.3  # peak RSS of the largest size within 1.3x of the smallest
GOAL_MEMORY_MB = 1024.0
COPY_CODE = """
import resource, sys, time, duckdb
sql, db, out = sys.argv[1:4]
con = duckdb.connect(db, read_only=True)
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
started, cpu = time.monotonic(), time.process_time()
con.execute(f"COPY (\\n{sql}\\n) TO '{out}' (FORMAT parquet)")
print(time.monotonic() - started, time.process_time() - cpu, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss)
"""


def _paths() -> None:
    for path in (str(REPO / "plugins"), str(REPO)):
        if path not in sys.path:
            sys.path.insert(0, path)


def _say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------- parent
def warehouse_for(size: int, seed: int, cache: Path, rebuild: bool) -> Path:
    """The cached sample warehouse of ``size`` customers, built (in a subprocess) when missing."""
    path = cache / f"customers-{size}-seed{seed}.duckdb"
    if path.exists() and not rebuild:
        _say(f"size {size:,}: reusing {path}")
        return path
    cache.mkdir(parents=True, exist_ok=True)
    partial = cache / f"customers-{size}-seed{seed}.partial.duckdb"
    _say(f"size {size:,}: building {path} (only customers) ...")
    started = time.monotonic()
    # A subprocess keeps this parent small: a child started from a big parent may inherit its peak RSS.
    subprocess.run(
        [
            sys.executable,
            "-m",
            "sandbox.warehouse",
            "--path",
            str(partial),
            "--customers",
            str(size),
            "--seed",
            str(seed),
            "--only",
            "customers",
        ],
        cwd=REPO,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    Path(f"{partial}.wal").unlink(missing_ok=True)
    os.replace(partial, path)
    _say(f"size {size:,}: built in {time.monotonic() - started:.1f} s")
    return path


def mapping_sql() -> str:
    """The mapping SQL rendered for the benchmark's window, as the engine's extract renders it."""
    import datetime as dt

    from reverse_etl.extract import render_sql
    from reverse_etl.window import Window

    window = Window(dt.datetime.fromisoformat(WINDOW_START), dt.datetime.fromisoformat(WINDOW_END))
    return render_sql(DESTINATION, ENTITY, window, "duckdb")


def copy_seconds(warehouse: Path, home: Path) -> tuple[float, float, int]:
    """DuckDB's COPY of the mapping to Parquet, timed inside a fresh process (its start not counted): wall
    seconds, CPU seconds (all threads; steadier than wall on a shared machine) and the KiB its peak RSS grew
    by (DuckDB keeps the warehouse blocks it read in its buffer pool: that grows with the rows read)."""
    out = home / "copy-baseline.parquet"
    done = subprocess.run(
        [sys.executable, "-c", COPY_CODE, mapping_sql(), str(warehouse), str(out)],
        cwd=REPO,
        check=True,
        capture_output=True,
        text=True,
    )
    out.unlink(missing_ok=True)
    wall, cpu, kb = done.stdout.strip().splitlines()[-1].split()
    return float(wall), float(cpu), int(kb)


def run_size(size: int, warehouse: Path, root: Path, args: argparse.Namespace) -> dict:
    """One size in a fresh interpreter, with its own AIRFLOW_HOME, staging folder and state store."""
    from sandbox.env import airflow_env, connections_env

    home = root / f"size-{size}"
    home.mkdir(parents=True)
    env = os.environ.copy()
    env.update(airflow_env(home))
    env.update(connections_env(warehouse=str(warehouse), state=str(home / "state.db")))
    env["RETL_RATE_LIMIT_URL"] = f"sqlite:///{home / 'ratelimit.sqlite'}"
    from reverse_etl.store import init_store

    init_store(f"sqlite:///{home / 'state.db'}")
    if args.chunk_rows:
        env["RETL_CHUNK_ROWS"] = str(args.chunk_rows)
    else:
        env.pop("RETL_CHUNK_ROWS", None)  # the engine's default
    # Temporary files (Great Expectations' ephemeral context, DuckDB spills) land in the temp home too.
    (home / "tmp").mkdir()
    env["TMPDIR"] = str(home / "tmp")
    result_path = home / "result.json"
    spec = {
        "size": size,
        "result": str(result_path),
        "warehouse": str(warehouse),
        "profile": args.profile,
        "verbose": args.verbose,
    }
    copy_before, copy_cpu_before, copy_kb_before = copy_seconds(warehouse, home)
    _say(
        f"size {size:,}: baseline DuckDB COPY {copy_before:.2f} s; child process starting (AIRFLOW_HOME={home})"
    )
    started = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(spec)], cwd=home, env=env
    )
    try:
        code = proc.wait(timeout=args.timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return {"size": size, "error": f"timed out after {args.timeout:.0f} s"}
    if code != 0 or not result_path.exists():
        return {"size": size, "error": f"child exited with {code}"}
    result = json.loads(result_path.read_text())
    result["child_wall_s"] = round(time.monotonic() - started, 2)
    copy_after, copy_cpu_after, copy_kb_after = copy_seconds(warehouse, home)
    result["copy_s"] = [round(copy_before, 3), round(copy_after, 3)]
    result["copy_cpu_s"] = round((copy_cpu_before + copy_cpu_after) / 2, 3)
    result["baseline_copy_s"] = round((copy_before + copy_after) / 2, 3)
    result["copy_growth_kb"] = max(copy_kb_before, copy_kb_after)
    result["total_s"] = round(result["extract_s"] + result["validate_s"], 3)
    result["ratio"] = round(result["total_s"] / result["baseline_copy_s"], 2)
    floor = floor_run(warehouse, home)
    result["floor"] = {k: round(v, 3) if isinstance(v, float) else v for k, v in floor.items()}
    result["floor_s"] = round(floor["copy_s"] + floor["validate_s"], 3)
    # Against the COPY of its own process: the engine's COPY runs minutes apart, and on a shared machine
    # two COPYs a minute apart differ by up to 2x.
    result["floor_ratio"] = round(result["floor_s"] / floor["copy_s"], 2)
    return result


def floor_run(warehouse: Path, home: Path) -> dict:
    """The same mapping and suite as plain DuckDB SQL (``floor_sql``), in a fresh process of its own."""
    from floor_sql import floor_seconds

    from reverse_etl.validate import suite_parameters

    parameters = suite_parameters({"start": WINDOW_START, "end": WINDOW_END})
    suite = REPO / "include" / "expectations" / DESTINATION / f"{ENTITY}.json"
    return floor_seconds(mapping_sql(), warehouse, home / "floor", suite, parameters)


def print_report(results: list[dict], chunk_rows: int | None) -> None:
    ok = [r for r in results if "error" not in r]
    print()
    print(
        f"extract + validate, voucherify.customers, full window [{WINDOW_START[:10]}, {WINDOW_END[:10]}), "
        f"chunk rows {ok[0]['chunk_rows'] if ok else chunk_rows or 'default'}"
    )
    header = (
        f"{'size':>10} {'rows':>10} {'extract s':>10} {'validate s':>11} {'COPY s':>7} {'ratio':>6} "
        f"{'rows/s':>9} {'peak RSS MB':>12} {'baseline MB':>12} {'peak-over-baseline MB':>22}"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        if "error" in r:
            print(f"{r['size']:>10,} ERROR: {r['error']}")
            continue
        print(
            f"{r['size']:>10,} {r['rows']:>10,} {r['extract_s']:>10.2f} {r['validate_s']:>11.2f} "
            f"{r['baseline_copy_s']:>7.2f} {r['ratio']:>6.2f} {r['rows_per_s']:>9,.0f} {r['peak_kb'] / MIB:>12.1f} {r['baseline_kb'] / MIB:>12.1f} "
            f"{(r['peak_kb'] - r['baseline_kb']) / MIB:>22.1f}"
        )
    print()
    print("details per size (engine-reported seconds, peak after extract, validate breakdown in seconds):")
    for r in ok:
        b = r["validate_breakdown"]
        print(
            f"  {r['size']:>9,}: engine extract {r['engine_extract_s']:.2f} s, engine validate "
            f"{r['engine_validate_s']:.2f} s; valid {r['valid']:,}, rejected {r['rejected']:,} "
            f"({r['rejected_share'] * 100:.2f}%), deletes {r['deletes']:,}; "
            f"warehouse rows {r['warehouse_rows']:,}"
        )
        print(
            f"  {'':>9}  peak RSS after extract {r['peak_after_extract_kb'] / MIB:.1f} MB "
            f"(+{(r['peak_after_extract_kb'] - r['baseline_kb']) / MIB:.1f} over baseline); "
            f"VmHWM {r['vmhwm_kb'] / MIB:.1f} MB; staged files {r['staged_mb']:.1f} MB; "
            f"DuckDB COPY before/after {r['copy_s'][0]:.2f} / {r['copy_s'][1]:.2f} s"
        )
        print(
            f"  {'':>9}  CPU seconds (all threads; steadier than wall under load): extract "
            f"{r['extract_cpu_s']:.2f} + validate {r['validate_cpu_s']:.2f} = "
            f"{r['extract_cpu_s'] + r['validate_cpu_s']:.2f} vs COPY {r['copy_cpu_s']:.2f} = "
            f"{(r['extract_cpu_s'] + r['validate_cpu_s']) / max(r['copy_cpu_s'], 1e-9):.2f}x"
        )
        print(
            f"  {'':>9}  floor (COPY + the suite as plain DuckDB SQL + quarantine COPY, no ledger): "
            f"{r['floor_s']:.2f} s = {r['floor_ratio']:.2f}x its own COPY ({r['floor']['copy_s']:.2f} s; its "
            f"validate {r['floor']['validate_s']:.2f} s, {r['floor']['rejected']:,} quarantined); the engine's "
            f"validate is {r['validate_s'] / max(r['floor']['validate_s'], 1e-9):.1f}x the floor's"
        )
        print(
            f"  {'':>9}  validate: GX setup {b['gx_setup']:.2f}, GX suite over the file {b['gx_chunks']:.2f}, "
            f"duplicate-key pass {b['dedupe']:.2f}, quarantine writes {b['quarantine_write']:.2f}, ledger "
            f"{b['ledger']:.2f}, parquet writes {b['parquet_write']:.2f}, other {b['other']:.2f} "
            f"({b['chunks']} chunks of whole rows)"
        )
        if r.get("validate_fixed_s") is not None:
            rest = r["validate_s"] - r["validate_fixed_s"]
            print(
                f"  {'':>9}  validate's cost whatever the rows (the suite over 1 staged row): "
                f"{r['validate_fixed_s']:.2f} s ({r['validate_fixed_cpu_s']:.2f} s CPU); the rest, "
                f"{rest:.2f} s, is {rest / max(r['floor']['validate_s'], 1e-9):.1f}x the floor's validate"
            )
    if len(ok) >= 2:
        small, large = min(ok, key=lambda r: r["size"]), max(ok, key=lambda r: r["size"])
        over_small = (small["peak_kb"] - small["baseline_kb"]) / MIB
        over_large = (large["peak_kb"] - large["baseline_kb"]) / MIB
        ratio = over_large / over_small if over_small > 0 else float("nan")
        print()
        print(
            f"memory: peak-over-baseline {large['size']:,} vs {small['size']:,} = {over_large:.1f} / "
            f"{over_small:.1f} MB = ratio {ratio:.2f} (flat memory: about 1; rows grew "
            f"{large['rows'] / small['rows']:.1f}x)"
        )
        print(
            f"speed: rows/s {large['size']:,} vs {small['size']:,} = {large['rows_per_s']:,.0f} / "
            f"{small['rows_per_s']:,.0f} = {large['rows_per_s'] / small['rows_per_s']:.2f}"
        )
    print()
    print("summary:")
    for r in results:
        if "error" in r:
            print(f"  {r['size']:,} customers: FAILED ({r['error']})")
            continue
        total = r["extract_s"] + r["validate_s"]
        print(
            f"  {r['size']:,} customers -> {r['rows']:,} rows in {total:.1f} s = {r['ratio']:.2f}x DuckDB's COPY "
            f"({r['baseline_copy_s']:.2f} s; goal <= {GOAL_RATIO}x; the suite as plain SQL: {r['floor_ratio']:.2f}x its COPY) "
            f"({r['rows_per_s']:,.0f} rows/s; validate is {r['validate_s'] / total:.0%}"
            f" of it), peak {r['peak_kb'] / MIB:.0f} MB = baseline {r['baseline_kb'] / MIB:.0f} MB "
            f"+ {(r['peak_kb'] - r['baseline_kb']) / MIB:.0f} MB"
        )


def parent(args: argparse.Namespace) -> int:
    _paths()
    sizes = [int(s.replace("_", "")) for s in args.sizes.split(",") if s.strip()]
    if not sizes or min(sizes) < 1:
        raise SystemExit("--sizes needs positive integers, e.g. 100000,1000000")
    cache = Path(args.cache)
    if not cache.is_absolute():
        cache = REPO / cache
    warehouses = {size: warehouse_for(size, args.seed, cache, args.rebuild) for size in sizes}
    load_start = os.getloadavg()[0]
    root = Path(tempfile.mkdtemp(prefix="retl-bench-ev-"))
    results = []
    try:
        for size in sizes:
            result = run_size(size, warehouses[size], root, args)
            results.append(result)
            if "error" in result:
                _say(f"size {size:,}: {result['error']}")
            else:
                _say(f"size {size:,}: done in {result['child_wall_s']:.1f} s (process start to exit)")
    finally:
        if args.keep_tmp:
            _say(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    print_report(results, args.chunk_rows)
    missed = False
    if not args.no_results:
        load = [round(load_start, 2), round(os.getloadavg()[0], 2)]
        path, missed = write_figures(results, args.results, load)
        _say(f"figures written to {path}")
    print(
        f"  load average at start {load_start:.2f}, at end {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs "
        "(timings are wall seconds: other work on the machine inflates them)"
    )
    # 1 for a goal not met, as every benchmark (``make bench`` says "goal not met" instead of "ok")
    return 1 if missed or any("error" in r for r in results) else 0


def write_figures(
    results: list[dict], folder: Path | None = None, load: list[float] | None = None
) -> tuple[Path, bool]:
    """``benchmarks/results/extract_validate.json``: seconds vs COPY per size, and the memory ratio; its
    path, and whether a goal was missed."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from results import exit_status, figure, write_results

    ok = [r for r in results if "error" not in r]
    figures = []
    for r in ok:
        figures.append(
            figure(
                f"extract + validate + stage, {r['rows']:,} rows (voucherify.customers)",
                r["total_s"],
                unit="s",
                baseline=r["baseline_copy_s"],
                goal=f"<= {GOAL_RATIO}x DuckDB COPY of the same mapping",
                # Wall seconds against a COPY slowed by other work can pass by luck: the CPU seconds
                # (all threads, extract + validate vs COPY's) must agree.
                met=r["ratio"] <= GOAL_RATIO
                and r["extract_cpu_s"] + r["validate_cpu_s"] <= GOAL_RATIO * r["copy_cpu_s"],
            )
        )
        figures.append(
            figure(
                f"extract + validate + stage, {r['rows']:,} rows: CPU seconds, all threads (baseline: COPY's)",
                round(r["extract_cpu_s"] + r["validate_cpu_s"], 3),
                unit="s",
                baseline=r["copy_cpu_s"],
                goal=None,
            )
        )
        if r.get("validate_fixed_s") is not None:
            figures.append(
                figure(
                    f"validate's cost whatever the rows (the suite over 1 staged row: GX's data source, metric "
                    f"graph and queries), in the {r['rows']:,}-row run (baseline: COPY)",
                    r["validate_fixed_s"],
                    unit="s",
                    baseline=r["baseline_copy_s"],
                    goal=None,
                )
            )
        figures.append(
            figure(
                f"floor: the same mapping + suite as plain DuckDB SQL (COPY, rules, quarantine), {r['rows']:,} rows"
                " (baseline: its own COPY)",
                r["floor_s"],
                unit="s",
                baseline=r["floor"]["copy_s"],
                goal=None,
            )
        )
    if len(ok) >= 2:
        small, large = min(ok, key=lambda r: r["size"]), max(ok, key=lambda r: r["size"])
        figures.append(
            figure(
                f"peak RSS at {large['rows']:,} rows vs {small['rows']:,} rows",
                round(large["peak_kb"] / MIB, 1),
                unit="MB",
                baseline=round(small["peak_kb"] / MIB, 1),
                goal=f"<= {GOAL_MEMORY_RATIO}x and < {GOAL_MEMORY_MB:.0f} MB",
                met=large["peak_kb"] <= GOAL_MEMORY_RATIO * small["peak_kb"]
                and large["peak_kb"] / MIB < GOAL_MEMORY_MB,
            )
        )
        if large.get("copy_growth_kb") and small.get("copy_growth_kb"):
            figures.append(
                figure(
                    f"DuckDB COPY alone: memory its run adds at {large['rows']:,} rows vs {small['rows']:,} rows "
                    "(the warehouse blocks DuckDB keeps as it reads them; the engine's extract reads them too)",
                    round(large["copy_growth_kb"] / MIB, 1),
                    unit="MB",
                    baseline=round(small["copy_growth_kb"] / MIB, 1),
                    goal=None,
                )
            )
            figures.append(
                figure(
                    f"the engine: memory its extract + validate add at {large['rows']:,} rows vs "
                    f"{small['rows']:,} rows (peak over its baseline)",
                    round((large["peak_kb"] - large["baseline_kb"]) / MIB, 1),
                    unit="MB",
                    baseline=round((small["peak_kb"] - small["baseline_kb"]) / MIB, 1),
                    goal=None,
                )
            )
    path = write_results(
        "extract_validate",
        figures,
        Path(folder) if folder else None,
        sizes=results,
        load_average_start_end=load,
    )
    return path, exit_status(figures) == 1


# ---------------------------------------------------------------------------------------------- child
def _proc_status(field: str) -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _folder_mb(url: str) -> float:
    from urllib.parse import urlparse

    folder = Path(urlparse(url).path)
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 1024 / 1024


class _Timers:
    """Seconds spent in selected engine functions, and progress lines, without changing what runs."""

    def __init__(self, size: int):
        self.size = size
        self.phase = "import"
        self.seconds: dict[str, float] = {}
        self.rows = 0
        self.chunks = 0
        self.phase_started = time.monotonic()
        self.last_print = 0.0

    def add(self, name: str, seconds: float) -> None:
        self.seconds[name] = self.seconds.get(name, 0.0) + seconds

    def timed(self, name: str, func):
        timers = self

        def wrapper(*args, **kwargs):
            started = time.perf_counter()
            try:
                return func(*args, **kwargs)
            finally:
                timers.add(name, time.perf_counter() - started)

        wrapper.__wrapped__ = func
        return wrapper

    def start(self, phase: str) -> None:
        self.phase, self.rows, self.chunks = phase, 0, 0
        self.phase_started = self.last_print = time.monotonic()

    def progress(self, rows: int, force: bool = False) -> None:
        self.rows += rows
        self.chunks += 1
        now = time.monotonic()
        if force or now - self.last_print >= 2.0:
            self.last_print = now
            elapsed = now - self.phase_started
            _say(
                f"  size {self.size:,}: {self.phase} {self.rows:,} rows after {elapsed:.1f} s "
                f"({self.rows / max(elapsed, 1e-9):,.0f} rows/s)"
            )


def _instrument(timers: _Timers) -> None:
    from reverse_etl import ledger, staging, validate

    real_write = staging.ParquetSink.write

    def parquet_write(self, batch):
        started = time.perf_counter()
        try:
            return real_write(self, batch)
        finally:
            timers.add(f"{timers.phase}_parquet_write", time.perf_counter() - started)
            if timers.phase == "extract":
                timers.progress(batch.num_rows)

    staging.ParquetSink.write = parquet_write
    real_iter = staging.iter_parquet

    def iter_parquet(url, batch_rows, columns=None):
        for batch in real_iter(url, batch_rows, columns=columns):
            if timers.phase == "validate" and columns is None:
                timers.progress(batch.num_rows)
            yield batch

    staging.iter_parquet = iter_parquet
    # One call per batch of lines (older engines: one per line).
    sink_write = next(n for n in ("write_lines", "write_many", "write") if hasattr(staging.JsonLinesSink, n))
    setattr(
        staging.JsonLinesSink,
        sink_write,
        timers.timed("quarantine_write", getattr(staging.JsonLinesSink, sink_write)),
    )
    ledger.Ledger.mark_rejected = timers.timed("ledger", ledger.Ledger.mark_rejected)
    validate.SuiteRunner.__init__ = timers.timed("gx_setup", validate.SuiteRunner.__init__)

    def timed_generator(real):
        def generator(*args, **kwargs):
            items = real(*args, **kwargs)
            while True:
                started = time.perf_counter()
                try:
                    item = next(items)
                except StopIteration:
                    return
                finally:
                    timers.add("gx_chunks", time.perf_counter() - started)
                yield item

        return generator

    # The GX pass: block by block in the pandas engine, or (with DuckDB) the suite and the rejected rows.
    for name in ("iter_failures", "iter_sql_rejections"):
        if hasattr(validate.SuiteRunner, name):
            setattr(validate.SuiteRunner, name, timed_generator(getattr(validate.SuiteRunner, name)))
    validate.superseded_rows = timers.timed("dedupe", validate.superseded_rows)


def _quiet_logs(verbose: bool) -> None:
    import logging
    import warnings

    warnings.filterwarnings("ignore", message="This pattern is interpreted as a regular expression")
    logging.getLogger().setLevel(logging.WARNING)
    gx_base = "great_expectations.data_context.types.base"
    for name in ("great_expectations", gx_base, "py.warnings", "airflow"):
        logging.getLogger(name).setLevel(logging.ERROR)
    logging.getLogger("reverse_etl").setLevel(logging.INFO if verbose else logging.WARNING)


def _validate_fixed_cost(manifest: dict, validate_mod) -> tuple[float, float]:
    """Validate's cost whatever the rows: the same validate over the first staged row alone (GX's data
    source and view, its metric graph for the suite, its queries, the quarantine and ledger set-up); best
    of three, wall and CPU seconds. Measured after the run, so it changes nothing of it."""
    import pyarrow.parquet as pq

    from reverse_etl.staging import as_path

    source = as_path(manifest["path"])
    with source.open("rb") as handle:
        first = pq.ParquetFile(handle).read_row_group(0).slice(0, 1)
    one_row = Path(tempfile.mkdtemp(prefix="retl-bench-one-row-")) / "one_row.parquet"
    pq.write_table(first, one_row)
    tiny = {**manifest, "path": one_row.as_uri(), "rows": 1, "deletes": None}
    best = (float("inf"), float("inf"))
    try:
        for attempt in range(3):
            t0, cpu0 = time.monotonic(), time.process_time()
            validate_mod.validate(
                extract_manifest=tiny,
                dag_id="bench_fixed_cost",
                run_id=f"one_row_{attempt}",
                max_rejected_share=1.0,
                record_rejections=False,
            )
            best = min(best, (time.monotonic() - t0, time.process_time() - cpu0))
    finally:
        shutil.rmtree(one_row.parent, ignore_errors=True)
    return best


def child(spec: dict) -> int:
    import resource

    def maxrss() -> int:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    _paths()
    home = os.environ.get("AIRFLOW_HOME", "")
    if not home or not os.environ.get("AIRFLOW_CONN_RETL_STATE"):
        raise SystemExit("--child is started by the benchmark with its own AIRFLOW_HOME and connections")
    size = spec["size"]
    interpreter_kb = maxrss()
    started = time.monotonic()
    # Everything the two steps import, so that the baseline is the engine at rest, not an empty interpreter.
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
    import datetime as dt

    import duckdb
    import great_expectations.data_context.types.base  # noqa: F401  (sets its own logger to INFO on import)
    import pandas  # noqa: F401
    import pyarrow  # noqa: F401
    import sqlalchemy  # noqa: F401
    from airflow.sdk import ObjectStoragePath  # noqa: F401

    from reverse_etl import extract as extract_mod
    from reverse_etl import ledger, settings, staging, warehouse  # noqa: F401
    from reverse_etl import validate as validate_mod
    from reverse_etl.window import Window

    _quiet_logs(spec["verbose"])
    # Warm-up, not measured: the first extract + validate of a process loads Airflow's plugins (through
    # the connection lookup), fsspec's local filesystem, pyarrow.parquet and GX's metric modules, about
    # 1.5 s whatever the rows. An Airflow task pays it once per task process; the COPY baseline does not
    # pay it either. The last day of the window (it has rows at every size), a dry run (no ledger writes).
    warm_started = time.monotonic()
    warm_window = Window(
        dt.datetime.fromisoformat(WINDOW_END) - dt.timedelta(days=1), dt.datetime.fromisoformat(WINDOW_END)
    )
    warm = extract_mod.extract(
        destination=DESTINATION, entity=ENTITY, window=warm_window, dag_id="bench_warm_up", run_id="warm_up"
    )
    validate_mod.validate(
        extract_manifest=warm,
        dag_id="bench_warm_up",
        run_id="warm_up",
        max_rejected_share=1.0,
        record_rejections=False,
    )
    warm_up_s = time.monotonic() - warm_started
    baseline_kb = maxrss()
    _say(
        f"  size {size:,}: imports took {time.monotonic() - started:.1f} s; RSS baseline "
        f"{baseline_kb / MIB:.1f} MB (bare interpreter {interpreter_kb / MIB:.1f} MB) after a "
        f"{warm_up_s:.1f} s warm-up; "
        f"chunk rows {settings.chunk_rows():,}"
    )
    timers = _Timers(size)
    _instrument(timers)
    profiler = None
    if spec["profile"]:
        import cProfile

        profiler = cProfile.Profile()
    window = Window(dt.datetime.fromisoformat(WINDOW_START), dt.datetime.fromisoformat(WINDOW_END))
    dag_id, run_id = "bench_extract_validate", f"bench_{size}"

    before = set(sys.modules)
    timers.start("extract")
    if profiler:
        profiler.enable()
    t0, cpu0 = time.monotonic(), time.process_time()
    manifest = extract_mod.extract(
        destination=DESTINATION, entity=ENTITY, window=window, dag_id=dag_id, run_id=run_id
    )
    extract_s = time.monotonic() - t0
    extract_cpu_s = time.process_time() - cpu0
    timers.progress(0, force=True)
    peak_after_extract_kb = maxrss()

    timers.start("validate")
    t0, cpu0 = time.monotonic(), time.process_time()
    checked = validate_mod.validate(
        extract_manifest=manifest, dag_id=dag_id, run_id=run_id, max_rejected_share=1.0
    )
    validate_s = time.monotonic() - t0
    validate_cpu_s = time.process_time() - cpu0
    if profiler:
        profiler.disable()
    timers.progress(0, force=True)
    peak_kb = maxrss()
    vmhwm_kb = _proc_status("VmHWM")
    if os.environ.get("BENCH_NEW_MODULES"):
        new = sorted(
            {m.split(".")[0] + "." + m.split(".")[1] if "." in m else m for m in set(sys.modules) - before}
        )
        _say(f"modules first imported during the run: {new}")

    # After the measurement: does the window really hold every row?
    con = duckdb.connect(spec["warehouse"], read_only=True)
    try:
        warehouse_rows = con.execute("SELECT count(*) FROM customers").fetchone()[0]
    finally:
        con.close()
    s = timers.seconds
    parts = {
        "gx_setup": s.get("gx_setup", 0.0),
        "gx_chunks": s.get("gx_chunks", 0.0),
        "dedupe": s.get("dedupe", 0.0),
        "quarantine_write": s.get("quarantine_write", 0.0),
        "ledger": s.get("ledger", 0.0),
        "parquet_write": s.get("validate_parquet_write", 0.0),
    }
    breakdown = {k: round(v, 3) for k, v in parts.items()}
    breakdown["other"] = round(validate_s - sum(parts.values()), 3)
    breakdown["chunks"] = timers.chunks - 1  # minus the final forced progress line
    fixed_s, fixed_cpu_s = _validate_fixed_cost(manifest, validate_mod)  # after the timers are read
    rows = manifest["rows"]
    result = {
        "size": size,
        "rows": rows,
        "deletes": manifest["deletes"],
        "warehouse_rows": warehouse_rows,
        "chunk_rows": settings.chunk_rows(),
        "warm_up_s": round(warm_up_s, 3),
        "extract_s": round(extract_s, 3),
        "validate_s": round(validate_s, 3),
        "extract_cpu_s": round(extract_cpu_s, 3),
        "validate_cpu_s": round(validate_cpu_s, 3),
        "engine_extract_s": manifest["seconds"],
        "engine_validate_s": checked["validate_seconds"],
        "rows_per_s": rows / (extract_s + validate_s),
        "valid": checked["valid"],
        "rejected": checked["rejected"],
        "rejected_share": checked["rejected"] / max(1, rows),
        "interpreter_kb": interpreter_kb,
        "baseline_kb": baseline_kb,
        "peak_after_extract_kb": peak_after_extract_kb,
        "peak_kb": peak_kb,
        "vmhwm_kb": vmhwm_kb,
        "staged_mb": round(_folder_mb(settings.staging_url()), 1),
        "extract_parquet_write_s": round(s.get("extract_parquet_write", 0.0), 3),
        "validate_breakdown": breakdown,
        "validate_fixed_s": round(fixed_s, 3),
        "validate_fixed_cpu_s": round(fixed_cpu_s, 3),
    }
    if rows != warehouse_rows:
        _say(f"  size {size:,}: WARNING extracted {rows:,} rows but the warehouse holds {warehouse_rows:,}")
    Path(spec["result"]).write_text(json.dumps(result))
    if profiler:
        import io
        import pstats

        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats(os.environ.get("BENCH_SORT", "tottime")).print_stats(30)
        print(
            f"\ncProfile of extract + validate, size {size:,} (top 30 by own time; timings above are "
            f"inflated by the profiler):\n{out.getvalue()}",
            file=sys.stderr,
            flush=True,
        )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Time and size the engine's real extract + validate of voucherify.customers over the "
        "full window, one fresh process per warehouse size; prints a table and a summary.",
        epilog="Read peak-over-baseline MB: it should not grow with the size (ratio about 1 = flat memory).",
    )
    parser.add_argument(
        "--sizes",
        default="100000,1000000",
        help="comma-separated customer counts of the sample warehouses (default: %(default)s)",
    )
    parser.add_argument(
        "--cache",
        default="data/bench",
        help="folder of cached sample warehouses, one DuckDB file per size and seed; "
        "relative paths are under the repository (default: %(default)s)",
    )
    parser.add_argument("--seed", type=int, default=42, help="sample data seed (default: %(default)s)")
    parser.add_argument("--rebuild", action="store_true", help="rebuild the cached warehouses")
    parser.add_argument(
        "--chunk-rows",
        type=int,
        default=None,
        help="rows per chunk, passed to the engine as RETL_CHUNK_ROWS (default: the engine's own, 50000)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=3600.0,
        help="seconds allowed per size before the child is killed (default: %(default)s)",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="also run cProfile in each child and print the top functions (slows the run)",
    )
    parser.add_argument("--verbose", action="store_true", help="show the engine's INFO logs")
    from results import add_results_option

    add_results_option(parser)
    parser.add_argument(
        "--no-results",
        action="store_true",
        help="do not write benchmarks/results/extract_validate.json (smoke runs at tiny sizes)",
    )
    parser.add_argument(
        "--keep-tmp", action="store_true", help="keep the temporary AIRFLOW_HOME for inspection"
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child(json.loads(args.child))
    return parent(args)


if __name__ == "__main__":
    sys.exit(main())
