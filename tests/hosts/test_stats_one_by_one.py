"""Counters read domain by domain, the way the sampler reads a driver without the bulk call
or host CPU counters (libvirt's libxl driver; the Xen suite proves it on a real dom0).
Here on libvirt's test driver, whose per-domain calls count: disks by their target, NICs
by their MAC."""

from __future__ import annotations

import libvirt
import pytest

from hosts.virt.stats import device_counters, guest_one_by_one


@pytest.fixture
def conn() -> libvirt.virConnect:
    return libvirt.open("test:///default")


def test_a_running_domain_read_by_itself_has_every_counter(conn: libvirt.virConnect) -> None:
    dom = conn.lookupByName("test")
    counters = guest_one_by_one(dom)
    assert counters.uuid == dom.UUIDString()
    assert counters.vcpus == 2 and counters.memory_kib == 2 * 1024 * 1024
    assert counters.cpu_time_ns > 0
    assert counters.disk_read_bytes > 0 and counters.disk_write_bytes > 0
    assert counters.net_rx_bytes > 0 and counters.net_tx_bytes > 0
    # Counters only grow between two readings.
    again = guest_one_by_one(dom)
    assert again.cpu_time_ns >= counters.cpu_time_ns
    assert again.disk_read_bytes >= counters.disk_read_bytes


def test_a_device_the_driver_cannot_count_reads_as_zero(conn: libvirt.virConnect) -> None:
    dom = conn.lookupByName("test")
    assert list(device_counters(dom.blockStats, "xvdz")) == [0] * 8
    assert list(device_counters(dom.interfaceStats, "52:54:00:00:00:99")) == [0] * 8
    assert device_counters(dom.blockStats, "vda")[1] > 0
