"""The account bucket must hold across processes: several workers together never pass the limit."""

import multiprocessing as mp
import time

import pytest

from reverse_etl.ratelimit import AccountLimiter, RateSpec

pytestmark = pytest.mark.serial  # clock-checked pacing: run alone (make test's second call)

LIMIT, WINDOW = 8, 1.0


def _worker(url: str, n: int, out) -> None:
    limiter = AccountLimiter("acct", RateSpec(LIMIT, WINDOW), url=url)
    for _ in range(n):
        limiter.acquire()
        out.put(time.time())


def test_bucket_is_shared_by_processes(tmp_path):
    url = f"sqlite:///{tmp_path / 'bucket.sqlite'}"
    queue = mp.get_context("spawn").Queue()
    procs = [mp.get_context("spawn").Process(target=_worker, args=(url, 8, queue)) for _ in range(3)]
    for p in procs:
        p.start()
    stamps = sorted(queue.get(timeout=60) for _ in range(24))
    for p in procs:
        p.join(timeout=30)
    # In any window of WINDOW seconds at most LIMIT acquisitions, across all three processes.
    worst = max(sum(1 for t in stamps if s <= t < s + WINDOW) for s in stamps)
    assert worst <= LIMIT
    # 24 requests at 8 per second need at least two full windows.
    assert stamps[-1] - stamps[0] >= 2 * WINDOW


def test_window_margin_is_small():
    spec = RateSpec(100, 60)
    assert 60_000 < spec.window_ms <= 60_600
    assert RateSpec(5, 1).window_ms == 1250  # short windows keep a floor for worker-to-vendor delay


def test_the_margin_is_a_connection_extra_for_busy_workers(monkeypatch):
    from reverse_etl.errors import ConfigError
    from reverse_etl.hooks.voucherify import VoucherifyHook
    from sandbox.env import conn_json

    assert RateSpec(5, 1, margin_seconds=0.75).window_ms == 1750
    extra = {"requests_per_minute": 300, "rate_window_seconds": 1, "rate_margin_seconds": 0.75}
    monkeypatch.setenv("AIRFLOW_CONN_VOUCHERIFY_DEFAULT", conn_json("http", host="127.0.0.1", extra=extra))
    assert VoucherifyHook().rate_spec() == RateSpec(5, 1, margin_seconds=0.75)
    extra["rate_margin_seconds"] = -1
    monkeypatch.setenv("AIRFLOW_CONN_VOUCHERIFY_DEFAULT", conn_json("http", host="127.0.0.1", extra=extra))
    with pytest.raises(ConfigError, match="rate_margin_seconds must be 0 or more"):
        VoucherifyHook().rate_spec()
    del extra["rate_margin_seconds"]  # unset: the bucket's own default (1 % of the window, at least 0.25 s)
    monkeypatch.setenv("AIRFLOW_CONN_VOUCHERIFY_DEFAULT", conn_json("http", host="127.0.0.1", extra=extra))
    assert VoucherifyHook().rate_spec() == RateSpec(5, 1)
