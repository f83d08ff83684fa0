"""The bounds inspection's readers run under, and that they, not luck, stop a reader on a
file system built to trip it: CPU time (prlimit), memory (prlimit's address space), the
wall clock, and the budget all the readers of one inspection share. Every assertion names
the bound that stopped the reader (its message, the CPU time or memory it was allowed),
never how long something took."""

from __future__ import annotations

from pathlib import Path

import pytest

from conversions.inspection import DamagedImage, inspect_image, run
from conversions.inspection.kernel import MAX_KERNEL_IMAGE
from conversions.inspection.run import Budget, ReaderStopped, run_bounded
from tests.conversions.inspection import hostile
from tests.conversions.inspection.measure import inspect_measured

SPIN = ["sh", "-c", "while :; do :; done"]


def test_a_reader_that_spins_is_stopped_by_its_cpu_limit() -> None:
    with pytest.raises(ReaderStopped, match="sh hit its CPU time limit of 1 s"):
        run_bounded(SPIN, max_output=64, cpu_seconds=1)


def test_a_reader_that_waits_is_stopped_by_its_timeout() -> None:
    with pytest.raises(ReaderStopped, match=r"sleep took longer than 0\.5 s"):
        run_bounded(["sleep", "600"], max_output=64, timeout=0.5)


def test_the_readers_of_one_inspection_share_a_budget() -> None:
    """Each run stays under its own bounds; together they spend the budget."""
    budget = Budget(0.5)
    with pytest.raises(ReaderStopped, match=r"the readers took longer than 0\.5 s in all"):
        for _ in range(10):
            budget.run(["sleep", "0.2"], max_output=64)


def test_the_limits_are_read_when_a_reader_starts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(run, "READER_CPU_SECONDS", 1)
    with pytest.raises(ReaderStopped, match="limit of 1 s"):
        run_bounded(SPIN, max_output=64)


def test_a_root_directory_whose_lookups_never_end(tmp_path: Path) -> None:
    """debugfs looks /etc up in a root directory of 340**4 blocks: the kernel stops it at
    its CPU limit, which refuses the image."""
    measured = inspect_measured(hostile.spinning_root_fs(tmp_path), "raw", cpu_seconds=2)
    assert measured.error == "DamagedImage"
    assert measured.message == (
        "the disk's file system: reading the file system was stopped (debugfs hit its CPU "
        "time limit of 2 s): it is damaged or built to trip its reader.")
    assert measured.readers_cpu_seconds <= 2 + 1  # the limit, and the other readers' bit
    assert measured.readers_peak_bytes < run.READER_ADDRESS_SPACE


def test_a_geometry_that_takes_gigabytes_to_open_meets_the_memory_limit(
        tmp_path: Path) -> None:
    """Opening it allocates 512 MiB of group descriptors (debugfs without prlimit grows to
    that size): under the readers' address-space limit the allocation fails instead."""
    measured = inspect_measured(hostile.giant_geometry_fs(tmp_path), "raw")
    assert measured.error == "DamagedImage"
    assert "debugfs hit its memory limit of 512 MiB" in measured.message
    assert measured.readers_peak_bytes < run.READER_ADDRESS_SPACE
    assert measured.inspector_peak_bytes < MAX_KERNEL_IMAGE


def test_the_budget_stops_an_inspection_of_slow_lookups(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """A lookup under its CPU limit still counts against the inspection's budget."""
    monkeypatch.setattr(run, "INSPECTION_READER_SECONDS", 1.0)
    with pytest.raises(DamagedImage, match=r"was stopped \(the readers took longer than 1 s "
                                           r"in all\)"):
        inspect_image(hostile.spinning_root_fs(tmp_path))


def test_a_file_system_larger_than_its_partition_is_refused(tmp_path: Path) -> None:
    """An ext4 of 16 MiB cut to 8 MiB in an 8 MiB partition: its files may all be in the
    first half, but Linux would not mount it."""
    fs = hostile.truncated_fs(tmp_path, keep=8 * 1024**2)
    with pytest.raises(DamagedImage, match="partition 1: the ext4 file system spans 16777216 "
                                           "bytes but its partition holds 8388608"):
        inspect_image(hostile.in_mbr_disk(tmp_path, fs))
