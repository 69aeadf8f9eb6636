"""A running ``make stack`` as its user sees it: Airflow's REST API behind the login, and the sandboxes'
request logs. Used by the stack's end-to-end test and its benchmark."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import requests

STACK_SCRIPT = Path(__file__).resolve().parent / "stack.py"


class Stack:
    def __init__(self, state: dict):
        self.state = state
        self.url = state["url"]
        token = requests.post(
            f"{self.url}/auth/token",
            json={"username": state["user"], "password": state["password"]},
            timeout=30,
        ).json()["access_token"]
        self.http = requests.Session()
        self.http.headers["Authorization"] = f"Bearer {token}"

    @classmethod
    def start(cls, env: dict[str, str]) -> Stack:
        """``python scripts/stack.py`` with ``env`` (RETL_STACK_HOME and the other knobs); its client."""
        up = subprocess.run(
            [sys.executable, str(STACK_SCRIPT)], env=env, capture_output=True, text=True, timeout=900
        )
        if up.returncode:
            raise RuntimeError(f"make stack failed:\n{up.stdout[-3000:]}\n{up.stderr[-3000:]}")
        return cls(json.loads((Path(env["RETL_STACK_HOME"]) / "stack.json").read_text()))

    @staticmethod
    def stop(env: dict[str, str]) -> None:
        subprocess.run([sys.executable, str(STACK_SCRIPT), "--down"], env=env, check=True, timeout=300)

    def kill_worker(self, number: str) -> None:
        home = str(Path(self.state["airflow_home"]).parent)
        subprocess.run(
            [sys.executable, str(STACK_SCRIPT), "--kill-worker", number],
            env={**os.environ, "RETL_STACK_HOME": home},
            check=True,
            timeout=60,
        )

    def api(self, method: str, path: str, **kwargs) -> dict:
        response = self.http.request(method, f"{self.url}/api/v2/{path}", timeout=60, **kwargs)
        if response.status_code >= 300:
            raise RuntimeError(f"{method} {path}: {response.status_code} {response.text[:500]}")
        return response.json()

    def trigger(self, dag_id: str, conf: dict) -> str:
        return self.api("POST", f"dags/{dag_id}/dagRuns", json={"logical_date": None, "conf": conf})[
            "dag_run_id"
        ]

    def runs(self, dag_id: str) -> list[dict]:
        return self.api("GET", f"dags/{dag_id}/dagRuns", params={"limit": 100})["dag_runs"]

    def task_instances(self, dag_id: str, run_id: str = "~", **params) -> list[dict]:
        found = self.api(
            "GET", f"dags/{dag_id}/dagRuns/{run_id}/taskInstances", params={"limit": 1000, **params}
        )
        return found["task_instances"]

    def tries(self, ti: dict) -> list[dict]:
        path = f"dags/{ti['dag_id']}/dagRuns/{ti['dag_run_id']}/taskInstances/{ti['task_id']}/tries"
        return self.api("GET", path)["task_instances"]

    def sandbox(self, name: str, what: str):
        return requests.get(f"{self.state['sandboxes'][name]}/_sandbox/{what}", timeout=60).json()

    def unpause_and_wait_parsed(self, dags: tuple[str, ...], unpause: tuple[str, ...] | None = None) -> None:
        """Wait until every DAG of ``dags`` is parsed, then unpause those of ``unpause`` (all by default)."""
        wait_for(lambda: len(self.api("GET", "dags")["dags"]) == len(dags), "the DAGs to be parsed", 300)
        for dag_id in dags if unpause is None else unpause:
            self.api("PATCH", f"dags/{dag_id}", json={"is_paused": False})

    def finished_runs(self, dags: tuple[str, ...]) -> list[dict] | None:
        """Every run of ``dags`` once none is queued or running, else None."""
        runs = [run for dag_id in dags for run in self.runs(dag_id)]
        return runs if all(run["state"] in ("success", "failed") for run in runs) else None


def wait_for(predicate, what: str, timeout: float = 1200, every: float = 3):
    """``predicate()``'s first truthy answer; raises after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        found = predicate()
        if found:
            return found
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(every)
