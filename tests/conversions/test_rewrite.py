"""Guest conversion inside the converted copy (conversions.rewrite): the text edits, the
user-space writers (debugfs, mtools) on a real boot disk, and the whole conversion for Xen
PV, checked by inspecting the result and by e2fsck."""

from __future__ import annotations

import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from conversions.inspection.inspector import inspect_image
from conversions.rewrite.convert import XEN_PV, ConversionFailed, convert_guest, renaming_for
from conversions.rewrite.texts import (
    Renaming,
    rewrite_boot_config,
    rewrite_default_grub,
    rewrite_fstab,
)
from conversions.rewrite.writers import replace_file
from lab.bootdisk import ensure_boot_disk

UUID = "UUID=11111111-2222-3333-4444-555555555555"
RENAMING = Renaming(("sd", "hd", "vd"), "xvd", {1: "UUID=AB12-CD34", 2: UUID}, "hvc0")


@pytest.mark.parametrize(("spec", "new"), [
    ("/dev/sda2", UUID), ("/dev/sda1", "UUID=AB12-CD34"), ("/dev/hda2", UUID),
    ("/dev/vda2", UUID), ("/dev/sda3", "/dev/xvda3"), ("/dev/sdb1", "/dev/xvdb1"),
    ("/dev/sdaa1", "/dev/xvdaa1"), ("/dev/xvda2", "/dev/xvda2"), (UUID, UUID),
    ("LABEL=root", "LABEL=root"), ("/dev/mapper/vg-root", "/dev/mapper/vg-root"),
    ("/dev/sda", "/dev/xvda"), ("proc", "proc"), ("/dev/sda2x", "/dev/sda2x"),
])
def test_device_names_on_the_target(spec: str, new: str) -> None:
    assert RENAMING.spec(spec) == new


def test_fstab_keeps_comments_options_and_layout() -> None:
    text = ("# /dev/sda2 was here\n/dev/sda2\t/\text4  errors=remount-ro 0 1\n"
            "/dev/sdb1 /srv xfs defaults 0 2\nUUID=x /boot vfat defaults 0 0\n"
            "proc /proc proc defaults 0 0\n\n  /dev/sda3 none swap sw 0 0")
    new, changes = rewrite_fstab(text, RENAMING)
    assert new == ("# /dev/sda2 was here\n" + UUID + "\t/\text4  errors=remount-ro 0 1\n"
                   "/dev/xvdb1 /srv xfs defaults 0 2\nUUID=x /boot vfat defaults 0 0\n"
                   "proc /proc proc defaults 0 0\n\n  /dev/xvda3 none swap sw 0 0")
    assert changes == [f"/dev/sda2 → {UUID}", "/dev/sdb1 → /dev/xvdb1",
                       "/dev/sda3 → /dev/xvda3"]
    assert rewrite_fstab(new, RENAMING) == (new, [])  # converting twice changes nothing


def test_extlinux_append_lines() -> None:
    text = ("DEFAULT linux\nLABEL linux\n    KERNEL /boot/vmlinuz\n"
            "    APPEND initrd=/boot/initrd.gz root=/dev/sda2 ro console=ttyS0\n"
            "label rescue\n  kernel /boot/vmlinuz\n  append root=/dev/sda2 resume=/dev/sda3 s\n")
    new, changes = rewrite_boot_config("extlinux", text, RENAMING)
    assert ("    APPEND initrd=/boot/initrd.gz root=" + UUID +
            " ro console=ttyS0 console=hvc0\n") in new
    assert f"  append root={UUID} resume=/dev/xvda3 s console=hvc0\n" in new
    assert "KERNEL /boot/vmlinuz\n" in new
    assert changes.count("console=hvc0 added") == 2
    assert rewrite_boot_config("syslinux", new, RENAMING) == (new, [])


def test_grub2_linux_lines_only() -> None:
    text = ("set root='hd0,msdos1'\nmenuentry 'Debian' {\n"
            "\tsearch --no-floppy --fs-uuid --set=root 1234\n"
            "\tlinux\t/vmlinuz-6.1 root=/dev/sda2 ro quiet\n\tinitrd\t/initrd.img-6.1\n}\n"
            "menuentry 'bare' {\n  linux16 /vmlinuz\n}\n")
    new, _ = rewrite_boot_config("grub2", text, RENAMING)
    assert f"\tlinux\t/vmlinuz-6.1 root={UUID} ro quiet console=hvc0\n" in new
    assert "  linux16 /vmlinuz console=hvc0\n" in new  # a line without arguments gets a gap
    assert "set root='hd0,msdos1'\n" in new and "--set=root 1234\n" in new


