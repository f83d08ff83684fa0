"""The VMX parser against libvirt's own vmx2xml corpus (../shared/testdata/vmx2xml):
each .vmx parses to the memory, vCPUs, disks, NICs, firmware and name that libvirt's
expected domain XML beside it says. The expected XML is parsed with defusedxml."""

from __future__ import annotations

import posixpath

import pytest
from defusedxml import ElementTree as SafeET

from conversions.v2v.vmx import parse_vmx
from tests.paths import TESTDATA

CORPUS = TESTDATA / "vmx2xml"
CASES = sorted(p.stem for p in CORPUS.glob("*.vmx"))


def _name(source: str) -> str:
    """The file name of a path libvirt's test harness mapped to '[datastore] dir/file'."""
    if source.startswith("["):
        source = source.split("] ", 1)[1]
    return posixpath.basename(source)


def test_the_corpus_is_there() -> None:
    assert len(CASES) == 43


@pytest.mark.parametrize("case", CASES)
def test_vmx_matches_libvirt(case: str) -> None:
    vmx = (CORPUS / f"{case}.vmx").read_text(encoding="utf-8")
    root = SafeET.fromstring((CORPUS / f"{case}.xml").read_text(encoding="utf-8"))
    got = parse_vmx(vmx, source=f"{case}.vmx")

    assert got.memory_mib * 1024 == int(root.findtext("memory"))
    current = int(root.findtext("currentMemory"))
    assert (got.current_memory_mib or got.memory_mib) * 1024 == current
    assert got.vcpus == int(root.findtext("vcpu"))
    topology = root.find("cpu/topology")
    if topology is not None:
        assert got.cores_per_socket == int(topology.get("cores"))
    assert got.name == (root.findtext("name") or "")
    assert got.description == (root.findtext("description") or "")
    os_el = root.find("os")
    assert got.firmware == (os_el.get("firmware") or "bios")
    secure = root.find("os/firmware/feature[@name='secure-boot']")
    assert got.secure_boot == (secure is not None and secure.get("enabled") == "yes")

    expected_disks = []
    for disk in root.findall("devices/disk"):
        source = disk.find("source")
        path = (source.get("file") or source.get("dev") or "") if source is not None else ""
        target = disk.find("target")
        expected_disks.append((disk.get("device"), target.get("bus"), target.get("dev"),
                               _name(path), disk.find("transient") is not None,
                               disk.get("type") == "block"))
    got_disks = [(d.device, d.bus, d.target, posixpath.basename(d.source), d.transient,
                  d.block) for d in got.disks]
    assert got_disks == expected_disks

    expected_nics = []
    for nic in root.findall("devices/interface"):
        mac = nic.find("mac")
        model = nic.find("model")
        bridge = nic.find("source")
        expected_nics.append((mac.get("address"), mac.get("type") or "any",
                              model.get("type") if model is not None else "",
                              bridge.get("bridge") if bridge is not None and
                              nic.get("type") == "bridge" else None,
                              mac.get("check") != "no"))
    # libvirt: bridged/custom with a network name → <source bridge>; others user/null.
    got_nics = [(n.mac, n.mac_type if mac_types else "any", n.model,
                 n.network if n.connection in ("bridged", "custom") and n.network else None,
                 n.check_mac)
                for n, mac_types in zip(got.nics, [e[1] != "any" for e in expected_nics],
                                        strict=False)]
    assert got_nics == expected_nics
