"""Domain XML: built per driver and compared structurally with libvirt's own Xen examples."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest
from defusedxml import ElementTree as SafeET

from hosts.virt.domain_xml import (
    HVM,
    PV,
    PVH,
    DiskSpec,
    DomainSpec,
    NicSpec,
    SpecError,
    build_domain_xml,
    parse_domain_xml,
)
from tests.paths import TESTDATA

XEN_XML = TESTDATA / "xen-xml"


def sample(name: str) -> ET.Element:
    return SafeET.parse(XEN_XML / f"{name}.xml").getroot()


def built(spec: DomainSpec) -> ET.Element:
    return SafeET.fromstring(build_domain_xml(spec))


def pv_spec(**overrides: object) -> DomainSpec:
    fields = dict(
        name="XenGuest2", domain_type="xen", os_type=PV, memory_mib=394, max_memory_mib=579,
        vcpus=1, uuid="c7a5fdb2-cdaf-9455-926a-d65c16db1809", kernel="/tmp/vmlinuz",
        initrd="/tmp/initrd", cmdline="root=/dev/xvda1 console=hvc0",
        disks=(DiskSpec(source="/dev/HostVG/XenGuest2", target="xvda", bus="xen"),),
        nics=(NicSpec(mac="00:16:3e:66:92:9c", bridge="xenbr1"),),
    )
    fields.update(overrides)
    return DomainSpec(**fields)  # type: ignore[arg-type]


def test_pv_guest_matches_libvirts_xen_example() -> None:
    ours, theirs = built(pv_spec()), sample("test-paravirt-cmdline")
    assert ours.get("type") == theirs.get("type") == "xen"
    for path in ("name", "uuid", "os/kernel", "os/initrd", "os/cmdline", "memory",
                 "currentMemory", "vcpu", "on_poweroff", "on_reboot"):
        assert ours.findtext(path) == theirs.findtext(path), path
    assert ours.find("os/type").attrib == theirs.find("os/type").attrib
    assert ours.findtext("os/type") == theirs.findtext("os/type") == "linux"
    for path in ("devices/disk/source", "devices/disk/target", "devices/interface/mac",
                 "devices/interface/source", "devices/console/target"):
        assert ours.find(path).attrib == theirs.find(path).attrib, path


def test_pvh_guest_matches_libvirts_xen_example() -> None:
    ours = built(pv_spec(os_type=PVH, disks=(), nics=()))
    theirs = sample("test-pvh-type")
    assert ours.find("os/type").attrib == theirs.find("os/type").attrib
    assert ours.findtext("os/type") == theirs.findtext("os/type") == "xenpvh"
    assert ours.find("devices/console/target").attrib == {"type": "xen", "port": "0"}


def test_hvm_guest_matches_libvirts_xen_example() -> None:
    ours = built(pv_spec(os_type=HVM, kernel="", boot=("cdrom",), disks=(), nics=()))
    theirs = sample("test-fullvirt-type")
    assert ours.find("os/type").attrib == theirs.find("os/type").attrib
    assert ours.find("os/boot").attrib == theirs.find("os/boot").attrib == {"dev": "cdrom"}
    assert {f.tag for f in ours.find("features")} == {f.tag for f in theirs.find("features")}


def test_max_vcpus_like_libvirts_example() -> None:
    ours = built(pv_spec(vcpus=4, max_vcpus=8, kernel="", bootloader="/usr/bin/pygrub"))
    theirs = sample("test-paravirt-maxvcpus")
    assert ours.find("vcpu").attrib.get("current") == theirs.find("vcpu").get("current") == "4"
    assert ours.findtext("vcpu") == theirs.findtext("vcpu") == "8"
    assert ours.findtext("bootloader") == theirs.findtext("bootloader")


@pytest.mark.parametrize("name", sorted(p.stem for p in XEN_XML.glob("*.xml")))
def test_parser_reads_every_xen_example(name: str) -> None:
    text = (XEN_XML / f"{name}.xml").read_text()
    info = parse_domain_xml(text)
    root = SafeET.fromstring(text)
    assert info.name == root.findtext("name")
    assert info.max_memory_mib == int(root.findtext("memory")) // 1024
    assert len(info.disks) == len(root.findall("devices/disk"))
    assert len(info.nics) == len(root.findall("devices/interface"))
    expected_type = {"linux": PV, "xenpvh": PVH, "hvm": HVM}[root.findtext("os/type")]
    assert info.os_type == expected_type


def test_round_trip() -> None:
    spec = pv_spec(vcpus=2, max_vcpus=4, description="web & <mail>")
    info = parse_domain_xml(build_domain_xml(spec))
    assert (info.name, info.vcpus, info.max_vcpus) == ("XenGuest2", 2, 4)
    assert (info.memory_mib, info.max_memory_mib) == (394, 579)
    assert info.disks[0].source == "/dev/HostVG/XenGuest2"
    assert info.nics[0].mac == "00:16:3e:66:92:9c" and info.nics[0].source == "xenbr1"
    assert info.description == "web & <mail>"


@pytest.mark.parametrize("name", ["a<b", "x&y", "quote'd", 'd"q', "x" * 300, "", "-lead",
                                  "sp ace", "new\nline"])
def test_hostile_names_are_refused(name: str) -> None:
    with pytest.raises(SpecError, match="Guest names"):
        build_domain_xml(pv_spec(name=name))


def test_hostile_text_is_escaped_not_injected() -> None:
    evil = "</cmdline><devices><disk type='file'><source file='/etc/shadow'/></disk></devices>"
    root = built(pv_spec(cmdline=evil, description="<x>&"))
    assert root.findtext("os/cmdline") == evil
    assert len(root.findall("devices/disk")) == 1


@pytest.mark.parametrize(("overrides", "message"), [
    ({"vcpus": 0}, "vCPUs"),
    ({"memory_mib": -5}, "Memory"),
    ({"memory_mib": 1024, "max_memory_mib": 512}, "Memory"),
    ({"os_type": "banana"}, "Unknown guest type"),
    ({"domain_type": "qemu"}, "need a Xen host"),
    ({"nics": (NicSpec(mac="zz:zz"),)}, "not a MAC"),
    ({"nics": (NicSpec(mac="00:16:3e:00:00:01"),)}, "bridge or a network"),
])
def test_bad_specs_say_what_is_wrong(overrides: dict, message: str) -> None:
    with pytest.raises(SpecError, match=message):
        build_domain_xml(pv_spec(**overrides))


def test_raw_pv_disks_use_blkback_like_libvirts_example() -> None:
    """A PV-only dom0 need not have qemu-system-xen: raw disks go through blkback ("phy",
    a loop device for a file), as in libvirt's own Xen XML; qcow2 needs qdisk ("qemu")."""
    theirs = sample("test-new-disk").find("devices/disk/driver").attrib
    raw = built(pv_spec(disks=(DiskSpec(source="/var/lib/xen/images/a.img", target="xvda",
                                        bus="xen"),)))
    assert raw.find("devices/disk/driver").attrib == theirs == {"name": "phy", "type": "raw"}
    qcow2 = built(pv_spec(disks=(DiskSpec(source="/var/lib/xen/images/a.qcow2", target="xvda",
                                          bus="xen", format="qcow2"),)))
    assert qcow2.find("devices/disk/driver").attrib == {"name": "qemu", "type": "qcow2"}


def test_uefi_firmware_for_hvm_guests_only() -> None:
    efi = built(pv_spec(os_type=HVM, kernel="", firmware="efi", disks=(), nics=()))
    assert efi.find("os").get("firmware") == "efi"
    assert built(pv_spec(os_type=HVM, kernel="", disks=(), nics=())).find("os").get(
        "firmware") is None
    with pytest.raises(SpecError, match="UEFI firmware needs an HVM guest"):
        build_domain_xml(pv_spec(firmware="efi"))
    with pytest.raises(SpecError, match="Unknown firmware"):
        build_domain_xml(pv_spec(os_type=HVM, kernel="", firmware="coreboot"))
