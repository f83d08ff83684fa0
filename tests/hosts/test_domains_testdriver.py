"""The domain adapter on libvirt's test driver: inventory and the full lifecycle."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from hosts.virt import VirtError, VirtTarget, demo_uri
from hosts.virt import domains as virt
from hosts.virt.domain_xml import PV, DomainSpec

URI = "test:///default"


def test_demo_inventory_shows_dom0_pv_and_hvm() -> None:
    guests = {g.name: g for g in virt.list_domains(VirtTarget(demo_uri()))}
    assert guests["Domain-0"].is_privileged and guests["Domain-0"].state == "running"
    assert guests["web01"].xml.os_type == PV and not guests["web01"].is_privileged
    assert guests["win2019"].xml.os_type == "hvm"
    assert guests["build01"].state == "paused"
    assert guests["mail01"].state == "shutoff"
    assert guests["web01"].xml.nics[0].mac.startswith("00:16:3e:")


def test_full_lifecycle(tmp_path: Path) -> None:
    name = f"life-{uuid.uuid4().hex[:6]}"
    spec = DomainSpec(name=name, domain_type="test", os_type=PV, memory_mib=128, vcpus=1,
                      kernel="/boot/vmlinuz")
    info = virt.define_domain(VirtTarget(URI), spec)
    try:
        assert info.state == "shutoff" and info.persistent
        virt.start(VirtTarget(URI), info.uuid)
        assert virt.get_domain(VirtTarget(URI), info.uuid).state == "running"
        virt.pause(VirtTarget(URI), info.uuid)
        assert virt.get_domain(VirtTarget(URI), info.uuid).state == "paused"
        virt.resume(VirtTarget(URI), info.uuid)
        saved = str(tmp_path / "guest.save")
        virt.save(VirtTarget(URI), info.uuid, saved)
        assert virt.get_domain(VirtTarget(URI), info.uuid).state == "shutoff"
        virt.restore(VirtTarget(URI), saved)
        assert virt.get_domain(VirtTarget(URI), info.uuid).state == "running"
        virt.set_autostart(VirtTarget(URI), info.uuid, True)
        assert virt.get_domain(VirtTarget(URI), info.uuid).autostart
        virt.shutdown(VirtTarget(URI), info.uuid)
        assert virt.wait_for_state(VirtTarget(URI), info.uuid, ("shutoff",), 10) == "shutoff"
        with pytest.raises(VirtError, match=f"Could not resume guest '{name}'"):
            virt.resume(VirtTarget(URI), info.uuid)
    finally:
        virt.undefine(VirtTarget(URI), info.uuid)
    with pytest.raises(VirtError, match="not found"):
        virt.get_domain(VirtTarget(URI), info.uuid)
