"""OVA/OVF: the envelope read through defusedxml, the manifest verified, the tar read
member by member; every hostile archive of issue 8 item 7 refused."""

from __future__ import annotations

import tarfile
from pathlib import Path

import pytest

from storage.v2v.inspect import inspect
from storage.v2v.proposal import ImportRefused
from tests.storage.v2v.conftest import MIB, make_vmdk, patterned_raw
from tests.storage.v2v.ova_maker import build_ova, ovf_text


def _disks(area: Path, tmp_path: Path) -> list[Path]:
    work = tmp_path / "disks"
    work.mkdir(exist_ok=True)
    return [make_vmdk(work, f"d{i}", "streamOptimized",
                      patterned_raw(tmp_path / f"r{i}.raw", size))
            for i, size in enumerate((8 * MIB, 4 * MIB))]


def test_inspect_an_ova(area: Path, tmp_path: Path) -> None:
    build_ova(area / "vm.ova", "appliance", _disks(area, tmp_path))
    got = inspect("vm.ova")
    assert (got.kind, got.name, got.vcpus, got.memory_mib, got.firmware, got.description) \
        == ("ova", "appliance", 2, 512, "efi", "from an OVA")
    assert [(d.device, d.bus, d.unit, d.virtual_size, d.member) for d in got.disks] == [
        ("disk", "scsi", 0, 8 * MIB, "d0.vmdk"), ("disk", "scsi", 1, 4 * MIB, "d1.vmdk"),
        ("cdrom", "ide", 0, 0, "")]
    assert [(n.mac, n.model, n.network) for n in got.nics] == [
        ("00:50:56:aa:bb:01", "vmxnet3", "VM Network")]
    assert got.os_family == "linux"


def test_inspect_an_ovf_directory(area: Path, tmp_path: Path) -> None:
    disks = _disks(area, tmp_path)
    for disk in disks:
        disk.rename(area / disk.name)
    sizes = [(d.name, (area / d.name).stat().st_size, s)
             for d, s in zip(disks, (8 * MIB, 4 * MIB), strict=True)]
    (area / "vm.ovf").write_text(ovf_text("dir", sizes))
    got = inspect("vm.ovf")
    assert [d.path for d in got.images] == ["d0.vmdk", "d1.vmdk"]
    assert any("No manifest" in w for w in got.warnings)


def _member(name: str, kind: bytes = tarfile.REGTYPE, size: int = 3,
            link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.size, info.linkname = kind, size if kind == tarfile.REGTYPE else 0, link
    return info


@pytest.mark.parametrize(("member", "message"), [
    (_member("/etc/cron.d/x"), "absolute paths"),
    (_member("../../escape"), "absolute paths"),
    (_member("sub/dir.vmdk"), "sub-directories"),
    (_member("evil", tarfile.SYMTYPE, link="/etc/shadow"), "is a link"),
    (_member("hard", tarfile.LNKTYPE, link="d0.vmdk"), "is a link"),
    (_member("sda", tarfile.BLKTYPE), "is a device"),
    (_member("d0.vmdk"), "twice"),
])
def test_hostile_members_are_refused(area: Path, tmp_path: Path, member: tarfile.TarInfo,
                                     message: str) -> None:
    build_ova(area / "bad.ova", "x", _disks(area, tmp_path), extra=[member])
    with pytest.raises(ImportRefused, match=message):
        inspect("bad.ova")


def test_manifest_mismatch_is_refused_by_the_job_check(area: Path, tmp_path: Path) -> None:
    from storage.v2v.ova import verify_digests

    build_ova(area / "t.ova", "x", _disks(area, tmp_path), tamper=True)
    proposal = inspect("t.ova")
    with pytest.raises(ImportRefused, match="does not match"):
        verify_digests(area / "t.ova", proposal)


def test_declared_file_size_mismatch_is_refused(area: Path, tmp_path: Path) -> None:
    disks = _disks(area, tmp_path)
    sizes = [(d.name, d.stat().st_size + 512, s)
             for d, s in zip(disks, (8 * MIB, 4 * MIB), strict=True)]
    build_ova(area / "s.ova", "x", disks, ovf=ovf_text("x", sizes))
    with pytest.raises(ImportRefused, match="declares"):
        inspect("s.ova")


def test_declared_capacity_mismatch_is_refused(area: Path, tmp_path: Path) -> None:
    disks = _disks(area, tmp_path)
    sizes = [(d.name, d.stat().st_size, s)
             for d, s in zip(disks, (16 * MIB, 4 * MIB), strict=True)]
    build_ova(area / "c.ova", "x", disks, ovf=ovf_text("x", sizes))
    with pytest.raises(ImportRefused, match="declares"):
        inspect("c.ova")


BOMB = """<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>
<Envelope><References/><VirtualSystem><Name>&lol3;</Name></VirtualSystem></Envelope>"""
EXTERNAL = """<?xml version="1.0"?>
<!DOCTYPE e [<!ENTITY x SYSTEM "file:///etc/passwd">]>
<Envelope><VirtualSystem><Name>&x;</Name></VirtualSystem></Envelope>"""


@pytest.mark.parametrize("xml", [BOMB, EXTERNAL, "<Envelope><unclosed></Envelope>"])
def test_hostile_xml_is_refused(area: Path, tmp_path: Path, xml: str) -> None:
    build_ova(area / "x.ova", "x", _disks(area, tmp_path), ovf=xml)
    with pytest.raises(ImportRefused, match="not safe, well-formed XML"):
        inspect("x.ova")


def test_truncated_ova_is_refused(area: Path, tmp_path: Path) -> None:
    path = build_ova(area / "t.ova", "x", _disks(area, tmp_path))
    path.write_bytes(path.read_bytes()[:path.stat().st_size // 2])
    with pytest.raises(ImportRefused, match=r"truncated|not a readable"):
        inspect("t.ova")


@pytest.mark.parametrize(("vcpus", "memory"), [("0", "512"), ("1000000000", "512"),
                                               ("2", "-1")])
def test_absurd_ova_values_are_refused(area: Path, tmp_path: Path, vcpus: str,
                                       memory: str) -> None:
    disks = _disks(area, tmp_path)
    sizes = [(d.name, d.stat().st_size, s)
             for d, s in zip(disks, (8 * MIB, 4 * MIB), strict=True)]
    build_ova(area / "a.ova", "x", disks, ovf=ovf_text("x", sizes, vcpus=vcpus,
                                                        memory=memory))
    with pytest.raises(ImportRefused, match="asks for"):
        inspect("a.ova")
