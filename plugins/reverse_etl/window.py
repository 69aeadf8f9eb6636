"""The half-open time window ``[start, end)`` that a run syncs, from the data interval or the params."""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass

from reverse_etl.errors import ConfigError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Window:
    start: dt.datetime
    end: dt.datetime

    def sql_literal(self, which: str) -> str:
        """Naive UTC timestamp text, the form both DuckDB and PostgreSQL read in ``TIMESTAMP '...'``."""
        value = getattr(self, which).astimezone(dt.UTC).replace(tzinfo=None)
        return value.strftime("%Y-%m-%d %H:%M:%S.%f")

    def as_dict(self) -> dict:
        return {"start": self.start.isoformat(), "end": self.end.isoformat()}


def _parse(value: object, name: str) -> dt.datetime:
    if isinstance(value, dt.datetime):
        parsed = value
    else:
        try:
            parsed = dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        except ValueError as exc:
            raise ConfigError(
                f"Param '{name}' = {value!r} is not an ISO date or date-time (2026-10-31)."
            ) from exc
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def resolve_window(params: dict, data_interval_start: object, data_interval_end: object) -> Window:
    """Params ``window_start``/``window_end`` win (manual runs); else the run's data interval."""
    start = params.get("window_start")
    end = params.get("window_end")
    if bool(start) != bool(end):
        raise ConfigError("Set both params 'window_start' and 'window_end', or neither.")
    if start:
        window = Window(_parse(start, "window_start"), _parse(end, "window_end"))
    else:
        if data_interval_start is None or data_interval_end is None:
            # Airflow 3 gives a manual run without a logical date no data interval: sync the last full UTC day.
            today = dt.datetime.now(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)
            log.info(
                "no data interval and no window params: syncing the last full day [%s, %s)",
                (today - dt.timedelta(days=1)).isoformat(),
                today.isoformat(),
            )
            return Window(today - dt.timedelta(days=1), today)
        window = Window(
            _parse(data_interval_start, "data_interval_start"), _parse(data_interval_end, "data_interval_end")
        )
    if window.end <= window.start:
        start_name, end_name = (
            ("param 'window_start'", "param 'window_end'") if start else ("data interval start", "end")
        )
        raise ConfigError(
            f"Empty window: the end must be after the start, but {end_name} is {window.end.isoformat()} and "
            f"{start_name} is {window.start.isoformat()}"
            + (": swap them?" if window.end < window.start else " (a zero-width window extracts nothing).")
        )
    return window
