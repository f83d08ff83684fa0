"""A bootable disk for the lab, the way a real machine has one, built from Debian packages.

The tiny guest (``lab/tinyguest.py``) boots by direct kernel boot. Conversion tests need a
source whose boot depends on its disk: ``ensure_boot_disk(hostname, root_naming)`` builds a
raw image file with

- an MBR partition table written here (``mbr_bytes``), with SYSLINUX's ``mbr.bin`` as boot
  code (package ``syslinux-common``);
- partition 1, active: a 32 MiB FAT boot partition (``mkfs.vfat`` on a file, filled with
  ``mcopy -i disk.img@@<offset>``) holding ``/boot/vmlinuz`` (the tiny guest's Debian kernel),
  ``/boot/initrd.gz`` and ``/boot/extlinux/extlinux.conf``; SYSLINUX is installed into
  ``/boot/extlinux`` by Debian's mtools-based ``syslinux --install --offset``. Nothing is ever
  loop-mounted. SYSLINUX 6.04 looks for ``extlinux.conf`` then ``syslinux.cfg`` in its install
  directory first (then ``/boot/syslinux``, ``/syslinux``, ``/``); Xen's pygrub reads
  ``/boot/extlinux/extlinux.conf`` on the first partition it can open: one file serves both.
  pygrub's extlinux parser knows ``KERNEL`` and ``APPEND`` (with ``initrd=`` inside) only;
- partition 2: an ext4 root file system (``mkfs.ext4 -d <tree>``, UUID set with ``-U``) with
  ``/etc/hostname``, ``/etc/fstab`` naming the root as ``/dev/sda2`` (``"device"``, as
  VMware guests often do) or ``UUID=<uuid>`` (``"uuid"``), Debian 12's ``os-release`` and the
  kernel's ``/boot/config-<version>`` (what an inspector reads).

The kernel command line names the root the same way as the fstab. The initramfs is a second
flavour of the tiny guest's: it loads, from the kernel package, the disk, file-system and NIC
drivers a converted guest may need (IDE/AHCI/SCSI HBAs, virtio, Xen front ends; dependencies
from each module's ``.modinfo``, as depmod does), waits up to ``xenweb.rootwait`` seconds
(default 30) for the ``root=`` device, mounts it read-only on ``/root`` and checks that the
fstab's ``/`` entry resolves too. Then it prints ``BOOT_DISK_BANNER`` with the hostname read
from the disk (``banner_pattern``) and the MACs of the NICs it sees (``macs=``), or
``root <spec> not found`` plus the block devices it sees (``BOOT_DISK_NO_ROOT``): what a
conversion that forgot to rename the disk looks like. It does not hand over to the root file
system (which has no userland): the tiny guest's services follow in the initramfs (ticks,
ACPI power button, poweroff on a Xen shutdown request).

Images are cached in ``lab_dir()/boot-disk/<key>/`` (key: package versions, hostname, root
naming, ``BUILDER_VERSION``), built under a lock, renamed into place when complete; the pointer
``current-<naming>-<hostname>.json`` lets later calls skip resolving package versions while
the apt lists are unchanged, as the tiny guest does.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import stat
import struct
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from lab import tinyguest
from lab.paths import lab_dir
from lab.rootfs import locked
from lab.tinyguest import TinyGuestError

log = logging.getLogger(__name__)

BOOT_DISK_BANNER = "xenweb boot disk ready"
BOOT_DISK_PREFIX = "xenweb boot disk"
BOOT_DISK_NO_ROOT = "xenweb boot disk: root {spec} not found"
BOOT_DISK_NO_FSTAB_ROOT = "xenweb boot disk: fstab root {spec} not found"
BOOT_DISK_DEVICES = "xenweb boot disk: block devices:"

# Bump when the image content changes (layout, init step, files): it is part of the key.
BUILDER_VERSION = 2  # 2: the banner names the NICs' MACs

RootNaming = Literal["device", "uuid"]
ROOT_NAMINGS: tuple[RootNaming, ...] = ("device", "uuid")
ROOT_DEVICE = "/dev/sda2"  # the root partition as the source's IDE/SCSI disk names it

SECTOR = 512
BOOT_START = 2048  # sectors: 1 MiB, as fdisk aligns
BOOT_SECTORS = 32 * 2048
ROOT_START = BOOT_START + BOOT_SECTORS
ROOT_SECTORS = 16 * 2048
DISK_SECTORS = ROOT_START + ROOT_SECTORS
FAT16_LBA = 0x0E
LINUX = 0x83
SYSLINUX_DIR = "/boot/extlinux"
CONFIG_PATH = f"{SYSLINUX_DIR}/extlinux.conf"
MBR_BIN = (Path("/usr/lib/syslinux/mbr/mbr.bin"), Path("/usr/lib/SYSLINUX/mbr.bin"))
TOOLS = ("syslinux", "mcopy", "mmd", "mattrib", "mkfs.vfat", "mkfs.ext4")

# What a converted guest may boot from, as modules of Debian's kernel (each with its
# dependencies): disks, the root file system, NICs. ext4 asks the crypto API for "crc32c"
# (a soft dependency, not in ``depends=``), so crc32c_generic is named here.
DISK_MODULES = (
    "ata_piix", "ahci", "sd_mod",  # QEMU's IDE and SATA disks
    "sym53c8xx", "mptspi", "mptsas", "vmw_pvscsi",  # SCSI HBAs of VMware sources
    "virtio_pci", "virtio_blk", "virtio_scsi", "virtio_net",
    "xen_blkfront", "xen_netfront",
    "e1000", "8139cp", "8139too", "vmxnet3",
    "crc32c_generic", "ext4",
)  # fmt: skip

OS_RELEASE = """\
PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"
NAME="Debian GNU/Linux"
VERSION_ID="12"
VERSION="12 (bookworm)"
VERSION_CODENAME=bookworm
ID=debian
HOME_URL="https://www.debian.org/"
SUPPORT_URL="https://www.debian.org/support"
BUG_REPORT_URL="https://bugs.debian.org/"
"""

_HOSTNAME = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")


class BootDiskError(RuntimeError):
    """Building the boot disk failed."""


@dataclass(frozen=True)
class BootDisk:
    path: Path  # the raw disk image
    hostname: str
    root_naming: RootNaming
    root_spec: str  # how the kernel command line and /etc/fstab name the root
    fs_uuid: str  # the root file system's UUID
    kernel_version: str
    cmdline: str

    @property
    def size_bytes(self) -> int:
        return DISK_SECTORS * SECTOR


@dataclass(frozen=True)
class Partition:
    start: int  # LBA
    sectors: int
    type_id: int
    active: bool = False


# --- the pure parts ---------------------------------------------------------------------------


def partitions() -> tuple[Partition, Partition]:
    """The boot (FAT, active) and root (ext4) partitions."""
    return (
        Partition(BOOT_START, BOOT_SECTORS, FAT16_LBA, active=True),
        Partition(ROOT_START, ROOT_SECTORS, LINUX),
    )


def _chs(lba: int) -> bytes:
    """CHS address of ``lba`` in the usual 255-head, 63-sector geometry (saturated)."""
    heads, per_track = 255, 63
    cylinder = lba // (heads * per_track)
    if cylinder > 1023:
        return bytes((254, 0xFF, 0xFF))
    head, sector = (lba // per_track) % heads, lba % per_track + 1
    return bytes((head, ((cylinder >> 2) & 0xC0) | sector, cylinder & 0xFF))


def mbr_bytes(boot_code: bytes, parts: tuple[Partition, ...], signature: int) -> bytes:
    """A 512-byte MBR: boot code (at most 440 bytes), disk signature, up to four entries."""
    if len(boot_code) > 440:
        raise ValueError(f"MBR boot code is {len(boot_code)} bytes, at most 440 fit")
    if len(parts) > 4:
        raise ValueError("an MBR holds at most four primary partitions")
    sector = bytearray(SECTOR)
    sector[: len(boot_code)] = boot_code
    struct.pack_into("<I", sector, 440, signature)
    for index, part in enumerate(parts):
        entry = (
            bytes((0x80 if part.active else 0x00,))
            + _chs(part.start)
            + bytes((part.type_id,))
            + _chs(part.start + part.sectors - 1)
            + struct.pack("<II", part.start, part.sectors)
        )
        sector[446 + 16 * index : 462 + 16 * index] = entry
    sector[510:512] = b"\x55\xaa"
    return bytes(sector)


def root_spec(root_naming: RootNaming, fs_uuid: str) -> str:
    """How the command line and the fstab name the root: ``/dev/sda2`` or ``UUID=...``."""
    if root_naming == "device":
        return ROOT_DEVICE
    if root_naming == "uuid":
        return f"UUID={fs_uuid}"
    raise ValueError(f"root_naming must be one of {ROOT_NAMINGS}, not {root_naming!r}")


def boot_disk_cmdline(spec: str) -> str:
    """The kernel command line in the boot loader's config."""
    return f"root={spec} ro console=ttyS0 console=tty0 panic=-1 loglevel=3"


