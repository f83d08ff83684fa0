"""Boot loader configurations, fstab and os-release as inspection reads them."""

from __future__ import annotations

import pytest

from conversions.inspection import configs
from conversions.inspection.bootcode import mbr_boot_code
from conversions.inspection.drivers import drivers, parse_config

GRUB2 = """set default="1"
menuentry 'Debian, rescue' {
    linux /boot/vmlinuz-6.1.0-9-amd64 root=/dev/sda1 single
}
submenu 'Advanced options' {
    menuentry 'Debian, with Linux 6.1.0-13-amd64' --class debian {
        search --no-floppy --fs-uuid --set=root 1111
        linux   ($root)/vmlinuz-6.1.0-13-amd64 root=UUID=1111 ro quiet
        initrd  /initrd.img-6.1.0-13-amd64
    }
}
"""


def test_grub2_default_entry_first() -> None:
    entries = configs.parse_grub2(GRUB2)
    assert [e.kernel for e in entries] == ["/vmlinuz-6.1.0-13-amd64",
                                           "/boot/vmlinuz-6.1.0-9-amd64"]
    assert entries[0].initrd == "/initrd.img-6.1.0-13-amd64" and entries[0].root == "UUID=1111"


def test_grub_legacy_and_bls() -> None:
    entries = configs.parse_menu_lst("default=1\ntitle old\n kernel /vmlinuz-2.6.18 ro\n"
                                     "title CentOS (2.6.32)\n root (hd0,0)\n"
                                     " kernel (hd0,0)/vmlinuz-2.6.32 ro root=LABEL=/\n"
                                     " initrd /initramfs-2.6.32.img\n")
    assert (entries[0].title, entries[0].kernel, entries[0].root) == \
        ("CentOS (2.6.32)", "/vmlinuz-2.6.32", "LABEL=/")
    bls = configs.parse_bls("title Rocky\nlinux /vmlinuz-5.14\ninitrd /initramfs-5.14.img "
                            "$tuned_initrd\noptions root=/dev/mapper/rl-root ro\n")
    assert (bls.kernel, bls.initrd, bls.root) == ("/vmlinuz-5.14", "/initramfs-5.14.img",
                                                  "/dev/mapper/rl-root")


def test_syslinux_relative_paths_and_default() -> None:
    entries = configs.parse_syslinux("DEFAULT menu.c32\nLABEL a\n KERNEL ../vmlinuz\n"
                                     " APPEND initrd=../initrd.img root=/dev/xvda2\n",
                                     "/boot/extlinux")
    assert (entries[0].kernel, entries[0].initrd, entries[0].root) == \
        ("/boot/vmlinuz", "/boot/initrd.img", "/dev/xvda2")


@pytest.mark.parametrize(("spec", "kind"), [
    ("UUID=abc", "uuid"), ("LABEL=root", "label"), ("PARTUUID=1234abcd-02", "partuuid"),
    ("/dev/sda2", "device"), ("/dev/xvda1", "device"), ("/dev/mapper/vg-root", "lvm"),
    ("/dev/vg0/root", "lvm"), ("/dev/disk/by-uuid/abc", "uuid"), ("/dev/cciss/c0d0p1", "device"),
    ("tmpfs", "other"),
])
def test_naming(spec: str, kind: str) -> None:
    assert configs.naming(spec) == kind


def test_fstab_and_os_release() -> None:
    entries = configs.parse_fstab("# comment\nUUID=a / ext4 defaults 0 1\n\nproc /proc proc\n")
    assert [(e.spec, e.mountpoint) for e in entries] == [("UUID=a", "/"), ("proc", "/proc")]
    found = configs.parse_os_release('NAME="Ubuntu"\nVERSION_ID="22.04"\nID=ubuntu\nbad line\n'
                                     "ID_LIKE='debian'\n")
    assert found == {"NAME": "Ubuntu", "VERSION_ID": "22.04", "ID": "ubuntu",
                     "ID_LIKE": "debian"}


def test_mbr_boot_code() -> None:
    assert mbr_boot_code(b"\0" * 512) == "empty"
    assert mbr_boot_code(b"\xeb\x63" + b"GRUB \0Geom\0Hard Disk" + b"\0" * 400) == "grub"
    assert mbr_boot_code(b"\xfa" + b"Invalid partition table\0Error loading operating "
                         b"system" + b"\0" * 400) == "windows"
    assert mbr_boot_code(b"\xfa\x31" * 100) == "unknown"


def test_drivers_from_modules_and_config() -> None:
    found = drivers(("xen-blkfront", "vmw_pvscsi", "vmxnet3", "button"),
                    parse_config("CONFIG_VIRTIO_NET=y\nCONFIG_E1000=m\n"))
    assert found.disk == ("vmw_pvscsi", "xen_blkfront")
    assert found.network == ("vmxnet3", "virtio_net")
    assert found.built_in == ("virtio_net",)
    assert drivers(None, None).sources == ()
