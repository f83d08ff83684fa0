"""lab.control without a lab host: a libvirtd that does not answer is a ControlError naming
the URI (the caller stops the host and reports it), never a libvirt or adapter exception."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from lab.control import ControlError, PoolSpec, destroy_guests, ensure_pools

# Nothing listens there: connecting is refused at once.
DEAD_URI = "qemu+tcp://127.0.0.1:1/system"


def test_pools_on_a_dead_libvirtd(tmp_path: Path) -> None:
    pool_dir = tmp_path / "pools" / "local"
    said = re.escape(f"cannot set up the storage pools on {DEAD_URI}: ")
    with pytest.raises(ControlError, match=said):
        ensure_pools(DEAD_URI, [PoolSpec("local", pool_dir)], timeout=10)
    assert pool_dir.is_dir()  # made before asking libvirtd


def test_guest_teardown_on_a_dead_libvirtd() -> None:
    with pytest.raises(ControlError, match=re.escape(f"cannot stop the guests on {DEAD_URI}: ")):
        destroy_guests(DEAD_URI, timeout=10)
