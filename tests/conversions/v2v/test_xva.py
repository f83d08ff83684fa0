"""XVA: ova.xml read through defusedxml, disks rebuilt from verified chunks (plain,
gzip, zstd; XXH64 and SHA-1), and the hostile archives of issue 8 item 7 refused."""

from __future__ import annotations

import tarfile
from pathlib import Path

import pytest

from conversions.v2v.inspect import inspect
from conversions.v2v.proposal import ImportRefused
from conversions.v2v.xva import rebuild_disk
from tests.conversions.v2v.conftest import MIB, patterned_raw
from tests.conversions.v2v.xva_maker import add, build_xva, ova_xml


def _raws(tmp_path: Path) -> list[Path]:
    return [patterned_raw(tmp_path / "r0.raw", 6 * MIB),
            patterned_raw(tmp_path / "r1.raw", 3 * MIB + 4096)]


def _rebuilt(area: Path, tmp_path: Path, source: str, number: int) -> bytes:
    proposal = inspect(source)
    out = tmp_path / f"out{number}.raw"
    seen: list[float] = []
    rebuild_disk(area / source, proposal.images[number], out, seen.append)
    assert seen and seen[-1] == 1.0
    return out.read_bytes()


def test_inspect_an_xva(area: Path, tmp_path: Path) -> None:
    build_xva(area / "vm.xva", "web", _raws(tmp_path))
    got = inspect("vm.xva")
    assert (got.kind, got.name, got.vcpus, got.memory_mib, got.type, got.description) == (
        "xva", "web", 2, 512, "hvm", "from XCP-ng")
    assert [(d.device, d.target, d.virtual_size, d.ref) for d in got.disks] == [
        ("disk", "xvda", 6 * MIB, "Ref:20"), ("disk", "xvdb", 3 * MIB + 4096, "Ref:21"),
        ("cdrom", "xvdd", 0, "")]
    assert [n.mac for n in got.nics] == ["02:00:00:aa:bb:cc"]


@pytest.mark.parametrize(("compress", "checksum"), [("", ".xxhash"), ("gz", ".checksum"),
                                                    ("zst", ".xxhash")])
def test_disks_are_rebuilt_exactly(area: Path, tmp_path: Path, compress: str,
                                   checksum: str) -> None:
    raws = _raws(tmp_path)
    build_xva(area / "vm.xva", "web", raws, compress=compress, checksum=checksum)
    for number, raw in enumerate(raws):
        assert _rebuilt(area, tmp_path, "vm.xva", number) == raw.read_bytes()


def test_pv_guest_is_proposed_as_pv(area: Path, tmp_path: Path) -> None:
    build_xva(area / "pv.xva", "pv", _raws(tmp_path), hvm=False)
    got = inspect("pv.xva")
    assert got.type == "pv" and any("PV guest" in w for w in got.warnings)


def test_checksum_mismatch_is_refused(area: Path, tmp_path: Path) -> None:
    build_xva(area / "bad.xva", "x", _raws(tmp_path), bad_chunk=0)
    with pytest.raises(ImportRefused, match="checksum of chunk 'Ref:20/00000000'"):
        _rebuilt(area, tmp_path, "bad.xva", 0)


def test_truncated_xva_is_refused(area: Path, tmp_path: Path) -> None:
    path = build_xva(area / "t.xva", "x", _raws(tmp_path))
    path.write_bytes(path.read_bytes()[:path.stat().st_size * 2 // 3])
    with pytest.raises(ImportRefused, match="truncated"):
        _rebuilt(area, tmp_path, "t.xva", 1)


def _extra(name: str, data: bytes = b"x", kind: bytes = tarfile.REGTYPE,
           link: str = "") -> object:
    def hook(tar: tarfile.TarFile) -> None:
        if kind == tarfile.REGTYPE:
            add(tar, name, data)
        else:
            info = tarfile.TarInfo(name)
            info.type, info.linkname = kind, link
            tar.addfile(info)
    return hook


@pytest.mark.parametrize(("hook", "message"), [
    (_extra("../../etc/passwd"), "unexpected member"),
    (_extra("/abs"), "unexpected member"),
    (_extra("Ref:20/00000000"), "twice"),
    (_extra("Ref:20/00000099", b"y" * 10), "beyond the disk's declared size"),
    (_extra("Ref:21/00000009", b"y" * 10), "has no checksum"),
    (_extra("Ref:20/00000001.xxhash", b"0"), "twice|follows no chunk"),
    (_extra("link", kind=tarfile.SYMTYPE, link="/etc/shadow"), "not a regular file"),
    (_extra("dev", kind=tarfile.CHRTYPE), "not a regular file"),
])
def test_hostile_members_are_refused(area: Path, tmp_path: Path, hook: object,
                                     message: str) -> None:
    build_xva(area / "h.xva", "x", _raws(tmp_path), hook=hook)
    with pytest.raises(ImportRefused, match=message):
        for number in (0, 1):
            _rebuilt(area, tmp_path, "h.xva", number)


BOMB = b"""<?xml version="1.0"?><!DOCTYPE v [<!ENTITY a "aaaaaaaaaa">
<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">]><value>&b;</value>"""
EXTERNAL = b"""<?xml version="1.0"?><!DOCTYPE v [<!ENTITY x SYSTEM "file:///etc/passwd">]>
<value>&x;</value>"""


@pytest.mark.parametrize("xml", [BOMB, EXTERNAL, b"<value><struct>"])
def test_hostile_ova_xml_is_refused(area: Path, tmp_path: Path, xml: bytes) -> None:
    build_xva(area / "x.xva", "x", _raws(tmp_path), xml=xml)
    with pytest.raises(ImportRefused, match="not safe, well-formed XML"):
        inspect("x.xva")


@pytest.mark.parametrize(("vm", "message"), [
    ({"vcpus": 0}, "0 vCPUs"), ({"vcpus": 10**9}, "1000000000 vCPUs"),
    ({"memory_mib": -1}, "-1 MiB")])
def test_absurd_values_are_refused(area: Path, tmp_path: Path, vm: dict,
                                   message: str) -> None:
    raws = _raws(tmp_path)
    build_xva(area / "a.xva", "x", raws,
              xml=ova_xml("x", [r.stat().st_size for r in raws], **vm))
    with pytest.raises(ImportRefused, match=message):
        inspect("a.xva")
