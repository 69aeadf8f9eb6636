"""`make stack`: the production shape on one machine. Airflow on the CeleryExecutor (api-server, scheduler,
dag-processor, triggerer, two Celery workers named worker-1 and worker-2), PostgreSQL for Airflow's metadata
and the state store, Redis as Celery's broker and for the rate buckets, staging on an S3-compatible server
(``python -m sandbox.s3``), and every vendor sandbox at the vendors' real limits (100 requests/minute).

    python scripts/stack.py                  # start in the background, wait until the UI answers
    python scripts/stack.py --down           # stop everything it started (make stack-down)
    python scripts/stack.py --kill-worker 1  # SIGKILL worker-1 and its tasks (what a lost host looks like)

PostgreSQL and Redis must already run (``RETL_STACK_POSTGRES_URL``, ``RETL_STACK_REDIS_URL``); the stack
creates its databases ``<RETL_STACK_NAME>_airflow`` and ``<RETL_STACK_NAME>_state`` there. Everything else
lands in ``RETL_STACK_HOME`` (``.stack/``): Airflow's home and logs, the sample warehouse, ``stack.json``
(what runs where) and ``stack.log``. Anything that listens binds 127.0.0.1; the UI asks for a login.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

REPO = Path(__file__).resolve().parents[1]
STACK_HOME = Path(os.environ.get("RETL_STACK_HOME") or REPO / ".stack").resolve()
os.environ["RETL_LOCAL_DIR"] = str(STACK_HOME)  # local.py puts Airflow's home and the warehouse there

import psutil  # noqa: E402
from local import HOME, ensure_warehouse, environment, free_port, prepare, say, shown, start_sandboxes  # noqa: E402
from procs import spawn, stop  # noqa: E402
from ui import ADMIN, admin_password, wait_until_serving  # noqa: E402

from sandbox.s3 import staging_env  # noqa: E402

NAME = os.environ.get("RETL_STACK_NAME", "retl_stack")
PORT = int(os.environ.get("RETL_STACK_PORT", "8081"))
POSTGRES = os.environ.get("RETL_STACK_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS = os.environ.get("RETL_STACK_REDIS_URL", "redis://127.0.0.1:6379/0")
WORKERS = int(os.environ.get("RETL_STACK_WORKERS", "2"))
# "1": worker N runs on CPU N-1 only (taskset), as if each worker were a host with one core (the benchmark)
PIN_CPUS = os.environ.get("RETL_STACK_PIN_CPUS") == "1"
# extras for every vendor connection, e.g. {"import_poll_seconds": 2} (the tests' shorter polls)
VENDOR_EXTRA = json.loads(os.environ.get("RETL_STACK_VENDOR_EXTRA") or "{}")
CUSTOMERS = int(os.environ.get("RETL_STACK_CUSTOMERS", "10000"))  # sample warehouse size, built once
CONCURRENCY = int(os.environ.get("RETL_STACK_CONCURRENCY", "4"))
# how soon the scheduler gives up on a task whose worker went silent and lets it retry (Airflow: 300 s)
HEARTBEAT_TIMEOUT = int(os.environ.get("RETL_STACK_HEARTBEAT_TIMEOUT", "60"))
VENDOR_LIMIT = 100  # requests per minute: Voucherify's Business plan, Connectif's documented limit
STATE_FILE = STACK_HOME / "stack.json"
LOG = STACK_HOME / "stack.log"
COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")
SERVE_LOGS = ("scheduler", "triggerer")  # would start a log server on every interface
STARTUP_SECONDS = 240


def database_url(name: str, driver: str = "postgresql") -> str:
    """``POSTGRES`` with its database swapped for ``name``."""
    parts = urlsplit(POSTGRES)
    return parts._replace(scheme=driver, path=f"/{name}").geturl()


def check_services() -> None:
    """PostgreSQL and Redis answer, or one message saying which is missing and how to start it."""
    import psycopg2
    import redis

    try:
        psycopg2.connect(POSTGRES, connect_timeout=5).close()
    except psycopg2.Error as err:
        raise SystemExit(
            f"PostgreSQL is not reachable at {POSTGRES} ({str(err).strip()}): start it (e.g. "
            "`apt-get install postgresql && service postgresql start`) or set RETL_STACK_POSTGRES_URL"
        ) from None
    try:
        redis.Redis.from_url(REDIS, socket_connect_timeout=5).ping()
    except redis.RedisError as err:
        raise SystemExit(
            f"Redis is not reachable at {REDIS} ({err}): start it (e.g. `apt-get install redis-server && "
            "service redis-server start`) or set RETL_STACK_REDIS_URL"
        ) from None


def create_databases() -> None:
    """The stack's two databases, created once (CREATE DATABASE cannot run inside a transaction)."""
    import psycopg2

    conn = psycopg2.connect(POSTGRES)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            for name in (f"{NAME}_airflow", f"{NAME}_state"):
                cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name])
                if not cur.fetchone():
                    cur.execute(f'CREATE DATABASE "{name}"')
    finally:
        conn.close()


