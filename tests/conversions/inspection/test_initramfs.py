"""Initramfs cpio archives: modules listed across concatenated and compressed segments,
damaged and oversized archives refused within caps."""

from __future__ import annotations

import gzip
import shutil
import subprocess
from pathlib import Path

import pytest

from conversions.inspection.errors import InspectionError
from conversions.inspection.initramfs import module_name, read_initramfs
from tests.conversions.inspection.diskmaker import cpio, initramfs


def test_modules_of_early_and_main_archives() -> None:
    facts = read_initramfs(initramfs(["block/virtio_blk", "net/xen-netfront", "ata/ahci"]))
    assert facts.modules == ("ahci", "virtio_blk", "xen-netfront")
    assert facts.compression == ("none", "gzip")


def test_the_tiny_guest_initramfs(tiny_guest) -> None:
    facts = read_initramfs(Path(tiny_guest.initrd).read_bytes())
    assert {"button", "evdev"} <= set(facts.modules)


def test_module_names() -> None:
    assert module_name("lib/modules/6.1/kernel/drivers/net/e1000.ko.xz") == "e1000"
    assert module_name("x/virtio_blk.ko.zst") == "virtio_blk"
    assert module_name("x/modules.dep") is None and module_name(".ko") is None


def test_zstd_main_archive() -> None:
    if shutil.which("zstd") is None:
        pytest.skip("zstd is not installed")
    packed = subprocess.run(["zstd", "-q", "-c"], input=cpio({"a/vmxnet3.ko": b"x"}),
                            capture_output=True, check=True).stdout
    assert read_initramfs(packed).modules == ("vmxnet3",)


@pytest.mark.parametrize(("data", "message"), [
    (cpio({"a/sd_mod.ko": b"x" * 100})[:150], "truncated"),
    (cpio({"a/sd_mod.ko": b"x"}, trailer=False), "truncated"),
    (b"070701" + b"Z" * 104, "damaged header"),
    (b"not an archive at all", "not a cpio archive"),
    (gzip.compress(cpio({"a.ko": b"x"}))[:30], "truncated"),
])
def test_damaged_archives(data: bytes, message: str) -> None:
    with pytest.raises(InspectionError, match=message):
        read_initramfs(data)


def test_entry_count_is_capped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("conversions.inspection.initramfs.MAX_ENTRIES", 50)
    with pytest.raises(InspectionError, match="more than 50 files"):
        read_initramfs(gzip.compress(cpio({f"f{i}": b"" for i in range(100)})))


def test_decompressed_size_is_capped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("conversions.inspection.initramfs.MAX_DECOMPRESSED", 1000)
    with pytest.raises(InspectionError, match="more than 1000 bytes"):
        read_initramfs(gzip.compress(cpio({"big": b"\0" * 100_000})))
