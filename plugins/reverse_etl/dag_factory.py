"""Builds one destination's DAG from its list of syncs; the DAG files stay a few lines each.

Every sync is a task group ``extract >> validate >> load``; ``after`` orders loads where the vendor
needs it; a final ``report`` task summarises the run and fails it if a selected sync did not finish.
Nothing heavy is imported here: DAG files are parsed constantly.
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass, field

from airflow.sdk import DAG, CronDataIntervalTimetable, Param, TaskGroup, task


def task_retries() -> int:
    """Airflow task retries of vendor tasks (``RETL_TASK_RETRIES``, default 3; the tests use 0)."""
    return int(os.environ.get("RETL_TASK_RETRIES", "3"))


@dataclass(frozen=True)
class Sync:
    """One (destination, entity) pair: its load operator class and the entities whose loads go first."""

    entity: str
    operator: type
    after: tuple[str, ...] = ()
    extra_params: dict = field(default_factory=dict)


def common_params(entities: list[str], max_rejected_share: float) -> dict:
    return {
        "dry_run": Param(False, type="boolean", description="Extract, validate and diff; send nothing."),
        "full_resync": Param(False, type="boolean", description="Send every valid row, even unchanged ones."),
        "reconcile": Param(
            False,
            type="boolean",
            description="Before planning, read the vendor's records back and record delivered those it "
            "already holds as we would send them (after a lost state store); fails for vendors that cannot be "
            "read back. Sends nothing itself.",
        ),
        # Dates (YYYY-MM-DD, UTC): the trigger form shows a date picker, and Airflow refuses a run whose
        # value is not a date before the run exists (format "date" is checked when the run is created).
        "window_start": Param(
            None,
            type=["null", "string"],
            format="date",
            title="Window start",
            description="Manual window start, a date (YYYY-MM-DD, UTC, inclusive); set window_end too. "
            "Default: the run's data interval.",
        ),
        "window_end": Param(
            None,
            type=["null", "string"],
            format="date",
            title="Window end",
            description="Manual window end, a date (YYYY-MM-DD, UTC, exclusive): after window_start.",
        ),
        # "examples" makes the form a multi-select of the DAG's entities; items.enum refuses any other name.
        "entities": Param(
            list(entities),
            type="array",
            items={"type": "string", "enum": list(entities)},
            examples=list(entities),
            uniqueItems=True,
            title="Entities",
            description="Syncs to run; the others are skipped.",
        ),
        "max_rejected_share": Param(
            max_rejected_share,
            type="number",
            minimum=0,
            maximum=1,
            description="Fail validation when a larger share of rows is rejected.",
        ),
        **alert_params(max_rejected_share),
    }


def alert_params(max_rejected_share: float) -> dict:
    """Thresholds of the warnings the report step sends (``reverse_etl.alerts``); they never fail a run."""
    return {
        "warn_rejected_share": Param(
            max_rejected_share / 2,
            type=["null", "number"],
            minimum=0,
            maximum=1,
            description="Alert (without failing) when a larger share of rows is rejected; keep it below "
            "max_rejected_share. Null: no alert.",
        ),
        "volume_drop_share": Param(
            0.5,
            type="number",
            minimum=0,
            maximum=1,
            description="Alert when a sync extracts fewer rows than this share of the median of its last "
            "successful runs (up to 10). 0: no alert.",
        ),
        "volume_min_runs": Param(
            3,
            type="integer",
            minimum=1,
            description="Previous successful runs a sync needs before its volume is compared.",
        ),
    }


def erasure_params() -> dict:
    """Params of DAGs with a sync that can delete: the sweep of records gone from the source."""
    from reverse_etl.erasures import DEFAULT_MAX_SHARE

    return {
        "detect_erasures": Param(
            True,
            type="boolean",
            description="Delete at the vendor the records we delivered that are gone from the source "
            "(syncs with a <entity>.keys.sql file).",
        ),
        "max_erasure_share": Param(
            DEFAULT_MAX_SHARE,
            type="number",
            minimum=0,
            maximum=1,
            description="Refuse (delete nothing, fail the load) when a larger share of the delivered records "
            "is gone from the source; raise it for one run to carry out a deliberate mass erasure.",
        ),
    }


def build_sync_dag(
    *,
    dag_id: str,
    description: str,
    destination: str,
    syncs: list[Sync],
    vendor_conn_id: str,
    pool: str,
    schedule: str = "0 3 * * *",
    max_rejected_share: float = 0.1,
    extra_params: dict | None = None,
    doc_md: str | None = None,
    tags: list[str] | None = None,
    deadline_minutes: int = 180,
) -> DAG:
    from reverse_etl.alerts import deadline_alert, on_run_failure

    entities = [s.entity for s in syncs]
    deadline = deadline_alert(deadline_minutes)
    with DAG(
        dag_id=dag_id,
        schedule=CronDataIntervalTimetable(schedule, timezone="UTC"),
        start_date=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
        catchup=False,
        max_active_runs=1,
        params={
            **common_params(entities, max_rejected_share),
            **(erasure_params() if any(getattr(s.operator, "supports_delete", False) for s in syncs) else {}),
            **(extra_params or {}),
        },
        default_args={
            "retries": task_retries(),
            "retry_delay": dt.timedelta(minutes=1),
            "retry_exponential_backoff": True,
            "max_retry_delay": dt.timedelta(minutes=30),
        },
        description=description,
        tags=["reverse-etl", destination, *(tags or [])],
        doc_md=doc_md,
        on_failure_callback=on_run_failure,
        **({"deadline": deadline} if deadline else {}),
    ) as dag:
        from reverse_etl import tasks

        loads = {}
        for sync in syncs:
            with TaskGroup(group_id=sync.entity, tooltip=f"{destination}.{sync.entity}"):
                extracted = task(task_id="extract", retries=min(1, task_retries()))(tasks.run_extract)(
                    destination, sync.entity
                )
                # one retry: a worker lost mid-task (Celery) is not a data failure, which fails at once anyway
                validated = task(task_id="validate", retries=min(1, task_retries()))(tasks.run_validate)(
                    extracted
                )
                loads[sync.entity] = sync.operator(
                    task_id="load",
                    manifest=validated,
                    vendor_conn_id=vendor_conn_id,
                    pool=pool,
                    trigger_rule="none_failed",
                )
                validated >> loads[sync.entity]
        for sync in syncs:
            for before in sync.after:
                loads[before] >> loads[sync.entity]
        report = task(task_id="report", trigger_rule="all_done", retries=min(1, task_retries()))(
            tasks.run_report
        )(entities)
        list(loads.values()) >> report
    return dag
