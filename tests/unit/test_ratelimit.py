"""The account bucket must hold across processes: several workers together never pass the limit."""

import multiprocessing as mp
import time

from reverse_etl.ratelimit import AccountLimiter, RateSpec

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