def stack_env(env: dict[str, str], url: str, s3_endpoint: str) -> dict[str, str]:
    """``env`` moved onto the shared services: metadata, state store and buckets, Celery, S3 staging."""
    metadata = database_url(f"{NAME}_airflow", "postgresql+psycopg2")
    env = {**env, **staging_env(s3_endpoint)}
    env.update(
        {
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": metadata,
            "AIRFLOW_CONN_RETL_STATE": database_url(f"{NAME}_state", "postgres"),
            "RETL_RATE_LIMIT_URL": REDIS,
            "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
            "AIRFLOW__CORE__PARALLELISM": str(WORKERS * CONCURRENCY),
            "AIRFLOW__CORE__HOSTNAME_CALLABLE": "reverse_etl.settings.worker_hostname",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{url}/execution/",
            "AIRFLOW__CELERY__BROKER_URL": REDIS,
            "AIRFLOW__CELERY__RESULT_BACKEND": f"db+{database_url(f'{NAME}_airflow')}",
            "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(CONCURRENCY),
            # workers import GX, pandas, DuckDB and the engine once, before forking (reverse_etl.celery_config)
            "AIRFLOW__CELERY__CELERY_CONFIG_OPTIONS": "reverse_etl.celery_config.CELERY_CONFIG",
            # a stack of its own on a shared Redis: its own queue, so no other stack's worker takes its tasks
            "AIRFLOW__OPERATORS__DEFAULT_QUEUE": NAME,
            # Redis re-delivers an unacknowledged task after this long: longer than any task, so a lost
            # worker's task comes back through Airflow's retry (heartbeat timeout), not twice
            "AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__VISIBILITY_TIMEOUT": "86400",
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": str(HEARTBEAT_TIMEOUT),
            # what a dead worker had taken but not started stays queued until this (Airflow: 600 s)
            "AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT": str(2 * HEARTBEAT_TIMEOUT),
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(PORT),
            "AIRFLOW__API__WORKERS": "1",
            "AIRFLOW__CORE__AUTH_MANAGER": (
                "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
            ),
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "False",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{ADMIN}:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(
                HOME / "simple_auth_manager_passwords.json.generated"
            ),
            "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
        }
    )
    return env


def start(env: dict[str, str], started: list[subprocess.Popen]) -> dict[str, subprocess.Popen]:
    """Airflow's components and the workers, each logging to ``$AIRFLOW_HOME/stack-<name>.log``. No log
    servers (they listen on every interface): everything runs on this host and logs go to one folder."""
    commands = {name: [name, "--skip-serve-logs"] if name in SERVE_LOGS else [name] for name in COMPONENTS}
    for n in range(1, WORKERS + 1):
        commands[f"worker-{n}"] = [
            "celery",
            "worker",
            "--celery-hostname",
            f"worker-{n}@%h",
            "--queues",
            NAME,
            "--concurrency",
            str(CONCURRENCY),
            "--skip-serve-logs",
        ]
    running = {}
    for name, args in commands.items():
        own = {**env, "RETL_WORKER_NAME": name} if name.startswith("worker-") else env
        with (HOME / f"stack-{name}.log").open("w") as log:
            command = [sys.executable, "-m", "airflow", *args]
            if PIN_CPUS and name.startswith("worker-"):
                cpu = (int(name.removeprefix("worker-")) - 1) % (os.cpu_count() or 1)
                command = ["taskset", "--cpu-list", str(cpu), *command]
            running[name] = spawn(command, env=own, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
        started.append(running[name])
    return running


def serve() -> int:
    """The launcher: starts everything, writes ``stack.json``, watches, and stops it all on SIGTERM."""
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt))
    started: list[subprocess.Popen] = []
    try:
        check_services()
        create_databases()
        ensure_warehouse(CUSTOMERS)
        (HOME / "retl").mkdir(parents=True, exist_ok=True)
        sandboxes = start_sandboxes(
            {name: free_port() for name in ("voucherify", "salesfire", "connectif", "sftp", "datatalks")},
            VENDOR_LIMIT,
        )
        started.extend(sandboxes.procs)
        s3 = spawn([sys.executable, "-m", "sandbox.s3"], cwd=REPO, stdout=subprocess.PIPE, text=True)
        started.append(s3)
        s3_endpoint = json.loads(s3.stdout.readline() or "{}").get("endpoint_url")
        if not s3_endpoint:
            raise SystemExit("the S3 sandbox did not start (see above)")
        url = f"http://127.0.0.1:{PORT}"
        env = stack_env(environment(sandboxes, VENDOR_LIMIT, VENDOR_EXTRA), url, s3_endpoint)
        with (HOME / "stack-setup.log").open("w") as log:
            prepare(env, log, f"PostgreSQL databases {NAME}_state, {NAME}_airflow")
        password = admin_password()
        running = start(env, started)
        failed = wait_until_serving(url, running)
        if failed:
            raise SystemExit(f"the {failed} did not start: see {shown(HOME / f'stack-{failed}.log')}")
        state = {
            "launcher": os.getpid(),
            "url": url,
            "user": ADMIN,
            "password": password,
            "airflow_home": str(HOME),
            "env": {k: v for k, v in env.items() if k.startswith(("AIRFLOW", "RETL_")) or k == "PYTHONPATH"},
            "sandboxes": {**sandboxes.urls, "sftp": sandboxes.sftp, "s3": s3_endpoint},
            "pids": {name: proc.pid for name, proc in running.items()},
        }
        STATE_FILE.write_text(json.dumps(state, indent=2) + "\n")
        STATE_FILE.chmod(0o600)  # it holds the admin password
        say("stack ready")
        gone: set[str] = set()
        while True:
            for name, proc in running.items():
                if name not in gone and proc.poll() is not None:
                    gone.add(name)
                    say(f"{name} exited ({proc.returncode}): see {shown(HOME / f'stack-{name}.log')}")
            time.sleep(1)
    except KeyboardInterrupt:
        return 0
    finally:
        if started:
            say("stopping the stack")
            stop(started[::-1])
        STATE_FILE.unlink(missing_ok=True)


