"""Every number read from an import source is bounded before arithmetic, every archive
member and header is read with a cap, and import paths stay inside the import area
(issue 18 H3, M3): hostile OVF, XVA, OVA tar and VMDK sources through the real inspect
API, and the import area's own names (`source`, `PUT /api/v1/imports/files/<name>`)."""

from __future__ import annotations

import gzip
import io
import os
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.test import Client

from conversions.v2v.archives import MAX_PAX_HEADER
from conversions.v2v.xva import MAX_CHECKSUM
from tests.conversions.v2v.ova_maker import ovf_text
from tests.conversions.v2v.xva_maker import ova_xml
from tests.security import hostile

pytestmark = pytest.mark.django_db
MIB = hostile.MIB


@pytest.fixture
def area(settings: Any, tmp_path: Path) -> Path:
    settings.DATA_DIR = tmp_path / "data"
    root = tmp_path / "data" / "import"
    root.mkdir(parents=True)
    return root


def inspect(client: Client, source: str) -> Any:
    return client.post("/api/v1/imports/inspect/", {"source": source},
                       content_type="application/json")


def refused(client: Client, source: str, message: str) -> None:
    answer = inspect(client, source)
    assert answer.status_code == 422, answer.content[:300]
    assert message in answer.json()["detail"], answer.json()["detail"]


# -- OVF numbers (H3) ------------------------------------------------------------------


def _ovf(**replace: str) -> str:
    text = ovf_text("hostile", [("d0.vmdk", 1000, 8 * MIB)])
    for old, new in replace.items():
        assert old in text, old
        text = text.replace(old, new)
    return text


@pytest.mark.parametrize(("replace", "message"), [
    ({'ovf:capacityAllocationUnits="byte"': 'ovf:capacityAllocationUnits="byte * 2^1000"'},
     "larger than 2^40 bytes"),
    ({'ovf:capacityAllocationUnits="byte"':
      'ovf:capacityAllocationUnits="byte * 2^99999999999999"'}, "larger than 2^40 bytes"),
    ({'ovf:capacityAllocationUnits="byte"': 'ovf:capacityAllocationUnits="byte * 2^40"',
      f'ovf:capacity="{8 * MIB}"': 'ovf:capacity="1000000000"'}, "larger than"),
    ({f'ovf:capacity="{8 * MIB}"': f'ovf:capacity="{"9" * 5000}"'}, "not a whole number"),
    ({"byte * 2^20": "byte * 2^1000"}, "larger than 2^40 bytes"),
    ({"<rasd:VirtualQuantity>512</rasd:VirtualQuantity>":
      "<rasd:VirtualQuantity>999999999999999999</rasd:VirtualQuantity>"}, "memory"),
    ({'ovf:size="1000"': f'ovf:size="{"7" * 400}"'}, "file size"),
    ({"<rasd:AddressOnParent>0</rasd:AddressOnParent><rasd:ElementName>disk0":
      "<rasd:AddressOnParent>99999999999999999999999</rasd:AddressOnParent>"
      "<rasd:ElementName>disk0"}, "address on parent"),
])
def test_absurd_ovf_numbers_are_refused_with_a_message(
        operator_client: Client, area: Path, replace: dict[str, str], message: str) -> None:
    (area / "hostile.ovf").write_text(_ovf(**replace))
    refused(operator_client, "hostile.ovf", message)


def test_an_ova_with_an_exploding_unit_is_refused(operator_client: Client, area: Path) -> None:
    text = _ovf(**{'ovf:capacityAllocationUnits="byte"':
                   'ovf:capacityAllocationUnits="byte * 2^4096"'}).encode()
    (area / "big.ova").write_bytes(hostile.tar_bytes([hostile.regular("hostile.ovf", text)]))
    refused(operator_client, "big.ova", "larger than 2^40 bytes")


# -- XVA (M3) --------------------------------------------------------------------------


class Zeros(io.RawIOBase):
    """`size` zero bytes, read in pieces (a big member without holding it in memory)."""

    def __init__(self, size: int) -> None:
        self.left = size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        count = min(len(buffer), self.left)
        buffer[:count] = bytes(count)
        self.left -= count
        return count


def _xva(path: Path, members: Iterator[tuple[tarfile.TarInfo, io.RawIOBase | None]]) -> Path:
    with gzip.open(path, "wb", compresslevel=9) as packed, \
            tarfile.open(fileobj=packed, mode="w|", format=tarfile.GNU_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, data)
    return path


def _member(name: str, size: int) -> tuple[tarfile.TarInfo, io.RawIOBase]:
    info = tarfile.TarInfo(name)
    info.size = size
    return info, Zeros(size)


def _xml() -> tuple[tarfile.TarInfo, io.RawIOBase]:
    data = ova_xml("x", [MIB])
    info = tarfile.TarInfo("ova.xml")
    info.size = len(data)
    return info, io.BytesIO(data)  # type: ignore[return-value]


