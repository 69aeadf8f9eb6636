"""Benchmark: the fixed cost of each task kind's process (extract, validate, load, report) over an empty task.

What is measured
    Every Airflow task runs in a new Python process. Before its callable does any work, that process imports
    the task runner, loads the plugins (Airflow's plugins manager imports every ``.py`` file of the plugins
    folder not excluded by its ``.airflowignore``), parses the DAG file and then imports what the callable
    needs. For each task kind one fresh process (``python -c``, bytecode as the venv holds it) does exactly
    that and nothing else; the figure is its wall time, best of ``--repeat`` runs:

      * empty: task runner + plugins + DAG file (``dags/voucherify_sync.py``), as an empty ``@task`` pays;
      * extract: plus the warehouse hook (DuckDB, pyarrow), the state store (SQLAlchemy), Jinja and a first
        ``ObjectStoragePath``;
      * validate: plus Great Expectations with its ephemeral context (``SuiteRunner``), pandas, numpy;
      * load: plus the Voucherify hook's transport (requests), the ledger and staging;
      * report: plus the ledger, staging and alerts.

    The data work itself (0.3-0.5 s for a few hundred rows) is not included: this is the part of a small
    task's time that does not depend on its rows.

    Three ways (``FORKERS``): from a fresh interpreter (Airflow's plain LocalExecutor, ``airflow tasks test``:
    every task pays every import); forked from a Celery worker as ``make stack`` runs it (one process creates
    Airflow's Celery app with ``[celery] celery_config_options = reverse_etl.celery_config.CELERY_CONFIG``
    and sends Celery's ``import_modules`` signal, Airflow's preload and ours); and forked from a scheduler
    running ``reverse_etl.local_executor.PreloadingLocalExecutor`` as ``make ui`` does (the executor loaded
    from ``[core] executor`` and started, which preloads before it forks its workers). Each forker then forks
    once per task, as a worker's task supervisor does; the figure is the fork's wall time until it exits.

How to read it
    ``over empty`` is each kind's figure minus the empty task's; the goal is at most 2 s for every kind (the
    figures with the goal are the slowest kind's on a Celery worker and under ``make ui``'s LocalExecutor,
    the shapes this project runs tasks in; the fresh-process figure is shown beside them). The figures go to benchmarks/results/task_cost.json.

    .venv/bin/python benchmarks/bench_task_cost.py [--repeat 3] [--kinds validate load] [--results DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from results import add_results_option, figure, finish

REPO = Path(__file__).resolve().parents[1]
GOAL_SECONDS = 2.0

PRELUDE = (
    "import runpy\n"
    "import airflow.sdk.execution_time.task_runner\n"
    "from airflow.sdk.plugins_manager import integrate_macros_plugins\n"
    "integrate_macros_plugins()\n"
    "runpy.run_path({dag!r})\n"
)

KINDS = {
    "empty": "",
    "extract": (
        "import jinja2, pyarrow.compute\n"
        "from reverse_etl.extract import extract\n"
        "from reverse_etl.store import open_store\n"
        "from reverse_etl.warehouse import WarehouseHook\n"
        "import duckdb\n"
        "from reverse_etl.staging import sync_dir\n"
        "sync_dir('d', 'r', 'e')\n"
    ),
    "validate": (
        "import numpy, pyarrow, pyarrow.compute\n"
        "from reverse_etl.ledger import Ledger\n"
        "from reverse_etl.staging import sync_dir\n"
        "from reverse_etl.validate import SuiteRunner, load_suite_config\n"
        "config = load_suite_config('voucherify', 'customers')\n"
        "SuiteRunner('customers', config['expectations'])\n"
        "sync_dir('d', 'r', 'e')\n"
    ),
    "load": (
        "import requests\n"
        "from reverse_etl.hooks.voucherify import VoucherifyHook\n"
        "from reverse_etl.ledger import Ledger\n"
        "from reverse_etl.staging import iter_parquet, sync_dir\n"
        "sync_dir('d', 'r', 'e')\n"
    ),
    "report": (
        "from reverse_etl import alerts\n"
        "from reverse_etl.ledger import run_reports\n"
        "from reverse_etl.staging import prune, sync_dir\n"
        "sync_dir('d', 'r', 'e')\n"
    ),
}


def environment(home: Path) -> dict[str, str]:
    sys.path.insert(0, str(REPO))
    from sandbox.env import airflow_env

    env = {**os.environ, **airflow_env(home)}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "plugins"), str(REPO)])
    env["RETL_STAGING_URL"] = (home / "staging").as_uri()
    env["GX_ANALYTICS_ENABLED"] = "False"
    return env


def task_code(kind: str) -> str:
    """The code a task process of this kind runs: the runner's imports and DAG file, then the task."""
    return PRELUDE.format(dag=str(REPO / "dags" / "voucherify_sync.py")) + KINDS[kind]


