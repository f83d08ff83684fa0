"""Whole disks inspected end to end: the shapes conversions meet (SYSLINUX on a FAT /boot
with an ext4 root, GRUB 2 on GPT with an EFI System Partition, a bare file system), other
formats, and damaged or hostile images that end in an InspectionError within bounds."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from conversions.inspection import DamagedImage, Inspection, InspectionError, inspect_image
from conversions.inspection.kernel import XEN_ELFNOTE_GUEST_OS
from tests.conversions.inspection import hostile
from tests.conversions.inspection.diskmaker import (
    ESP,
    GRUB_LIKE_CODE,
    LINUX,
    MIB,
    ROOT_UUID,
    SYSLINUX_MBR,
    VERSION,
    Part,
    bzimage,
    elf,
    ext4,
    fat,
    initramfs,
    root_tree,
    syslinux_disk,
    write_disk,
)


def check_syslinux_result(found: Inspection) -> None:
    assert (found.os_family, found.distribution, found.version, found.arch) == \
        ("linux", "debian", "12", "x86_64")
    assert (found.hostname, found.firmware, found.partition_table) == ("web1", "bios", "mbr")
    assert [(p.number, p.filesystem) for p in found.partitions] == [(1, "vfat"), (2, "ext4")]
    assert found.boot_loader.name == "syslinux"
    assert found.boot_loader.config == "partition 1:/syslinux.cfg"
    assert found.root.partition == 2 and found.root.boot_partition == 1
    assert (found.root.fstab_spec, found.root.fstab_naming) == (f"UUID={ROOT_UUID}", "uuid")
    assert found.root.cmdline_root == f"UUID={ROOT_UUID}"
    kernel = found.kernel
    assert kernel is not None
    assert (kernel.path, kernel.initrd) == ("partition 1:/vmlinuz", "partition 1:/initrd.img")
    assert (kernel.version, kernel.xen_pv, kernel.xen_pvh) == (VERSION, True, True)
    assert kernel.evidence[0].startswith("kernel image: Xen ELF notes")
    assert kernel.evidence[1] == "kernel config: CONFIG_XEN_PV=y"
    drivers = found.drivers
    assert drivers.disk == ("ata_piix", "ahci", "sd_mod", "virtio_blk", "xen_blkfront")
    assert drivers.network == ("e1000", "e1000e", "xen_netfront")
    assert drivers.built_in == ("ahci", "e1000")
    assert drivers.sources == ("initramfs", "kernel config")
    assert found.warnings == ()


def test_syslinux_fat_boot_and_ext4_root(tmp_path: Path, real_kernel: Path) -> None:
    if not SYSLINUX_MBR.exists():
        pytest.skip("syslinux's mbr.bin is not installed")
    found = inspect_image(syslinux_disk(tmp_path, real_kernel))
    check_syslinux_result(found)
    assert found.boot_loader.mbr_code == "syslinux"
    data = found.as_dict()
    assert data["kernel"]["xen_pv"] is True and data["drivers"]["disk"][0] == "ata_piix"


def test_qcow2_image_is_read_through_qemu_img(tmp_path: Path, real_kernel: Path) -> None:
    if not SYSLINUX_MBR.exists():
        pytest.skip("syslinux's mbr.bin is not installed")
    check_syslinux_result(inspect_image(syslinux_disk(tmp_path, real_kernel, fmt="qcow2"),
                                        "qcow2"))


def test_grub2_on_gpt_with_efi_system_partition(tmp_path: Path, real_kernel: Path) -> None:
    grub = (f'set default="0"\nmenuentry \'Debian GNU/Linux\' --class debian {{\n'
            f"\tsearch --no-floppy --fs-uuid --set=root {ROOT_UUID}\n"
            f"\tlinux\t/boot/vmlinuz-{VERSION} root=UUID={ROOT_UUID} ro quiet\n"
            f"\tinitrd\t/boot/initrd.img-{VERSION}\n}}\n").encode()
    root = root_tree(tmp_path, fstab=f"UUID={ROOT_UUID} / ext4 defaults 0 1\n", boot={
        "boot/grub/grub.cfg": grub, f"boot/vmlinuz-{VERSION}": real_kernel,
        f"boot/initrd.img-{VERSION}": initramfs(["block/virtio_blk"]),
        f"boot/config-{VERSION}": b"CONFIG_XEN_PV=y\nCONFIG_XEN_BLKDEV_FRONTEND=y\n"})
    rootfs = ext4(tmp_path / "root.img", root, 24, fs_uuid=ROOT_UUID)
    espfs = fat(tmp_path / "esp.img", {"EFI/debian/grubx64.efi": b"MZ"}, 8, label="ESP")
    disk = write_disk(tmp_path / "disk.img", 40 * MIB, [
        Part(2048, 8 * 2048, ESP, image=espfs), Part(2048 + 8 * 2048, 24 * 2048, LINUX,
                                                     image=rootfs)], scheme="gpt",
        code=GRUB_LIKE_CODE)
    found = inspect_image(disk)
    assert (found.partition_table, found.firmware) == ("gpt", "bios+uefi")
    assert (found.boot_loader.name, found.boot_loader.mbr_code) == ("grub2", "grub")
    assert found.boot_loader.config == "partition 2:/boot/grub/grub.cfg"
    assert found.kernel is not None and found.kernel.path == f"partition 2:/boot/vmlinuz-{VERSION}"
    assert found.kernel.xen_pv is True
    assert found.drivers.disk == ("virtio_blk", "xen_blkfront")
    assert found.drivers.built_in == ("xen_blkfront",)
    assert found.root.partition == 2 and found.root.boot_partition is None


def test_bare_file_system_device_fstab_and_no_boot_config(tmp_path: Path) -> None:
    kernel = bzimage(gzip.compress(elf([(b"Xen", XEN_ELFNOTE_GUEST_OS, b"linux\0")])),
                     version="5.10.0-1-amd64")
    root = root_tree(tmp_path, fstab="/dev/sda1 / ext3 defaults 0 1\n", boot={
        "boot/vmlinuz-4.19.0-1-amd64": kernel, "boot/vmlinuz-5.10.0-1-amd64": kernel,
        "boot/config-5.10.0-1-amd64": b"# CONFIG_XEN_PV is not set\n"},
        os_release='ID=centos\nVERSION_ID="7"\nPRETTY_NAME="CentOS Linux 7 (Core)"\n')
    disk = ext4(tmp_path / "fs.img", root, 24)
    found = inspect_image(disk)
    assert (found.partition_table, found.firmware, found.distribution) == \
        ("none", "unknown", "centos")
    assert found.root.partition == 0 and found.root.fstab_naming == "device"
    assert found.kernel is not None
    assert found.kernel.path == "the disk's file system:/boot/vmlinuz-5.10.0-1-amd64"
    assert (found.kernel.xen_pv, found.kernel.xen_pvh) == (False, False)
    assert found.kernel.evidence == ("kernel image: Xen ELF notes (without the PV entry point, "
                                     "without the PVH entry point)",
                                     "kernel config: CONFIG_XEN_PV is not set")
    assert found.arch == "x86_64" and found.arch_evidence == "kernel image ELF header"
    text = " ".join(found.warnings)
    for expected in ("by device (/dev/sda1)", "No boot loader configuration",
                     "cannot run as a Xen PV guest", "no partition table",
                     "No initramfs was found"):
        assert expected in text


def test_unreadable_file_systems_are_named(tmp_path: Path) -> None:
    xfs = tmp_path / "xfs.img"
    xfs.write_bytes(b"XFSB" + b"\0" * 4092)
    lvm = tmp_path / "lvm.img"
    lvm.write_bytes(b"\0" * 512 + b"LABELONE" + b"\0" * 3576)
    disk = write_disk(tmp_path / "disk.img", 16 * MIB, [Part(2048, 4096, 0x83, image=xfs),
                                                        Part(8192, 4096, 0x8E, image=lvm)])
    with pytest.raises(InspectionError) as caught:
        inspect_image(disk)
    message = str(caught.value)
    assert "partition 1: file system xfs is not readable here" in message
    assert "partition 2: file system lvm2 is not readable here" in message


def test_damaged_ext4_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DamagedImage, match="the disk's file system: the file system is "
                                           "damaged or unreadable"):
        inspect_image(hostile.damaged_fs(tmp_path))


def test_truncated_bare_file_system(tmp_path: Path) -> None:
    with pytest.raises(DamagedImage, match="the disk's file system"):
        inspect_image(hostile.truncated_fs(tmp_path))


def test_not_a_disk(tmp_path: Path) -> None:
    junk = tmp_path / "junk.img"
    junk.write_bytes(b"\x01" * 4 * MIB)
    with pytest.raises(InspectionError, match="neither a partition table nor a file system"):
        inspect_image(junk)
    with pytest.raises(InspectionError, match="not a readable qcow2 image"):
        inspect_image(junk, "qcow2")
    with pytest.raises(InspectionError, match="format 'iso'"):
        inspect_image(junk, "iso")


def test_hostile_looping_directories_and_symlinks(tmp_path: Path) -> None:
    found = inspect_image(hostile.looping_links_fs(tmp_path))
    assert (found.root.fstab_naming, found.hostname) == ("label", "")
    assert found.arch == "x86_64" and found.arch_evidence == "ELF header of /bin/sh"
    assert found.kernel is not None and found.kernel.xen_pv is None
    assert "The kernel image could not be read: the disk's file system: /boot/vmlinuz is a " \
        "loop of symbolic links." in found.warnings
    assert "the disk's file system: /etc/hostname is a loop of symbolic links." in \
        found.warnings


def test_hostile_huge_directory(tmp_path: Path) -> None:
    with pytest.raises(DamagedImage, match="/boot holds more than 10000 entries"):
        inspect_image(hostile.huge_directory_fs(tmp_path))


def test_xen_device_names_need_no_renaming(tmp_path: Path) -> None:
    root = root_tree(tmp_path, fstab="/dev/xvda2 / ext4 defaults 0 1\n")
    found = inspect_image(ext4(tmp_path / "fs.img", root, 16))
    assert found.root.fstab_naming == "device"
    assert not any("by device" in warning for warning in found.warnings)