def fstab_text(spec: str) -> str:
    return (
        "# /etc/fstab: static file system information (xenweb lab boot disk)\n"
        "# <file system> <mount point> <type> <options> <dump> <pass>\n"
        f"{spec} / ext4 errors=remount-ro 0 1\n"
    )


def syslinux_config(cmdline: str) -> str:
    """``extlinux.conf`` for SYSLINUX and pygrub (both read ``KERNEL`` and ``APPEND``)."""
    return (
        "# xenweb lab boot disk: read by SYSLINUX and by Xen's pygrub\n"
        "SERIAL 0 115200\n"
        "PROMPT 0\n"
        "DEFAULT linux\n"
        "\n"
        "LABEL linux\n"
        "    KERNEL /boot/vmlinuz\n"
        f"    APPEND initrd=/boot/initrd.gz {cmdline}\n"
    )


def banner_pattern(hostname: str) -> str:
    """A regex for the line the guest prints once its root file system is mounted."""
    return rf"{re.escape(BOOT_DISK_BANNER)}: hostname={re.escape(hostname)} root=(\S+)"


def check_hostname(hostname: str) -> str:
    if not _HOSTNAME.fullmatch(hostname):
        raise ValueError(f"not a host name (a-z, 0-9, '-', up to 63): {hostname!r}")
    return hostname


