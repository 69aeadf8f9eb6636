"""The Reverse ETL page in the Airflow UI: a FastAPI app on the api-server and a link in the navigation.

Airflow imports this file from its plugins folder. The app (reverse_etl/ui/api.py) serves the page and its
JSON at /reverse-etl/; the external view shows the page inside the UI under Browse.

Every task process loads the plugins too, and building the app imports FastAPI and Airflow's API security
(about 0.7 s): so the plugin hands the api-server an ASGI app that builds the real one on its first request.
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

URL_PREFIX = "/reverse-etl"


class LazyApp:
    """An ASGI app that builds ``reverse_etl.ui.api.create_app()`` on its first call and hands every call
    to it; the api-server mounts it like any sub-app (``app.mount(url_prefix, app)``)."""

    def __init__(self) -> None:
        self._app = None

    @property
    def app(self):
        if self._app is None:  # no await between the check and the assignment: one build per process
            from reverse_etl.ui.api import create_app

            self._app = create_app()
        return self._app

    async def __call__(self, scope, receive, send) -> None:
        await self.app(scope, receive, send)


class ReverseEtlUiPlugin(AirflowPlugin):
    name = "reverse_etl_ui"
    fastapi_apps = [{"app": LazyApp(), "url_prefix": URL_PREFIX, "name": "Reverse ETL"}]
    external_views = [
        {
            "name": "Reverse ETL",
            "href": f"{URL_PREFIX}/",
            "destination": "nav",
            "category": "browse",
            "url_route": "reverse-etl",
        }
    ]