def test_grub_legacy_kernel_lines_and_update_grub_defaults() -> None:
    text = ("default 0\n# kopt=root=/dev/sda2 ro\ntitle Debian\nroot (hd0,0)\n"
            "kernel /boot/vmlinuz root=/dev/sda2 ro\ninitrd /boot/initrd\n")
    new, changes = rewrite_boot_config("grub-legacy", text, RENAMING)
    assert f"kernel /boot/vmlinuz root={UUID} ro console=hvc0\n" in new
    assert f"# kopt=root={UUID} ro console=hvc0\n" in new
    assert "root (hd0,0)\n" in new and len(changes) == 4


def test_default_grub_gets_the_console_only() -> None:
    text = 'GRUB_DEFAULT=0\nGRUB_CMDLINE_LINUX="root=/dev/sda2 quiet"\nGRUB_CMDLINE_LINUX=""\n'
    new, changes = rewrite_default_grub(text, RENAMING)
    assert new == ('GRUB_DEFAULT=0\nGRUB_CMDLINE_LINUX="root=/dev/sda2 quiet console=hvc0"\n'
                   'GRUB_CMDLINE_LINUX="console=hvc0"\n')
    assert changes == ["console=hvc0 added"] * 2


def test_unknown_boot_loaders_are_refused() -> None:
    with pytest.raises(ValueError, match="bls"):
        rewrite_boot_config("bls", "", RENAMING)


@pytest.fixture
def copy(tmp_path: Path) -> Path:
    disk = tmp_path / "copy.img"
    shutil.copy(ensure_boot_disk("rewrite-src", "device").path, disk)
    return disk


def _e2fsck(disk: Path, start: int) -> None:
    subprocess.run(["e2fsck", "-fn", f"{disk}?offset={start}"], check=True,
                   capture_output=True, timeout=120)


def test_xen_pv_conversion_of_a_real_boot_disk(copy: Path) -> None:
    source = ensure_boot_disk("rewrite-src", "device")
    before = inspect_image(copy)
    notes = convert_guest(str(copy), before, XEN_PV)
    uuid = before.partitions[1].uuid
    assert notes == [
        f"/etc/fstab (partition 2): /dev/sda2 → UUID={uuid}.",
        f"/boot/extlinux/extlinux.conf (partition 1): root=/dev/sda2 → root=UUID={uuid}; "
        "console=hvc0 added."]
    after = inspect_image(copy)
    assert (after.root.fstab_spec, after.root.cmdline_root) == (f"UUID={uuid}",) * 2
    assert after.kernel is not None and after.kernel.cmdline.endswith("console=hvc0")
    assert after.hostname == "rewrite-src" and after.boot_loader == before.boot_loader
    _e2fsck(copy, before.partitions[1].start)
    assert convert_guest(str(copy), after, XEN_PV) == [
        "/etc/fstab: nothing to change for Xen PV.",
        "/boot/extlinux/extlinux.conf: nothing to change for Xen PV."]
    assert source.path.read_bytes() != copy.read_bytes()  # the source is never touched


def test_the_file_keeps_its_mode_and_owner(copy: Path) -> None:
    found = inspect_image(copy)
    root = found.partitions[1]
    replace_file(str(copy), root.start, root.size, "/etc/hostname", b"renamed\n", "root")
    stat = subprocess.run(["debugfs", "-c", "-R", "stat /etc/hostname",
                           f"{copy}?offset={root.start}"], capture_output=True, text=True,
                          check=True).stdout
    assert "Mode:  0644" in stat and "User:     0   Group:     0" in stat
    assert inspect_image(copy).hostname == "renamed"
    _e2fsck(copy, root.start)


def test_a_file_system_with_an_unreplayed_journal_is_refused(copy: Path) -> None:
    found = inspect_image(copy)
    root = found.partitions[1]
    with copy.open("r+b") as disk:  # mark the journal as holding changes
        disk.seek(root.start + 1024 + 0x60)
        incompat = struct.unpack("<I", disk.read(4))[0]
        disk.seek(root.start + 1024 + 0x60)
        disk.write(struct.pack("<I", incompat | 0x4))
    untouched = copy.read_bytes()
    with pytest.raises(ConversionFailed, match="not shut down cleanly"):
        convert_guest(str(copy), found, XEN_PV)
    assert copy.read_bytes() == untouched


def test_paths_the_writers_refuse(copy: Path) -> None:
    root = inspect_image(copy).partitions[1]
    for path in ("etc/fstab", '/etc/"x', "/etc/a\nb", "/etc/"):
        with pytest.raises(ConversionFailed, match="Refused"):
            replace_file(str(copy), root.start, root.size, path, b"x", "root")
    with pytest.raises(ConversionFailed, match="not a regular file"):
        replace_file(str(copy), root.start, root.size, "/etc", b"x", "root")


def test_the_renaming_names_the_disks_partitions_by_uuid(copy: Path) -> None:
    found = inspect_image(copy)
    renaming = renaming_for(found, XEN_PV)
    assert renaming.first_disk == {1: f"UUID={found.partitions[0].uuid}",
                                   2: f"UUID={found.partitions[1].uuid}"}
    assert renaming.old_prefixes == ("sd", "hd", "vd")