# --- the initramfs step -----------------------------------------------------------------------

_INIT_ROOT = r"""
# xenweb boot disk (lab/bootdisk.py): find, mount and check the root file system.
skipped=""
while read -r module; do
    insmod "/lib/modules/$module.ko" 2>/dev/null || skipped="$skipped $module"
done </etc/modules-disk
[ -n "$skipped" ] && say "@PREFIX@: modules not loaded (no device for them?):$skipped"

cmdline_arg() {
    for arg in $(cat /proc/cmdline); do
        case "$arg" in "$1"=*) echo "${arg#*=}" ;; esac
    done
}
resolve() {
    case "$1" in
        UUID=*|LABEL=*) findfs "$1" 2>/dev/null ;;
        /dev/*) [ -b "$1" ] && echo "$1" ;;
    esac
}
macs() {  # the NICs' MACs as the guest sees them, comma-separated ("none")
    found=""
    for nic in /sys/class/net/*; do
        [ "${nic##*/}" = lo ] || found="$found,$(cat "$nic/address")"
    done
    echo "${found#,}" | grep . || echo none
}
not_found() {
    say "@PREFIX@: $1 $2 not found"
    say "@DEVICES@ $(ls /sys/class/block 2>/dev/null | tr '\n' ' ')"
}

root_spec=$(cmdline_arg root)
rootwait=$(cmdline_arg xenweb.rootwait)
case "$rootwait" in ''|*[!0-9]*) rootwait=30 ;; esac
waited=0
root_dev=$(resolve "$root_spec")
while [ -z "$root_dev" ] && [ "$waited" -lt "$rootwait" ]; do
    sleep 1
    waited=$((waited + 1))
    root_dev=$(resolve "$root_spec")
done
if [ -z "$root_dev" ]; then
    not_found root "$root_spec"
elif ! mount -t ext4 -o ro "$root_dev" /root; then
    say "@PREFIX@: cannot mount root $root_dev"
else
    name=$(cat /root/etc/hostname)
    fstab_root=$(awk '$1 !~ /^#/ && $2 == "/" { print $1; exit }' /root/etc/fstab)
    if [ -z "$(resolve "$fstab_root")" ]; then
        not_found "fstab root" "$fstab_root"
    else
        hostname "$name"
        say "@BANNER@: hostname=$name root=$root_dev kernel=$(uname -r) uptime=$(uptime_s)" \
            "macs=$(macs)"
    fi
fi
"""


