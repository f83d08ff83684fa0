from __future__ import annotations

import uuid

import pytest

from guests.inventory import reconcile_host
from guests.models import Guest
from hosts.models import Host
from hosts.virt import VirtTarget, demo_uri
from hosts.virt import domains as virt
from hosts.virt.domain_xml import PV, DomainSpec

pytestmark = pytest.mark.django_db


def test_reconcile_follows_libvirt() -> None:
    host = Host.objects.create(name="t", uri="test:///default")
    first = reconcile_host(host)
    assert first.created >= 1
    assert reconcile_host(host).changed is False
    name = f"oob-{uuid.uuid4().hex[:6]}"
    info = virt.define_domain(VirtTarget(host.uri),
                              DomainSpec(name=name, domain_type="test", os_type=PV,
                                                   kernel="/k"))
    try:
        assert reconcile_host(host).created == 1
        virt.start(VirtTarget(host.uri), info.uuid)  # out of band, as with virsh
        assert reconcile_host(host).updated == 1
        assert Guest.objects.get(uuid=info.uuid).state == "running"
        virt.destroy(VirtTarget(host.uri), info.uuid)
    finally:
        virt.undefine(VirtTarget(host.uri), info.uuid)
    assert reconcile_host(host).removed == 1
    assert not Guest.objects.filter(uuid=info.uuid).exists()


def test_enrolling_the_demo_host_fills_the_inventory(admin_user: object) -> None:
    from hosts.services import enrol_host

    host = enrol_host(name="demo", uri=demo_uri(), user=admin_user)
    guests = {g.name: g for g in host.guests.all()}
    assert guests["Domain-0"].is_privileged
    assert guests["web01"].os_type == PV and guests["web01"].state == "running"
    assert guests["win2019"].os_type == "hvm"
    assert len(guests) == 8