def test_a_huge_xva_checksum_member_is_refused_unread(operator_client: Client, area: Path,
                                                      settings: Any) -> None:
    """64 MiB of zeros as a chunk's checksum: a few KiB of .xva.gz. The import refuses it
    from its header, never reading it (inspect reads only ova.xml; the job rebuilds)."""
    from conversions.v2v.inspect import inspect as inspect_source
    from conversions.v2v.proposal import ImportRefused
    from conversions.v2v.xva import rebuild_disk

    path = _xva(area / "a.xva.gz", iter([
        _xml(), _member("Ref:20/00000000", MIB), _member("Ref:20/00000000.xxhash", 64 * MIB)]))
    assert path.stat().st_size < 1 * MIB
    assert inspect(operator_client, "a.xva.gz").status_code == 200
    proposal = inspect_source("a.xva.gz")
    with pytest.raises(ImportRefused, match=f"at most {MAX_CHECKSUM} are expected"):
        rebuild_disk(path, proposal.disks[0], area.parent / "out.raw", lambda f: None)


def test_a_huge_checksum_of_another_disk_is_refused_too(area: Path) -> None:
    from conversions.v2v.inspect import inspect as inspect_source
    from conversions.v2v.proposal import ImportRefused
    from conversions.v2v.xva import rebuild_disk

    path = _xva(area / "b.xva.gz", iter([
        _xml(), _member("Ref:99/00000000", MIB), _member("Ref:99/00000000.checksum", 32 * MIB),
        _member("Ref:20/00000000", MIB), _member("Ref:20/00000000.xxhash", 16)]))
    proposal = inspect_source("b.xva.gz")
    with pytest.raises(ImportRefused, match="are expected there"):
        rebuild_disk(path, proposal.disks[0], area.parent / "out.raw", lambda f: None)


@pytest.mark.parametrize("vm", [
    {"memory_mib": 10**30}, {"vcpus": int("9" * 400)}])
def test_absurd_xva_numbers_are_refused(operator_client: Client, area: Path,
                                        vm: dict[str, int]) -> None:
    data = ova_xml("x", [MIB], **vm)  # type: ignore[arg-type]
    (area / "n.xva").write_bytes(hostile.tar_bytes([hostile.regular("ova.xml", data)]))
    refused(operator_client, "n.xva", "is not a number between")


def test_an_absurd_userdevice_and_disk_size_are_refused(operator_client: Client,
                                                        area: Path) -> None:
    data = ova_xml("x", [MIB])
    for key, value, message in ((b"<name>userdevice</name><value>0</value>",
                                 b"<name>userdevice</name><value>99999</value>", "userdevice"),
                                (f"<value>{MIB}</value>".encode(),
                                 f"<value>{10**19}</value>".encode(), "virtual_size")):
        assert key in data
        (area / "u.xva").write_bytes(hostile.tar_bytes(
            [hostile.regular("ova.xml", data.replace(key, value))]))
        refused(operator_client, "u.xva", message)
        (area / "u.xva").unlink()


# -- tar headers and members (OVA and XVA) ---------------------------------------------


def test_a_giant_long_name_record_is_refused_before_it_is_read(
        operator_client: Client, area: Path) -> None:
    """A GNU long-name record claiming 512 MiB: tarfile would read it whole."""
    record = hostile.long_name_record(512 * MIB)
    for name in ("l.ova", "l.xva"):
        (area / name).write_bytes(record + bytes(4 * MIB))
        refused(operator_client, name, "long-name record")


def test_a_giant_pax_header_is_refused(operator_client: Client, area: Path) -> None:
    info = tarfile.TarInfo("././@PaxHeader")
    info.type, info.size = tarfile.XHDTYPE, 8 * MAX_PAX_HEADER
    for name in ("p.ova", "p.xva.gz"):
        raw = info.tobuf(tarfile.USTAR_FORMAT) + bytes(8 * MAX_PAX_HEADER + 1024)
        (area / name).write_bytes(gzip.compress(raw) if name.endswith(".gz") else raw)
        refused(operator_client, name, "pax header")


def test_sparse_members_are_refused(operator_client: Client, area: Path) -> None:
    info = tarfile.TarInfo("ova.xml")
    info.type, info.size = tarfile.GNUTYPE_SPARSE, 0
    (area / "s.xva").write_bytes(info.tobuf(tarfile.GNU_FORMAT) + bytes(2048))
    refused(operator_client, "s.xva", "sparse member")


@pytest.mark.parametrize(("member", "message"), [
    (hostile.special("link.vmdk", tarfile.SYMTYPE, "/etc/shadow"), "is a link"),
    (hostile.special("hard.vmdk", tarfile.LNKTYPE, "../../etc/shadow"), "is a link"),
    (hostile.special("dev", tarfile.CHRTYPE), "is a device"),
    (hostile.special("fifo", tarfile.FIFOTYPE), "is a FIFO"),
    (hostile.special("sub", tarfile.DIRTYPE), "is a directory"),
    (hostile.regular("../escape.vmdk", b"x"), "'..'"),
    (hostile.regular("/etc/cron.d/x", b"x"), "absolute paths"),
    (hostile.regular("sub/x.vmdk", b"x"), "sub-directories"),
])
def test_hostile_ova_members_are_refused(operator_client: Client, area: Path,
                                         member: tuple[tarfile.TarInfo, bytes],
                                         message: str) -> None:
    ovf = hostile.regular("x.ovf", _ovf().encode())
    (area / "m.ova").write_bytes(hostile.tar_bytes([ovf, member]))
    refused(operator_client, "m.ova", message)