def init_script() -> str:
    """The disk flavour's ``/init``: the tiny guest's setup, the root step, its services."""
    root_step = (
        _INIT_ROOT.replace("@PREFIX@", BOOT_DISK_PREFIX)
        .replace("@DEVICES@", BOOT_DISK_DEVICES)
        .replace("@BANNER@", BOOT_DISK_BANNER)
    )
    return tinyguest.INIT_SETUP + root_step + tinyguest.INIT_SERVICES


# --- cache ------------------------------------------------------------------------------------


def ensure_boot_disk(hostname: str, root_naming: RootNaming = "device") -> BootDisk:
    """The boot disk for ``hostname``, built if missing. Idempotent and process-safe.

    Callers must not write to the image: boot it with ``snapshot=on`` or copy it.
    """
    check_hostname(hostname)
    root_spec(root_naming, "")  # validates root_naming
    root = lab_dir() / "boot-disk"
    root.mkdir(exist_ok=True)
    pointer_file = root / f"current-{root_naming}-{hostname}.json"
    disk = _current(root, pointer_file, check_apt=True)
    if disk:
        return disk
    with locked(root / ".lock"):
        disk = _current(root, pointer_file, check_apt=True)
        if disk:
            return disk
        for leftover in [*root.glob(".build-*"), *root.glob(".scratch-*")]:
            shutil.rmtree(leftover, ignore_errors=True)
        apt_stamp = tinyguest._apt_lists_stamp()
        try:
            kernel, busybox = tinyguest._resolve_packages()
        except TinyGuestError as exc:
            disk = _current(root, pointer_file, check_apt=False)
            if disk is None:
                raise BootDiskError(str(exc)) from exc
            log.warning("%s; using the boot disk built before", exc)
            return disk
        key = _key(hostname, root_naming, kernel, busybox)
        out = root / key
        if not (out / "manifest.json").is_file():
            shutil.rmtree(out, ignore_errors=True)
            _build(hostname, root_naming, key, kernel, busybox, root, out)
        manifest = json.loads((out / "manifest.json").read_text())
        pointer = {"builder": BUILDER_VERSION, "key": key, "apt_lists": apt_stamp, **manifest}
        tmp = root / f".{pointer_file.name}.tmp"
        tmp.write_text(json.dumps(pointer, indent=2) + "\n")
        tmp.replace(pointer_file)
        return _disk(out, manifest)


def _disk(out: Path, manifest: dict[str, str]) -> BootDisk:
    return BootDisk(
        path=out / "disk.img",
        hostname=manifest["hostname"],
        root_naming=manifest["root_naming"],  # type: ignore[arg-type]
        root_spec=manifest["root_spec"],
        fs_uuid=manifest["fs_uuid"],
        kernel_version=manifest["kernel_version"],
        cmdline=manifest["cmdline"],
    )


def _current(root: Path, pointer_file: Path, *, check_apt: bool) -> BootDisk | None:
    try:
        pointer = json.loads(pointer_file.read_text())
    except (OSError, ValueError):
        return None
    if pointer.get("builder") != BUILDER_VERSION:
        return None
    if check_apt and pointer.get("apt_lists") != tinyguest._apt_lists_stamp():
        return None
    out = root / pointer["key"]
    if not (out / "manifest.json").is_file() or not (out / "disk.img").is_file():
        return None
    return _disk(out, pointer)


