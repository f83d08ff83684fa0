"""Capabilities parsed from libvirt's real Xen samples, the demo and the test driver."""

from __future__ import annotations

import pytest

from hosts.virt import VirtTarget, demo_uri
from hosts.virt.capabilities import host_capabilities, parse_capabilities
from tests.paths import TESTDATA

CAPS = TESTDATA / "xen-caps"


def caps(name: str):
    return parse_capabilities((CAPS / f"{name}.xml").read_text())


def test_x86_64_host_with_svm_offers_pv_and_hvm() -> None:
    host = caps("xen-x86_64-hvm")
    assert host.arch == "x86_64" and "svm" in host.cpu_features
    assert host.guest_types() == ("xen", "hvm")
    assert host.supports("xen", "xen") and host.supports("hvm", "xen")
    hvm_arches = {g.arch for g in host.guests if g.os_type == "hvm"}
    assert hvm_arches == {"i686", "x86_64"}
    assert {g.machines for g in host.guests} == {("xenpv",), ("xenfv",)}


def test_host_without_vt_offers_pv_only() -> None:
    host = caps("xen-x86_64")
    assert host.guest_types() == ("xen",)
    assert not host.supports("hvm")


def test_i686_pae_host() -> None:
    host = caps("xen-i686-pae-hvm")
    assert host.arch == "i686" and "vmx" in host.cpu_features
    assert host.pae
    assert host.guest_types() == ("xen", "hvm")
    assert all(g.wordsize == 32 for g in host.guests)


@pytest.mark.parametrize("uri", ["test:///default", demo_uri()])
def test_live_capabilities_from_the_test_driver(uri: str) -> None:
    host = host_capabilities(VirtTarget(uri))
    assert host.supports("hvm", "test") and host.supports("xen", "test")
    assert host.arch == "i686"  # the test driver's fixed capabilities, node file or not
