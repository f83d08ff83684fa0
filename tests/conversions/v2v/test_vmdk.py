"""VMDK variants: descriptor checks, qemu-img conversion with progress, content equal
(`qemu-img compare`); and the hostile descriptors of issue 8 item 7, each refused."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from conversions.v2v import qemu
from conversions.v2v.inspect import inspect
from conversions.v2v.proposal import ImportRefused
from conversions.v2v.vmdk import check_vmdk
from tests.conversions.v2v.conftest import MIB, VARIANTS, make_vmdk, patterned_raw, qemu_img

SIZE = 24 * MIB


@pytest.mark.parametrize("subformat", VARIANTS)
def test_each_variant_converts_to_equal_content(area: Path, tmp_path: Path,
                                                subformat: str) -> None:
    raw = patterned_raw(tmp_path / "src.raw", SIZE)
    disk = make_vmdk(area, "disk", subformat, raw)
    facts = check_vmdk(disk)
    assert facts.create_type == subformat and facts.virtual_size == SIZE
    for fmt in ("raw", "qcow2"):
        out = tmp_path / f"out.{fmt}"
        seen: list[float] = []
        qemu.convert(qemu.Image(str(disk), "vmdk"), str(out), fmt, virtual_size=SIZE,
                     existing=False, on_progress=seen.append)
        assert seen and seen[-1] == 1.0 and seen == sorted(seen)
        qemu_img("compare", "-f", "raw", "-F", fmt, str(raw), str(out))


def test_inspect_a_lone_vmdk(area: Path, tmp_path: Path) -> None:
    make_vmdk(area, "lone", "monolithicFlat", patterned_raw(tmp_path / "s.raw", SIZE))
    proposal = inspect("lone.vmdk")
    assert proposal.kind == "vmdk" and proposal.name == "lone"
    assert [(d.format, d.virtual_size, d.path) for d in proposal.images] == [
        ("vmdk", SIZE, "lone.vmdk")]


def _flat(area: Path, tmp_path: Path, name: str = "d") -> Path:
    return make_vmdk(area, name, "monolithicFlat", patterned_raw(tmp_path / "s.raw", SIZE))


def _rewrite(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))


@pytest.mark.parametrize("extent", ["/etc/passwd", "../outside-flat.vmdk",
                                    "sub/d-flat.vmdk", "..", "/dev/sda"])
def test_extent_paths_are_refused(area: Path, tmp_path: Path, extent: str) -> None:
    disk = _flat(area, tmp_path)
    (area / "sub").mkdir()
    shutil.copy(area / "d-flat.vmdk", area / "sub" / "d-flat.vmdk")
    shutil.copy(area / "d-flat.vmdk", area.parent / "outside-flat.vmdk")
    _rewrite(disk, '"d-flat.vmdk"', f'"{extent}"')
    with pytest.raises(ImportRefused, match=r"plain file name|regular file"):
        check_vmdk(disk)


def test_symlinked_extent_is_refused(area: Path, tmp_path: Path) -> None:
    disk = _flat(area, tmp_path)
    os.replace(area / "d-flat.vmdk", tmp_path / "elsewhere")
    os.symlink(tmp_path / "elsewhere", area / "d-flat.vmdk")
    with pytest.raises(ImportRefused, match="not a regular file"):
        check_vmdk(disk)


def test_parent_chains_are_refused(area: Path, tmp_path: Path) -> None:
    disk = _flat(area, tmp_path)
    _rewrite(disk, "parentCID=ffffffff", 'parentCID=12345678\nparentFileNameHint="base.vmdk"')
    with pytest.raises(ImportRefused, match="backing chains are refused"):
        check_vmdk(disk)


def test_qcow2_with_a_backing_file_disguised_as_vmdk_is_refused(area: Path,
                                                                tmp_path: Path) -> None:
    qemu_img("create", "-q", "-f", "qcow2", "-b", "/etc/shadow", "-F", "raw",
             str(area / "evil.vmdk"), "1M")
    with pytest.raises(ImportRefused, match=r"not a VMDK|neither"):
        inspect("evil.vmdk")


def test_truncated_flat_extent_is_refused(area: Path, tmp_path: Path) -> None:
    disk = _flat(area, tmp_path)
    os.truncate(area / "d-flat.vmdk", SIZE // 2)
    with pytest.raises(ImportRefused, match="truncated"):
        check_vmdk(disk)


def test_declared_size_mismatch_is_refused(area: Path, tmp_path: Path) -> None:
    disk = make_vmdk(area, "s", "twoGbMaxExtentSparse", patterned_raw(tmp_path / "s.raw",
                                                                       SIZE))
    sectors = SIZE // 512
    _rewrite(disk, f"RW {sectors} SPARSE", f"RW {sectors * 2} SPARSE")
    with pytest.raises(ImportRefused, match="declares"):
        check_vmdk(disk)


def test_truncated_sparse_is_refused(area: Path, tmp_path: Path) -> None:
    disk = make_vmdk(area, "t", "monolithicSparse", patterned_raw(tmp_path / "s.raw", SIZE))
    os.truncate(disk, 40)
    with pytest.raises(ImportRefused, match="truncated"):
        check_vmdk(disk)


@pytest.mark.parametrize(("subformat", "extent"), [("monolithicSparse", "g.vmdk"),
                                                   ("twoGbMaxExtentSparse", "g-s001.vmdk")])
def test_sparse_extent_missing_its_last_grains_is_refused(area: Path, tmp_path: Path,
                                                          subformat: str, extent: str) -> None:
    """qemu-img reads a grain past the end of the file as zeros and converts the disk
    without a word: the grain tables must point inside the file."""
    disk = make_vmdk(area, "g", subformat, patterned_raw(tmp_path / "s.raw", SIZE))
    full = os.path.getsize(area / extent)
    os.truncate(area / extent, full - 512)
    with pytest.raises(ImportRefused, match=rf"'{extent}' is truncated: its grain tables "
                                            rf"name data up to byte {full}, but the file has "
                                            rf"{full - 512} bytes"):
        check_vmdk(disk)


def test_streamoptimized_cut_short_fails_in_qemu_img(area: Path, tmp_path: Path) -> None:
    disk = make_vmdk(area, "c", "streamOptimized", patterned_raw(tmp_path / "s.raw", SIZE))
    os.truncate(disk, os.path.getsize(disk) // 2)
    with pytest.raises(ImportRefused):
        check_vmdk(disk)
        qemu.convert(qemu.Image(str(disk), "vmdk"), str(tmp_path / "o.raw"), "raw",
                     virtual_size=SIZE, existing=False, on_progress=lambda f: None)


@pytest.mark.parametrize("source", ["/etc/passwd", "../data/x.vmdk", "a/../../x", ""])
def test_sources_outside_the_area_are_refused(area: Path, source: str) -> None:
    with pytest.raises(ImportRefused):
        inspect(source)


def test_symlinked_source_leading_out_is_refused(area: Path, tmp_path: Path) -> None:
    (tmp_path / "secret.vmx").write_text('memsize = "64"\n')
    os.symlink(tmp_path / "secret.vmx", area / "link.vmx")
    with pytest.raises(ImportRefused, match="outside"):
        inspect("link.vmx")


def test_qemu_img_runs_under_limits() -> None:
    argv = qemu.limited(["qemu-img", "info"], cpu_seconds=5, address_space=1024**3)
    assert argv[:4] == ["prlimit", "--cpu=5", f"--as={1024**3}", "--"]