def _key(hostname: str, root_naming: str, *packages: tinyguest._Package) -> str:
    text = json.dumps(
        [BUILDER_VERSION, tinyguest.BUILDER_VERSION, hostname, root_naming,
         [vars(p) for p in packages], [BOOT_SECTORS, ROOT_SECTORS]]
    )  # fmt: skip
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# --- build ------------------------------------------------------------------------------------


def _tool(name: str) -> str:
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
    if path is None:
        raise BootDiskError(
            f"{name} not found: install syslinux, syslinux-common, mtools, dosfstools and "
            "e2fsprogs (scripts/bootstrap.sh does)"
        )
    return path


def _mbr_code() -> bytes:
    for path in MBR_BIN:
        if path.is_file():
            return path.read_bytes()
    raise BootDiskError("SYSLINUX's mbr.bin not found: install syslinux-common")


def _run(args: list[str]) -> str:
    env = {**os.environ, "MTOOLS_SKIP_CHECK": "1"}  # no geometry complaints on an image file
    try:
        result = subprocess.run(args, capture_output=True, text=True, check=False, env=env)
    except OSError as exc:
        raise BootDiskError(f"{' '.join(args)} failed: {exc}") from exc
    if result.returncode != 0:
        detail = (result.stderr or result.stdout).strip().splitlines()[-3:]
        raise BootDiskError(f"{' '.join(args)} failed: {' / '.join(detail)}")
    return result.stdout


def _root_tree(tree: Path, hostname: str, spec: str, kernel_config: Path, version: str) -> None:
    for name in ("bin", "sbin", "lib", "dev", "proc", "sys", "run", "tmp", "root", "home",
                 "var/log", "usr/lib", "boot", "etc"):  # fmt: skip
        (tree / name).mkdir(parents=True, exist_ok=True)
    (tree / "tmp").chmod(0o1777)
    (tree / "etc/hostname").write_text(f"{hostname}\n")
    (tree / "etc/hosts").write_text(f"127.0.0.1\tlocalhost\n127.0.1.1\t{hostname}\n")
    (tree / "etc/fstab").write_text(fstab_text(spec))
    (tree / "usr/lib/os-release").write_text(OS_RELEASE)
    (tree / "etc/os-release").symlink_to("../usr/lib/os-release")
    shutil.copyfile(kernel_config, tree / "boot" / f"config-{version}")


def _write_at(disk: Path, offset: int, part: Path) -> None:
    with disk.open("r+b") as out, part.open("rb") as src:
        out.seek(offset)
        shutil.copyfileobj(src, out, 1 << 20)


