"""hosts.virt.host_setup on libvirt's test driver: dir pools made idempotently, running
guests powered off, each on a connection of its own."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from hosts.virt import HostUnreachable, VirtTarget
from hosts.virt.host_setup import DirPool, destroy_running_guests, ensure_dir_pools
from hosts.virt.pools import PoolInfo, delete_pool, list_pools

URI = "test:///default"
TEST_NS = "http://libvirt.org/schemas/domain/test/1.0"
# Nothing listens there: connecting is refused at once.
DEAD_URI = "qemu+tcp://127.0.0.1:1/system"


def _pools() -> dict[str, PoolInfo]:
    # The pooled connection keeps test:///default's state between the adapter's own
    # connections (the shared default driver lives while a connection to it is open).
    return {pool.name: pool for pool in list_pools(VirtTarget(URI))}


def test_dir_pools_are_defined_started_autostarted_and_moved(tmp_path: Path) -> None:
    names = [f"setup-{uuid.uuid4().hex[:6]}", f"setup-{uuid.uuid4().hex[:6]}"]
    _pools()
    try:
        first = [DirPool(name, str(tmp_path / name)) for name in names]
        ensure_dir_pools(VirtTarget(URI), first)
        ensure_dir_pools(VirtTarget(URI), first)  # idempotent
        pools = _pools()
        for spec in first:
            pool = pools[spec.name]
            assert pool.active and pool.autostart and pool.pool_type == "dir"
            assert pool.target_path == spec.path

        moved = DirPool(names[0], str(tmp_path / "elsewhere"))
        ensure_dir_pools(VirtTarget(URI), [moved])
        pool = _pools()[names[0]]
        assert pool.target_path == moved.path and pool.active and pool.autostart
    finally:
        for name in names:
            delete_pool(VirtTarget(URI), name)


def _domain(name: str, runstate: int) -> str:
    return (
        f'<domain type="test" xmlns:test="{TEST_NS}"><name>{name}</name>'
        f"<uuid>{uuid.uuid4()}</uuid><memory>131072</memory><vcpu>1</vcpu>"
        '<os><type arch="x86_64">hvm</type></os>'
        f"<test:runstate>{runstate}</test:runstate></domain>"
    )


def test_running_and_paused_guests_are_destroyed(tmp_path: Path) -> None:
    node = tmp_path / "node.xml"
    node.write_text(
        "<node>" + _domain("up", 1) + _domain("paused", 3) + _domain("off", 5) + "</node>"
    )
    assert sorted(destroy_running_guests(VirtTarget(f"test://{node}"))) == ["paused", "up"]


@pytest.mark.parametrize(
    "call",
    [
        lambda: ensure_dir_pools(VirtTarget(DEAD_URI, allow_insecure=True),
                                 [DirPool("p", "/tmp/p")]),
        lambda: destroy_running_guests(VirtTarget(DEAD_URI, allow_insecure=True)),
    ],
    ids=["pools", "guests"],
)
def test_an_unreachable_daemon_raises_virt_errors(call: Callable[[], object]) -> None:
    with pytest.raises(HostUnreachable):
        call()
