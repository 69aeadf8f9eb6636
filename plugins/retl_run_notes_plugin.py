"""The run-notes listener plugin (reverse_etl/run_notes.py), found here by Airflow's plugins manager.

The plugins folder's .airflowignore keeps Airflow from importing the engine under reverse_etl/ file by
file in every task process; this file exposes the one plugin that lives there.
"""

from __future__ import annotations

from reverse_etl.run_notes import RunNotesPlugin

__all__ = ["RunNotesPlugin"]
