"""OVA/OVF: the envelope read through defusedxml, the manifest verified, the tar read
member by member; every hostile archive of issue 8 item 7 refused."""

from __future__ import annotations

import tarfile
from pathlib import Path

import pytest

from conversions.v2v.inspect import inspect
from conversions.v2v.proposal import ImportRefused
from tests.conversions.v2v.conftest import MIB, make_vmdk, patterned_raw
from tests.conversions.v2v.ova_maker import build_ova, ovf_text


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
    from conversions.v2v.ova import verify_digests

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


def test_gzip_compressed_disks(area: Path, tmp_path: Path) -> None:
    """ovf:compression="gzip": inspected by the VMDK header at the start of the stream,
    unpacked (sparse) and checked in full when the import runs."""
    from conversions.v2v.ova import unpack_member, verify_digests

    build_ova(area / "vm.ova", "packed", _disks(area, tmp_path), gzip_disks=True)
    got = inspect("vm.ova")
    assert [(d.member, d.compression, d.virtual_size) for d in got.images] == [
        ("d0.vmdk.gz", "gzip", 8 * MIB), ("d1.vmdk.gz", "gzip", 4 * MIB)]
    assert any("gzip-compressed" in w for w in got.warnings)
    verify_digests(area / "vm.ova", got)  # the manifest covers the files as packed
    fractions: list[float] = []
    target = tmp_path / "d0.vmdk"
    disk = got.images[0]
    unpack_member(area / "vm.ova", got.extra["members"][disk.member], disk, target,
                  fractions.append)
    original = tmp_path / "disks" / "d0.vmdk"
    assert target.read_bytes() == original.read_bytes()
    assert fractions and fractions[-1] == 1.0


def _packed_ova(path: Path, content: bytes, capacity: int) -> None:
    import gzip
    import io

    packed = gzip.compress(content, compresslevel=1)
    text = ovf_text(path.stem, [("x.vmdk.gz", len(packed), capacity)], compression="gzip")
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in ((f"{path.stem}.ovf", text.encode()), ("x.vmdk.gz", packed)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_bad_compressed_disks_are_refused(area: Path, tmp_path: Path) -> None:
    from conversions.v2v.ova import unpack_member

    # Not a VMDK inside the gzip stream: refused at inspection.
    _packed_ova(area / "bad.ova", b"not a disk" * 1000, 8 * MIB)
    with pytest.raises(ImportRefused, match="not a gzip-compressed sparse VMDK"):
        inspect("bad.ova")
    # A VMDK header, then far more than a 1 MiB disk can hold (a gzip bomb): refused while
    # unpacking, and what was unpacked is not kept by the import (its scratch file).
    _packed_ova(area / "bomb.ova", b"KDMV" + bytes(80 * MIB), MIB)
    got = inspect("bomb.ova")
    disk = got.images[0]
    with pytest.raises(ImportRefused, match="unpacks to more than"):
        unpack_member(area / "bomb.ova", got.extra["members"][disk.member], disk,
                      tmp_path / "bomb", lambda _f: None)
    # A damaged stream.
    _packed_ova(area / "cut.ova", b"KDMV" + bytes(MIB), MIB)
    data = (area / "cut.ova").read_bytes()
    start = data.index(b"\x1f\x8b")
    damaged = data[:start + 40] + b"\xff" * 64 + data[start + 104:]
    (area / "cut.ova").write_bytes(damaged)
    with pytest.raises(ImportRefused, match="A compressed disk of the OVA is damaged"):
        got = inspect("cut.ova")  # a small stream: its check fails already here
        unpack_member(area / "cut.ova", got.extra["members"][got.images[0].member],
                      got.images[0], tmp_path / "cut", lambda _f: None)


@pytest.mark.parametrize(("attrs", "reason"), [
    ('ovf:compression="bzip2"', "bzip2-compressed"),
    ('ovf:chunkSize="1000"', "split into chunks"),
])
def test_unsupported_packing_is_refused(area: Path, tmp_path: Path, attrs: str,
                                        reason: str) -> None:
    disks = _disks(area, tmp_path)
    text = ovf_text("odd", [(disks[0].name, disks[0].stat().st_size, 8 * MIB)]).replace(
        'ovf:id="file0"', f'ovf:id="file0" {attrs}')
    build_ova(area / "odd.ova", "odd", [disks[0]], ovf=text)
    with pytest.raises(ImportRefused, match=reason):
        inspect("odd.ova")
