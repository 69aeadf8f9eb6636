"""The Reverse ETL page's FastAPI app, mounted by Airflow's api-server (plugins/retl_ui_plugin.py).

Every route needs what Airflow's own API needs: a JWT from Airflow's auth manager, as the ``_token`` cookie
the UI sets at login or as a bearer token. The page itself is static HTML; its data comes from the JSON
routes, which answer 401 without a login and 403 to a user who may not read DAG runs.
"""

from __future__ import annotations

import logging
from pathlib import Path

from fastapi import Depends, FastAPI, HTTPException, Query
from fastapi.responses import HTMLResponse

PAGE = Path(__file__).with_name("page.html")
log = logging.getLogger(__name__)


def _read_runs():
    """Airflow's check for reading DAG runs (any DAG): the ledger tells what every run delivered."""
    from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity
    from airflow.api_fastapi.core_api.security import requires_access_dag

    return requires_access_dag(method="GET", access_entity=DagAccessEntity.RUN)


def _edit_runs():
    """Who may see the quarantine's personal fields unmasked: users who may change DAG runs (Airflow's Op
    and Admin roles), not every reader."""
    from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity
    from airflow.api_fastapi.core_api.security import requires_access_dag

    return requires_access_dag(method="PUT", access_entity=DagAccessEntity.RUN)


def create_app(url: str | None = None) -> FastAPI:
    """The app; ``url`` is the state store's SQLAlchemy URL (default: the ``retl_state`` connection)."""
    from airflow.api_fastapi.core_api.security import get_user

    from reverse_etl.errors import SyncError
    from reverse_etl.ui import quarantine, queries

    resolved: list[str] = [url] if url else []

    def store_url() -> str:
        if not resolved:  # looked up on the first request: nothing heavy when the plugin is imported
            from reverse_etl.store import state_store_url

            resolved.append(state_store_url())
        return resolved[0]

    def answer(query, *args):
        try:
            return query(store_url(), *args)
        except SyncError as exc:  # no store, or the wrong one: say so, as the CLI does
            raise HTTPException(status_code=503, detail=str(exc)) from None

    app = FastAPI(title="Reverse ETL", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.read_runs = _read_runs()  # named, so a benchmark can time the queries without a login
    guarded = [Depends(app.state.read_runs)]
    revealing = [Depends(app.state.read_runs), Depends(_edit_runs())]
    current_user = Depends(get_user)

    @app.get("/", response_class=HTMLResponse)
    def page() -> str:
        return PAGE.read_text()

    @app.get("/api/syncs", dependencies=guarded)
    def syncs(limit: int = Query(30, ge=1, le=200)) -> list[dict]:
        """Every destination and entity with its latest runs (counts, window, quarantine, Airflow link)."""
        return answer(queries.syncs, limit)

    @app.get("/api/records/{destination}/{entity}/{key:path}", dependencies=guarded)
    def record(destination: str, entity: str, key: str) -> dict:
        """One record's current status and every event (the CLI's ``why``)."""
        return answer(queries.record, destination, entity, key)

    @app.get("/api/failures/{destination}/{entity}", dependencies=guarded)
    def failures(destination: str, entity: str, groups: int = Query(20, ge=1, le=200)) -> list[dict]:
        """Records failing now, grouped by the vendor's (or the checks') message, with a few keys each."""
        return answer(queries.failures, destination, entity, groups)

    @app.get("/api/failures/{destination}/{entity}/unmasked", dependencies=revealing)
    def failures_unmasked(destination: str, entity: str, groups: int = Query(20, ge=1, le=200)) -> list[dict]:
        """The same with personal keys and messages as they are, for users who may change runs."""
        return answer(queries.failures, destination, entity, groups, True)

    @app.get("/api/budget", dependencies=guarded)
    def budget(minutes: int = Query(360, ge=1, le=10080)) -> list[dict]:
        """Each vendor account's rate budget: its limit per minute, its latest ``minutes`` minutes with
        traffic (requests and 429s each, oldest first), the peak minute and the share of the limit used."""
        return answer(queries.budget, minutes)

    @app.get("/api/quarantine/{destination}/{entity}", dependencies=guarded)
    def quarantined(destination: str, entity: str, run_id: str | None = None) -> dict:
        """The latest (or the named) run's quarantine: rules, counts, sample rows with personal fields masked."""
        return answer(quarantine.quarantine, destination, entity, run_id, False)

    @app.get("/api/quarantine/{destination}/{entity}/unmasked", dependencies=revealing)
    def quarantined_unmasked(
        destination: str, entity: str, run_id: str | None = None, user=current_user
    ) -> dict:
        """The same with personal fields as they are, for users who may change runs; each look is logged."""
        found = answer(quarantine.quarantine, destination, entity, run_id, True)
        log.warning(
            "reverse-etl page: user %r looked at the unmasked quarantine of %s.%s, run %s",
            user.get_name(),
            destination,
            entity,
            found.get("run_id"),
        )
        return found

    return app
