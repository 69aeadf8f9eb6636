"""Async jobs in flight on a virtual clock: when polls happen, how many, and what a stuck vendor costs."""

from __future__ import annotations

import pytest

from reverse_etl import jobs as jobs_module
from reverse_etl import progress
from reverse_etl.errors import VendorError
from reverse_etl.jobs import InFlightJobs
from reverse_etl.ledger import DELIVERED, UPSERT, Outcome, Planned


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += max(0.0, seconds)


@pytest.fixture
def clock(monkeypatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr(jobs_module, "time", clock)
    monkeypatch.setattr(progress, "time", clock)
    return clock


def records(ref: str) -> list[Planned]:
    return [Planned(f"{ref}-{i}", UPSERT, "h", '{"big": "payload"}') for i in range(2)]


class Vendor:
    """Runs jobs one after another, ``seconds`` each; a poll sees those finished by now."""

    def __init__(self, clock: Clock, seconds: float) -> None:
        self.clock, self.seconds = clock, seconds
        self.done_at: dict[str, float] = {}
        self.polls: list[tuple[float, int]] = []  # (when, jobs asked about)

    def start(self, ref: str) -> None:
        free = max([self.clock.now, *self.done_at.values()])
        self.done_at[ref] = free + self.seconds

    def poll(self, jobs: dict[str, list[Planned]]) -> dict:
        self.polls.append((self.clock.now, len(jobs)))
        assert all(p.payload is None for batch in jobs.values() for p in batch)  # keys only in memory
        return {
            ref: [Outcome(p.key, DELIVERED) for p in batch]
            for ref, batch in jobs.items()
            if self.done_at[ref] <= self.clock.now
        }


def test_one_job_is_polled_at_1_2_4_8_then_every_30_seconds(clock):
    vendor = Vendor(clock, seconds=100)
    done: list[str] = []
    tracker = InFlightJobs(vendor.poll, lambda ref, batch, outcomes: done.append(ref), what="jobs")
    vendor.start("a")
    tracker.add("a", records("a"))
    tracker.wait()
    assert [t for t, _ in vendor.polls] == [1, 2, 4, 8, 16, 32, 62, 92, 122]
    assert done == ["a"]


def test_at_most_room_jobs_wait_and_each_answer_arrives_once(clock):
    vendor = Vendor(clock, seconds=5)
    answered: list[str] = []
    tracker = InFlightJobs(vendor.poll, lambda ref, batch, outcomes: answered.append(ref), what="jobs")
    for n in range(40):
        clock.sleep(1)  # the POST
        vendor.start(f"j{n}")
        tracker.add(f"j{n}", records(f"j{n}"))
        tracker.wait(until=9)
        assert len(tracker) <= 9
    tracker.wait()
    assert sorted(answered) == sorted(f"j{n}" for n in range(40))
    # 40 jobs of 5 s at the vendor: 200 s of work, polled together about every 30 s, not 40 times a second.
    assert len(vendor.polls) <= 15 and max(asked for _, asked in vendor.polls) == 10


def test_a_vendor_that_finishes_nothing_fails_the_wait_naming_the_jobs(clock):
    vendor = Vendor(clock, seconds=10_000)
    tracker = InFlightJobs(vendor.poll, lambda *answer: None, what="Voucherify jobs", timeout=600)
    for ref in ("aa_1", "aa_2"):
        vendor.start(ref)
        tracker.add(ref, records(ref))
    with pytest.raises(VendorError, match=r"2 Voucherify jobs still unfinished after 600 s.*aa_1, aa_2"):
        tracker.wait()
    assert 600 < clock.now < 700 and len(tracker) == 2  # they stay in flight: a retry resumes them


def test_an_unknown_job_is_handed_back_and_a_blocking_poll_is_not_slept_on(clock):
    handed: list[tuple[str, object]] = []
    tracker = InFlightJobs(
        lambda jobs: dict.fromkeys(jobs), lambda ref, batch, outcomes: handed.append((ref, outcomes)),
        what="jobs", blocking=True,
    )  # fmt: skip
    tracker.add("gone", records("gone"))
    tracker.wait()
    assert handed == [("gone", None)] and clock.now == 0
