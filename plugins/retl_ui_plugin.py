"""The Reverse ETL page in the Airflow UI: a FastAPI app on the api-server and a link in the navigation.

Airflow imports this file from its plugins folder. The app (reverse_etl/ui/api.py) serves the page and its
JSON at /reverse-etl/; the external view shows the page inside the UI under Browse.
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from reverse_etl.ui.api import create_app

URL_PREFIX = "/reverse-etl"


class ReverseEtlUiPlugin(AirflowPlugin):
    name = "reverse_etl_ui"
    fastapi_apps = [{"app": create_app(), "url_prefix": URL_PREFIX, "name": "Reverse ETL"}]
    external_views = [
        {
            "name": "Reverse ETL",
            "href": f"{URL_PREFIX}/",
            "destination": "nav",
            "category": "browse",
            "url_route": "reverse-etl",
        }
    ]