def time_kind(kind: str, env: dict[str, str], repeat: int) -> float:
    code = task_code(kind)
    best = float("inf")
    for _ in range(repeat):
        started = time.monotonic()
        done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
        elapsed = time.monotonic() - started
        if done.returncode:
            raise SystemExit(f"{kind}: the task process failed:\n{done.stderr[-3000:]}")
        best = min(best, elapsed)
    return best


# How each long-lived process that forks tasks starts: the preload our settings give it (reverse_etl.preload).
FORKERS = {
    "Celery worker": (
        {
            "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
            "AIRFLOW__CELERY__BROKER_URL": "redis://127.0.0.1:1/0",  # never contacted
            "AIRFLOW__CELERY__CELERY_CONFIG_OPTIONS": "reverse_etl.celery_config.CELERY_CONFIG",
        },
        # as `celery worker` does before forking its pool
        "from airflow.providers.celery.executors import celery_executor_utils\n"
        "celery_executor_utils.app.loader.import_default_modules()\n",
    ),
    "LocalExecutor (make ui)": (
        {"AIRFLOW__CORE__EXECUTOR": "reverse_etl.local_executor.PreloadingLocalExecutor"},
        # as the scheduler does before forking the executor's workers (which fork the tasks)
        "from airflow.executors.executor_loader import ExecutorLoader\n"
        "executor = ExecutorLoader.get_default_executor()\n"
        "executor.start()\n"
        "executor.end()\n",
    ),
}
WORKER = """
import json, os, sys, time, traceback
# SETUP
codes, repeat, best = json.loads(sys.argv[1]), int(sys.argv[2]), {}
for kind, code in codes.items():
    best[kind] = float("inf")
    for _ in range(repeat):
        started = time.monotonic()
        pid = os.fork()
        if pid == 0:
            try:
                exec(compile(code, kind, "exec"), {"__name__": "__task__"})
                os._exit(0)
            except BaseException:
                traceback.print_exc()
                os._exit(1)
        if os.waitpid(pid, 0)[1]:
            raise SystemExit(f"{kind}: the forked task failed")
        best[kind] = min(best[kind], time.monotonic() - started)
print(json.dumps(best))
"""


def time_forked(forker: str, kinds: list[str], env: dict[str, str], repeat: int) -> dict[str, float]:
    """Every kind forked from one process started as ``FORKERS[forker]`` (its preload ran), best of
    ``repeat``."""
    codes = {kind: task_code(kind) for kind in kinds}
    settings, setup = FORKERS[forker]
    done = subprocess.run(
        [sys.executable, "-c", WORKER.replace("# SETUP\n", setup), json.dumps(codes), str(repeat)],
        env={**env, **settings},
        capture_output=True,
        text=True,
    )
    if done.returncode:
        raise SystemExit(f"the {forker} model failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def over_empty(seconds: dict[str, float], where: str, headline: bool) -> list[dict]:
    """The empty task, each kind over it, and the slowest kind against the goal."""
    empty = round(seconds["empty"], 2)
    # + 0.0: a kind as fast as the empty task shows 0, not -0
    over = {kind: round(value - empty, 2) + 0.0 for kind, value in seconds.items() if kind != "empty"}
    figures = [figure(f"empty task, {where} (runner, plugins, DAG file)", empty, unit="s")]
    figures += [
        figure(f"{kind} task over an empty one, {where}", over[kind], unit="s", baseline=empty)
        for kind in over
    ]
    slowest = max(over, key=over.get)
    figures.append(
        figure(
            f"slowest task over an empty one, {where} ({slowest})",
            over[slowest],
            unit="s",
            baseline=empty,
            goal=f"<= {GOAL_SECONDS:g} s",
            met=over[slowest] <= GOAL_SECONDS,
            headline=headline,
        )
    )
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs per kind; the best is kept")
    parser.add_argument(
        "--kinds",
        nargs="+",
        choices=[k for k in KINDS if k != "empty"],
        default=[k for k in KINDS if k != "empty"],
        help="the kinds to time (all); the empty task always runs: it is their baseline",
    )
    add_results_option(parser)
    args = parser.parse_args(argv)
    kinds = ["empty", *args.kinds]
    with tempfile.TemporaryDirectory(prefix="bench-task-cost-") as tmp:
        env = environment(Path(tmp))
        fresh = {kind: time_kind(kind, env, args.repeat) for kind in kinds}
        forked = {forker: time_forked(forker, kinds, env, args.repeat) for forker in FORKERS}
    figures = over_empty(fresh, "fresh process", headline=False)
    for forker, seconds in forked.items():
        figures += over_empty(seconds, forker, headline=True)
    return finish(
        "task_cost", figures, args.results, repeat=args.repeat, seconds={"fresh": fresh, "forked": forked}
    )


if __name__ == "__main__":
    sys.exit(main())
