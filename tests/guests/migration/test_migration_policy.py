"""The live migration's downtime steps (guests.migration.job.DowntimePolicy), fed the
counters libvirt reports between iterations."""

from __future__ import annotations

from guests.migration.job import DowntimePolicy
from hosts.virt.migration import JobStats

MIB = 1024 * 1024


def sample(iteration: int, remaining: int, bps: int | None = 1000 * MIB) -> JobStats:
    return JobStats(active=True, elapsed_ms=0, data_total=None, data_processed=None,
                    data_remaining=remaining, dirty_rate_pages=None, page_size=None,
                    iteration=iteration, memory_bps=bps, downtime_ms=None)


def test_a_converging_migration_keeps_the_small_target() -> None:
    policy = DowntimePolicy(initial_ms=30)
    for iteration, remaining in ((1, 300 * MIB), (2, 40 * MIB), (3, 5 * MIB)):
        assert policy.next_target(sample(iteration, remaining)) is None
    assert policy.current_ms == 30 and policy.steps == []


def test_no_convergence_raises_the_target_to_what_the_remaining_memory_needs() -> None:
    policy = DowntimePolicy(initial_ms=30)
    assert policy.next_target(sample(1, 64 * MIB)) is None
    # 64 MiB still left at 1000 MiB/s: 64 ms, and a quarter more.
    assert policy.next_target(sample(2, 64 * MIB)) == 81
    # Samples within the same iteration change nothing.
    assert policy.next_target(sample(2, 90 * MIB)) is None
    # Little left but still no progress: at least doubled.
    assert policy.next_target(sample(3, 90 * MIB, bps=100_000 * MIB)) == 162
    assert policy.steps == [81, 162]


def test_the_target_stops_at_the_ceiling_and_unknown_bandwidth_doubles() -> None:
    policy = DowntimePolicy(initial_ms=30, ceiling_ms=100)
    policy.next_target(sample(1, 10 * MIB, bps=None))
    assert policy.next_target(sample(2, 10 * MIB, bps=None)) == 60
    assert policy.next_target(sample(3, 900 * MIB)) == 100
    assert policy.next_target(sample(4, 900 * MIB)) is None  # at the ceiling already
    assert policy.current_ms == 100
