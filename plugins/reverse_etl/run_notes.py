"""Writes each finished sync run's summary into its DAG run's note, so the grid shows it.

A task cannot set its DAG run's note in Airflow 3: the Task Execution API has no such call and tasks
have no metadata database access. So the ``report`` task pushes the note as the XCom ``run_note``, and
this listener, called by the scheduler (or ``dag.test()``) inside the transaction that finishes the run,
copies it into ``dag_run.note``, adding any failed task the report could not name (a task after it).
A note someone wrote by hand is left alone.
"""

from __future__ import annotations

import logging
import sys

from airflow.listeners import hookimpl
from airflow.plugins_manager import AirflowPlugin

log = logging.getLogger(__name__)

REPORT_TASK = "report"
NOTE_KEY = "run_note"  # tasks.NOTE_KEY (not imported: this module is loaded at every Airflow start)
NOTE_LIMIT = 1000
OURS = ("**Run report", "**Dry run report")  # with or without the totals after it


def note_for(dag_run, session) -> str | None:
    """The report's note plus the run's failed tasks it does not name; None when it is not a sync run."""
    from airflow.models.xcom import XComModel
    from airflow.utils.state import TaskInstanceState
    from sqlalchemy import select

    task_ids = {ti.task_id for ti in dag_run.get_task_instances(session=session)}
    if REPORT_TASK not in task_ids:
        return None
    row = session.scalar(
        select(XComModel).where(
            XComModel.dag_run_id == dag_run.id,
            XComModel.task_id == REPORT_TASK,
            XComModel.key == NOTE_KEY,
            XComModel.map_index == -1,
        )
    )
    note = str(XComModel.deserialize_value(row)) if row is not None else ""
    failed = sorted(
        ti.task_id for ti in dag_run.get_task_instances(state=[TaskInstanceState.FAILED], session=session)
    )
    return add_failures(note, failed) or None


def add_failures(note: str, failed: list[str]) -> str:
    """The note with a line for the failed tasks it does not name, within Airflow's 1000 characters."""
    named = _named_failures(note)
    # The report fails itself because of the tasks its note names: only the others are news.
    missing = [t for t in failed if t not in named and not (named and t == REPORT_TASK)]
    tail = ""
    if missing:
        label = "**Also failed:**" if named else "**Failed:**"
        tail = f"{label} {', '.join(missing)}: see {'its' if len(missing) == 1 else 'their'} log."
        tail = f"\n\n{tail}" if note else tail
    room = NOTE_LIMIT - len(tail)  # the failures stay whole; the table gives way
    if len(note) > room:
        note = note[: room - 1] + "…"
    return (note + tail)[:NOTE_LIMIT]


def _named_failures(note: str) -> set[str]:
    """The task ids of the note's ``**Failed:** a, b: see their log.`` line."""
    for line in note.splitlines():
        if line.startswith("**Failed:**"):
            names = line.removeprefix("**Failed:**").rsplit(": see ", 1)[0]
            return {name.strip() for name in names.split(",")}
    return set()


def write_note(dag_run) -> None:
    """In the scheduler the run belongs to the session that finishes it: the note joins that transaction
    (a second session would wait on the run's row lock). ``dag.test()`` hands over a detached run whose
    session has nothing pending at this point: the note gets a short transaction of its own."""
    from sqlalchemy.orm import object_session

    try:
        session = object_session(dag_run)
        if session is not None:
            _set_note(dag_run, session)
            return
        from airflow.models import DagRun
        from airflow.utils.session import create_session

        with create_session() as own:
            attached = own.get(DagRun, dag_run.id)
            if attached is not None:
                _set_note(attached, own)
    except Exception:  # a note is never worth breaking the scheduler's loop
        log.exception("could not write the note of %s %s", dag_run.dag_id, dag_run.run_id)


def _set_note(dag_run, session) -> None:
    note = note_for(dag_run, session)
    current = dag_run.note
    if note is None or (current and not current.startswith(OURS)):
        return  # not a sync run, or a note someone wrote by hand
    dag_run.note = note


@hookimpl
def on_dag_run_success(dag_run, msg: str) -> None:
    write_note(dag_run)


@hookimpl
def on_dag_run_failed(dag_run, msg: str) -> None:
    write_note(dag_run)


class RunNotesPlugin(AirflowPlugin):
    name = "reverse_etl_run_notes"
    listeners = [sys.modules[__name__]]