def _build(
    hostname: str,
    root_naming: RootNaming,
    key: str,
    kernel: tinyguest._Package,
    busybox: tinyguest._Package,
    root: Path,
    out: Path,
) -> None:
    started = time.monotonic()
    log.info("building the boot disk %s (%s root naming)", hostname, root_naming)
    tools = {name: _tool(name) for name in TOOLS}
    mbr_code = _mbr_code()
    kernel_deb = tinyguest._download(kernel)
    busybox_deb = tinyguest._download(busybox)
    fs_uuid = str(uuid.uuid5(uuid.NAMESPACE_URL, f"xenweb-lab-boot-disk:{key}"))
    spec = root_spec(root_naming, fs_uuid)
    cmdline = boot_disk_cmdline(spec)
    build = Path(tempfile.mkdtemp(dir=root, prefix=".build-"))
    try:
        with tempfile.TemporaryDirectory(dir=root, prefix=".scratch-") as scratch_dir:
            scratch = Path(scratch_dir)
            kernel_tree = tinyguest._extract(kernel_deb, scratch / "kernel")
            busybox_tree = tinyguest._extract(busybox_deb, scratch / "busybox")
            vmlinuz = sorted((kernel_tree / "boot").glob("vmlinuz-*"))
            if len(vmlinuz) != 1:
                raise BootDiskError(f"{kernel_deb.name}: expected one boot/vmlinuz-*")
            version = vmlinuz[0].name.removeprefix("vmlinuz-")
            moddir = kernel_tree / "lib" / "modules" / version
            try:
                # The disk modules load first (the root step), the tiny guest's later.
                disk_modules = tinyguest._modules(moddir, DISK_MODULES)
                disk_names = {name for name, _ in disk_modules}
                tiny_modules = [
                    (name, data)
                    for name, data in tinyguest._modules(moddir, tinyguest.MODULES)
                    if name not in disk_names
                ]
                initrd = tinyguest._initramfs(
                    busybox_tree / "bin" / "busybox",
                    tiny_modules,
                    init=init_script(),
                    extra=_module_entries(disk_modules),
                )
            except TinyGuestError as exc:
                raise BootDiskError(str(exc)) from exc
            (scratch / "initrd.gz").write_bytes(initrd)
            config = scratch / "extlinux.conf"
            config.write_text(syslinux_config(cmdline))

            tree = scratch / "rootfs"
            _root_tree(tree, hostname, spec, kernel_tree / "boot" / f"config-{version}", version)
            root_img = scratch / "root.img"
            with root_img.open("wb") as handle:
                handle.truncate(ROOT_SECTORS * SECTOR)
            _run([tools["mkfs.ext4"], "-q", "-F", "-b", "4096", "-I", "256", "-U", fs_uuid,
                  "-E", "root_owner=0:0", "-d", str(tree), str(root_img)])  # fmt: skip

            boot_img = scratch / "boot.img"
            with boot_img.open("wb") as handle:
                handle.truncate(BOOT_SECTORS * SECTOR)
            volume_id = fs_uuid.replace("-", "")[:8]
            _run([tools["mkfs.vfat"], "-F", "16", "-h", str(BOOT_START), "-n", "BOOT",
                  "-i", volume_id, str(boot_img)])  # fmt: skip

            disk = build / "disk.img"
            with disk.open("wb") as handle:
                handle.truncate(DISK_SECTORS * SECTOR)
                signature = int(fs_uuid.replace("-", "")[8:16], 16)
                handle.write(mbr_bytes(mbr_code, partitions(), signature))
            _write_at(disk, BOOT_START * SECTOR, boot_img)
            _write_at(disk, ROOT_START * SECTOR, root_img)

            fat = f"{disk}@@{BOOT_START * SECTOR}"
            _run([tools["mmd"], "-i", fat, "::/boot", f"::{SYSLINUX_DIR}"])
            for source, target in ((vmlinuz[0], "/boot/vmlinuz"), (scratch / "initrd.gz",
                                   "/boot/initrd.gz"), (config, CONFIG_PATH)):  # fmt: skip
                _run([tools["mcopy"], "-i", fat, str(source), f"::{target}"])
            _run([tools["syslinux"], "--install", "--offset", str(BOOT_START * SECTOR),
                  "--directory", SYSLINUX_DIR, str(disk)])  # fmt: skip
        manifest = {
            "hostname": hostname,
            "root_naming": root_naming,
            "root_spec": spec,
            "fs_uuid": fs_uuid,
            "kernel_version": version,
            "cmdline": cmdline,
            "packages": [vars(kernel), vars(busybox)],
            "modules": [name for name, _ in [*disk_modules, *tiny_modules]],
            "initrd_bytes": len(initrd),
            "disk_bytes": DISK_SECTORS * SECTOR,
            "build_seconds": round(time.monotonic() - started, 1),
        }
        (build / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        build.chmod(0o755)
        build.rename(out)
    except BaseException:
        shutil.rmtree(build, ignore_errors=True)
        raise
    log.info("boot disk %s built in %s (%.1f s)", hostname, out, time.monotonic() - started)


def _module_entries(modules: list[tuple[str, bytes]]) -> tuple[tinyguest._Entry, ...]:
    listing = "".join(f"{name}\n" for name, _ in modules).encode()
    regular = stat.S_IFREG | 0o644
    return (
        tinyguest._Entry("etc/modules-disk", regular, listing),
        *(tinyguest._Entry(f"lib/modules/{name}.ko", regular, data) for name, data in modules),
    )
