"""Import sources never make qemu-img (which runs on the appliance, as the app) open a file
outside the import area (independent check of issue 18): VMDK descriptors whose extent
lines qemu reads but a stricter parser might skip (trailing words after the offset, tabs,
a name holding '=') are refused by the descriptor parser itself before qemu-img opens
anything (qemu-img's own report of the extents is checked too); absolute paths and `..`
in a VMX's fileName never leave the area."""

from __future__ import annotations

from pathlib import Path

import pytest

from conversions.v2v.inspect import inspect
from conversions.v2v.proposal import ImportRefused
from conversions.v2v.vmdk import check_vmdk
from tests.conversions.v2v.conftest import MIB, area, make_vmdk, patterned_raw

__all__ = ["area"]
SIZE = 24 * MIB
SECTORS = SIZE // 512


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A file outside the import area whose name a descriptor can quote."""
    path = tmp_path / "data" / "out=side"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"S" * SIZE)
    return path


EXTRA_LINES = [
    'RW {n} FLAT "{outside}" 0 trailing',
    'RW\t{n}\tFLAT\t"{outside}"\t0\tx=y',
    'RW {n} FLAT "../out=side" 0 x',
    'RW {n} VMFS "{outside}" 0 # =',
    'RW {n} FLAT "{outside}"0=',
    'rw {n} flat "{outside}" 0 =',
    '  RW {n} FLAT "{outside}" 0 0 x=',
]


@pytest.mark.parametrize("line", EXTRA_LINES)
def test_an_extent_line_only_qemu_reads_is_refused(area: Path, tmp_path: Path,
                                                   outside: Path, line: str) -> None:
    disk = make_vmdk(area, "d", "monolithicFlat", patterned_raw(tmp_path / "s.raw", SIZE))
    text = disk.read_text()
    anchor = text.index('"d-flat.vmdk"')
    end = text.index("\n", anchor)
    disk.write_text(text[:end + 1] + line.format(n=SECTORS, outside=outside) + "\n"
                    + text[end + 1:])
    with pytest.raises(ImportRefused, match="extent line it cannot read exactly"):
        check_vmdk(disk)  # by the descriptor's own parser, before qemu-img opens anything
    with pytest.raises(ImportRefused):
        inspect("d.vmdk")


@pytest.mark.parametrize("name", ["/etc/shadow", "../../etc/shadow", "/dev/sda",
                                  "/proc/self/environ", "../import/d-flat.vmdk",
                                  "sub/../../x.vmdk", "~/x.vmdk"])
def test_a_vmx_disk_path_never_leaves_the_area(area: Path, tmp_path: Path, name: str) -> None:
    make_vmdk(area, "d", "monolithicFlat", patterned_raw(tmp_path / "s.raw", SIZE))
    (area / "vm.vmx").write_text(
        'config.version = "8"\nvirtualHW.version = "14"\ndisplayName = "vm"\n'
        'memSize = "128"\nscsi0.present = "TRUE"\nscsi0:0.present = "TRUE"\n'
        f'scsi0:0.fileName = "{name}"\n')
    try:
        proposal = inspect("vm.vmx")
    except ImportRefused:
        return
    # An absolute name is read as the file of that name beside the .vmx, if any.
    for disk in proposal.images:
        assert (area / disk.path).resolve().is_relative_to(area.resolve())
