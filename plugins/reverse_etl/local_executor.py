"""A LocalExecutor whose task processes find Great Expectations, pandas, DuckDB and the engine imported.

With ``fork`` (Linux), Airflow's LocalExecutor forks its ``[core] parallelism`` workers from the scheduler
when it starts, and each worker forks a process per task. This executor imports what our tasks need
(``reverse_etl.preload``) in the scheduler just before, so every task inherits it instead of importing it
(a validate task: 4-5 s less). ``make ui`` sets it:

    AIRFLOW__CORE__EXECUTOR=reverse_etl.local_executor.PreloadingLocalExecutor

The scheduler starts that much later, once, and holds the modules (a few hundred MB, shared with its
workers until written). Where processes are spawned (macOS) nothing is inherited and it preloads nothing.
"""

from __future__ import annotations

from airflow.executors.local_executor import LocalExecutor

from reverse_etl.preload import preload_and_log


class PreloadingLocalExecutor(LocalExecutor):
    """``LocalExecutor`` that preloads the tasks' imports before it forks its workers."""

    def start(self) -> None:
        if self.is_mp_using_fork:
            preload_and_log("scheduler's LocalExecutor workers")
        super().start()