@pytest.mark.parametrize("member", [
    hostile.special("Ref:20/00000000", tarfile.SYMTYPE, "/etc/shadow"),
    hostile.special("Ref:20/00000000", tarfile.LNKTYPE, "ova.xml"),
    hostile.special("Ref:20/00000000", tarfile.FIFOTYPE),
    hostile.regular("../Ref:20/00000000", b"x"),
    hostile.regular("/Ref:20/00000000", b"x"),
])
def test_hostile_xva_members_are_refused(area: Path, member: tuple[tarfile.TarInfo, bytes]) \
        -> None:
    from conversions.v2v.inspect import inspect as inspect_source
    from conversions.v2v.proposal import ImportRefused
    from conversions.v2v.xva import rebuild_disk

    data = ova_xml("x", [MIB])
    (area / "h.xva").write_bytes(hostile.tar_bytes([hostile.regular("ova.xml", data), member]))
    proposal = inspect_source("h.xva")
    with pytest.raises(ImportRefused, match=r"not a regular file|unexpected member"):
        rebuild_disk(area / "h.xva", proposal.disks[0], area.parent / "o.raw", lambda f: None)


# -- VMDK sizes and extents --------------------------------------------------------------


@pytest.mark.parametrize(("extents", "message"), [
    (['RW 99999999999999999999999 FLAT "d-flat.vmdk" 0'], "VMDK extent size"),
    ([f'RW {"9" * 5000} FLAT "d-flat.vmdk" 0'], "VMDK extent size"),
    (['RW 2048 FLAT "d-flat.vmdk" 99999999999999999999999'], "VMDK extent offset"),
    ([f'RW {2**41} FLAT "d{i}.vmdk" 0' for i in range(2)], "add up to more than"),
    (["RW 1 ZERO"] * 4100, "more than 4096 extents"),
    (['RW 2048 FLAT "/etc/shadow" 0'], "not a plain file name"),
    (['RW 2048 FLAT "../../etc/shadow" 0'], "not a plain file name"),
])
def test_absurd_vmdk_extents_are_refused(operator_client: Client, area: Path,
                                         extents: list[str], message: str) -> None:
    (area / "d-flat.vmdk").write_bytes(bytes(MIB))
    (area / "d.vmdk").write_text(hostile.vmdk_descriptor("\n".join(extents)))
    refused(operator_client, "d.vmdk", message)


# -- the import area's names -----------------------------------------------------------


def test_sources_outside_the_area_or_not_files_are_refused(
        operator_client: Client, area: Path, tmp_path: Path) -> None:
    outside = tmp_path / "secret.vmx"
    outside.write_text('displayName = "secret"\n')
    (area / "out.vmx").symlink_to(outside)
    (area / "proc.vmx").symlink_to("/proc/self/environ")
    (area / "dir").symlink_to(tmp_path)
    os.mkfifo(area / "fifo.vmx")
    os.mknod(area / "null.vmx", 0o600 | 0o020000, os.makedev(1, 3))
    for source, message in (
            ("/etc/passwd", "absolute paths"), ("../secret.vmx", "'..'"),
            ("a/../../secret.vmx", "'..'"), ("out.vmx", "outside the import area"),
            ("proc.vmx", "outside the import area"), ("dir/secret.vmx", "outside"),
            ("fifo.vmx", "not a regular file"), ("null.vmx", "not a regular file"),
            ("/proc/self/environ", "absolute paths")):
        refused(operator_client, source, message)
    assert inspect(operator_client, "nul\x00.vmx").status_code == 400


def test_import_uploads_never_leave_the_area(operator_client: Client, area: Path,
                                             tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (area / "link").symlink_to(outside)
    (area / "afile").write_bytes(b"x")
    for name, message in (("link/x.vmx", "not a folder"), ("link/deep/er/x.vmx", "not a folder"),
                          ("afile/x.vmx", "not a folder"), ("../x.vmx", "not an allowed"),
                          (".hidden.vmx", "not an allowed"), ("a/./../x", "not an allowed")):
        answer = operator_client.put(f"/api/v1/imports/files/{name}/", b"x",
                                     content_type="application/octet-stream")
        assert answer.status_code in (404, 422), name
        if answer.status_code == 422:
            assert message in answer.json()["detail"], (name, answer.json())
    assert list(outside.iterdir()) == []
    stored = operator_client.put("/api/v1/imports/files/ok/x.vmx/", b"x",
                                 content_type="application/octet-stream")
    assert stored.status_code == 201 and (area / "ok" / "x.vmx").is_file()