def read_state() -> dict | None:
    """``stack.json`` while its launcher lives, else None."""
    with contextlib.suppress(FileNotFoundError, ValueError):
        state = json.loads(STATE_FILE.read_text())
        if psutil.pid_exists(state["launcher"]):
            return state
    return None


def up() -> int:
    if state := read_state():
        say(f"already running: {state['url']}/ (make stack-down stops it)")
        return 0
    STACK_HOME.mkdir(parents=True, exist_ok=True)
    STATE_FILE.unlink(missing_ok=True)
    say(f"starting the stack in the background (log: {shown(LOG)})")
    with LOG.open("w") as log:
        launcher = subprocess.Popen(
            [sys.executable, __file__, "--serve"],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + STARTUP_SECONDS + 120
    while not STATE_FILE.exists():
        if launcher.poll() is not None or time.monotonic() > deadline:
            print(LOG.read_text()[-3000:], file=sys.stderr)
            say("the stack did not start (its log is above)")
            return 1
        time.sleep(1)
    state = json.loads(STATE_FILE.read_text())
    say(f"Airflow UI at {state['url']}/ : log in as {state['user']} with password {state['password']}")
    say(
        f"CeleryExecutor, {WORKERS} workers x {CONCURRENCY} slots (worker-1 ... on queue {NAME}), Redis {REDIS}"
    )
    say(f"Airflow metadata and state store: PostgreSQL databases {NAME}_airflow and {NAME}_state")
    say(f"staging: {state['env']['RETL_STAGING_URL']} (S3 sandbox at {state['sandboxes']['s3']})")
    say(f"vendor sandboxes at {VENDOR_LIMIT} requests/minute; logs in {shown(HOME)}/stack-*.log")
    say("make stack-down stops it all")
    return 0


def down() -> int:
    state = read_state()
    if not state:
        say("no stack is running")
        return 0
    os.kill(state["launcher"], signal.SIGTERM)
    with contextlib.suppress(psutil.NoSuchProcess):
        psutil.Process(state["launcher"]).wait(timeout=120)
    say("stack stopped")
    return 0


def kill_worker(number: int) -> int:
    """SIGKILL worker ``number`` and every process under it: its task supervisors lead process groups of
    their own, so killing the worker's group alone would leave its tasks running."""
    state = read_state()
    if not state or f"worker-{number}" not in state["pids"]:
        raise SystemExit(f"no running stack with a worker-{number}")
    root = psutil.Process(state["pids"][f"worker-{number}"])
    tree = [root, *root.children(recursive=True)]
    for proc in tree:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.kill()
    say(f"killed worker-{number} ({len(tree)} processes)")
    return 0


def main(argv: list[str]) -> int:
    if argv[:1] == ["--serve"]:
        return serve()
    if argv[:1] == ["--down"]:
        return down()
    if argv[:1] == ["--kill-worker"] and len(argv) == 2:
        return kill_worker(int(argv[1]))
    if argv:
        raise SystemExit(__doc__)
    return up()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
