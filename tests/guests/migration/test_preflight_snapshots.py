"""The migration preflight knows libvirt's refusal to move a guest with snapshots ("cannot
migrate domain with 1 snapshots" came only after every check had passed): on the demo host
(libvirt's test driver keeps snapshot metadata like a real driver)."""

from __future__ import annotations

import pytest

from guests.migration.preflight import MigrationOptions, check_snapshots, preflight
from guests.models import Guest
from hosts.models import Host
from hosts.virt import VirtTarget, demo_uri
from hosts.virt import snapshots as virt

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("mode", ["live", "paused", "offline", "cold"])
def test_a_guest_with_snapshots_is_refused_before_anything_moves(demo: Host, mode: str) -> None:
    guest = Guest.objects.get(name="web01")
    target = Host.objects.create(name="other", uri="test:///default")
    options = MigrationOptions(mode=mode)
    assert check_snapshots(guest, target, options).ok
    for name in ("before-upgrade", "nightly"):
        virt.create_snapshot(VirtTarget(demo_uri()), str(guest.uuid),
                             virt.SnapshotRequest(name=name))
    check = check_snapshots(guest, target, options)
    assert not check.ok
    assert check.message.startswith("'web01' has 2 snapshots ('before-upgrade', 'nightly')")
    result = preflight(guest, target, options)
    assert not result.ok and "libvirt moves no guest with snapshots" in result.summary()
    for name in ("before-upgrade", "nightly"):
        virt.delete_snapshot(VirtTarget(demo_uri()), str(guest.uuid), name)
    assert check_snapshots(guest, target, options).ok
