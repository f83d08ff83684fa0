"""The xenweb appliance image: a bootable Debian 12 disk with Xen 4.17 and xenweb inside.

``ensure_appliance_image()`` returns an :class:`ApplianceImage`: a raw disk (MBR, one ext4
partition, GRUB in the MBR gap) and a compressed qcow2 of it. The disk boots Debian's own Xen
(``xen-system-amd64``: the stock hypervisor, not the lab's shadow-paging build) with a
multiboot2 entry as the default and a plain Linux entry for rescue. xenweb is installed by
``deploy/install.sh --image`` run for real in the image's root; the machine's secrets,
certificate, host keys and setup token are made at its first boot (``deploy/appliance/``),
never in the image.

Two stages, each cached in ``cache_dir()`` like the dom0 image (``lab/rootfs.py``):

- the base (``appliance-base/<key>/rootfs``): Debian, its packages and xenweb installed once;
  its key hashes the package versions, the install scripts and the dependency lists;
- the image (``appliance/<key>/``): a copy of the base with this tree's source installed over
  it by ``install.sh --image`` again (the update path: it keeps what is there), then the boot
  loader and the disk. Its key adds the hash of the source the image carries, so a rebuild
  happens only when the source or the base changes and takes a few minutes.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import tomllib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from lab import rootfs as debian
from lab.paths import cache_dir
from lab.rootfs import ImageBuildError

log = logging.getLogger(__name__)

BASE = Path(__file__).resolve().parent.parent.parent
# Bump when the image's layout or configuration changes: it is part of both keys.
BUILDER_VERSION = 1
# Debian underneath xenweb; deploy/install.sh adds Xen, libvirt, Redis and nginx.
PACKAGES = (
    "linux-image-amd64",
    "initramfs-tools",
    "systemd-sysv",
    "udev",
    "kmod",
    "e2fsprogs",
    "fdisk",
    "cloud-guest-utils",  # growpart: the root partition grows to the disk at first boot
    "iproute2",
    "openssh-server",
    "ca-certificates",
    "python3",
    "python3-venv",
    "procps",
    "less",
    "nano",
)
# Installed last: they change how the root resolves names and boots.
LATE_PACKAGES = ("dbus", "systemd-resolved", "grub-pc-bin", "grub2-common")
# Package versions in the base's key (install.sh's main packages and the kernel).
KEYED_PACKAGES = (
    *PACKAGES, "xen-system-amd64", "xen-hypervisor-4.17-amd64", "libvirt-daemon-driver-xen",
    "redis-server", "nginx-light", "nodejs",
)
# What the base is made from in this tree besides packages.
BASE_INPUTS = (
    "deploy/install.sh", "scripts/bootstrap.sh", "pyproject.toml", "package-lock.json",
)
# Source the image does not carry (install.sh leaves them out too).
NOT_SHIPPED = ("lab/", "bench/", "tests/", "docs/screenshots/")
ROOT_LABEL = "xenweb-root"
# Room for logs, updates and the first guests before the root grows to its disk.
SLACK_MIB = 1024
PARTITION_START_SECTOR = 2048  # 1 MiB: GRUB's core image lives in the gap before it
SECTOR = 512
HOSTNAME = "xenweb"
# The kernel and Xen arguments of the image's menu are those update-grub uses later.
GRUB_DEFAULTS = "deploy/appliance/grub-defaults.cfg"
GRUB_MODULES = ("biosdisk", "part_msdos", "ext2", "search_fs_uuid", "search")
SOURCE_DIR = "usr/src/xenweb"
HOST_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
BUILD_CA_BUNDLE = "root/build-ca-certificates.crt"
BUILD_ENV = {
    "PIP_CERT": f"/{BUILD_CA_BUNDLE}",
    "npm_config_cafile": f"/{BUILD_CA_BUNDLE}",
    "NODE_EXTRA_CA_CERTS": f"/{BUILD_CA_BUNDLE}",
    # systemctl enables and masks units in the files only: no systemd runs in the root
    # (and a chroot is not recognised as one in every sandbox).
    "SYSTEMD_OFFLINE": "1",
}

TREE = debian.Tree(
    files={
        "etc/fstab": f"LABEL={ROOT_LABEL} / ext4 defaults,errors=remount-ro 0 1\n",
        "etc/hostname": f"{HOSTNAME}\n",
        "etc/hosts": f"127.0.0.1 localhost\n127.0.1.1 {HOSTNAME}\n::1 localhost\n",
        debian.POLICY_RC_D: "#!/bin/sh\nexit 101\n",
        # A machine seen for the first time gets a fresh machine-id at boot (DHCP client
        # IDs and the journal derive from it), without systemd's "first boot" presets.
        "etc/machine-id": "",
    },
    executable=frozenset({debian.POLICY_RC_D}),
)


@dataclass(frozen=True)
class ApplianceImage:
    root: Path
    raw: Path
    qcow2: Path
    manifest: dict


def version() -> str:
    return tomllib.loads((BASE / "pyproject.toml").read_text())["project"]["version"]


def _complete_image(out: Path) -> ApplianceImage | None:
    try:
        manifest = json.loads((out / "manifest.json").read_text())
    except (OSError, ValueError):
        return None
    name = f"xenweb-appliance-{manifest.get('version')}"
    image = ApplianceImage(out, out / f"{name}.img", out / f"{name}.qcow2", manifest)
    return image if image.raw.is_file() and image.qcow2.is_file() else None


def _complete_base(out: Path) -> Path | None:
    root = out / "rootfs"
    return root if (out / "manifest.json").is_file() and root.is_dir() else None


def source_files(base: Path = BASE) -> list[str]:
    """The tree's files the image carries: tracked or new (not ignored), minus NOT_SHIPPED."""
    listed = debian.run(
        ["git", "-C", str(base), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        step="listing the source", timeout=60,
    ).split("\0")
    return sorted(
        name for name in listed
        if name and not name.startswith(NOT_SHIPPED) and (base / name).is_file()
    )


def _hash_files(base: Path, names: list[str]) -> str:
    digest = hashlib.sha256()
    for name in names:
        path = base / name
        digest.update(name.encode() + b"\0" + oct(path.stat().st_mode & 0o111).encode())
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def base_key(versions: dict[str, str]) -> str:
    return debian.cache_key(
        "appliance-base", BUILDER_VERSION, debian.SUITE, sorted(versions.items()),
        PACKAGES, LATE_PACKAGES, _hash_files(BASE, list(BASE_INPUTS)),
    )


def ensure_appliance_image() -> ApplianceImage:
    """The cached appliance image for this tree's source, built if missing."""
    versions = debian.resolve_versions(KEYED_PACKAGES)
    mirror, security = debian.configured_mirror(), debian.configured_security_mirror()
    key = base_key(versions)
    base = debian.ensure_cached(
        cache_dir() / "appliance-base", key, complete=_complete_base, what="appliance base",
        build=lambda staged, scratch: _build_base(staged, versions, mirror, security),
    )
    files = source_files()
    # This module writes the boot menu and the disk: an edit here makes a new image.
    image_key = debian.cache_key(key, _hash_files(BASE, [*files, "lab/appliance/image.py"]))
    return debian.ensure_cached(
        cache_dir() / "appliance", image_key, complete=_complete_image,
        what="appliance image",
        build=lambda staged, scratch: _build_image(staged, scratch, base, files, versions),
    )


@contextlib.contextmanager
def _build_network(rootfs: Path) -> Iterator[None]:
    """The build machine's way out while the root builds: its resolv.conf (systemd-resolved
    makes the image's a link into /run, empty in a chroot) and its CA certificates for pip
    and npm (a build machine behind a TLS-inspecting proxy trusts that proxy's CA; the
    image must not). Both are gone from the root afterwards."""
    conf = rootfs / "etc/resolv.conf"
    kept = os.readlink(conf) if conf.is_symlink() else None
    conf.unlink(missing_ok=True)
    shutil.copyfile("/etc/resolv.conf", conf)
    shutil.copyfile(HOST_CA_BUNDLE, rootfs / BUILD_CA_BUNDLE)
    try:
        yield
    finally:
        (rootfs / BUILD_CA_BUNDLE).unlink(missing_ok=True)
        if kept is not None:
            conf.unlink(missing_ok=True)
            conf.symlink_to(kept)


def _install_source(rootfs: Path, files: list[str]) -> Path:
    """This tree's source in the root, where install.sh --image takes it from."""
    target = rootfs / SOURCE_DIR
    shutil.rmtree(target, ignore_errors=True)
    for name in files:
        dest = target / name
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(BASE / name, dest)
    return target


def _run_installer(rootfs: Path, files: list[str]) -> None:
    _install_source(rootfs, files)
    try:
        debian.in_chroot(
            rootfs,
            ["bash", f"/{SOURCE_DIR}/deploy/install.sh", "--image", "--source", f"/{SOURCE_DIR}"],
            step="deploy/install.sh --image in the appliance root", env=BUILD_ENV,
        )
    finally:
        shutil.rmtree(rootfs / SOURCE_DIR, ignore_errors=True)


def _build_base(staged: Path, versions: dict[str, str], mirror: str, security: str) -> None:
    rootfs = staged / "rootfs"
    debian.debootstrap(rootfs, TREE, mirror=mirror, security=security)
    debian.apt_install(rootfs, PACKAGES)
    with _build_network(rootfs):
        _run_installer(rootfs, source_files())
        debian.apt_install(rootfs, LATE_PACKAGES)
    manifest = {"builder": BUILDER_VERSION, "versions": versions}
    (staged / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")


def _build_image(
    staged: Path, scratch: Path, base: Path, files: list[str], versions: dict[str, str]
) -> None:
    rootfs = scratch / "rootfs"
    debian.run(["cp", "-a", "--reflink=auto", str(base), str(rootfs)], step="copying the base")
    with _build_network(rootfs):
        _run_installer(rootfs, files)
        debian.clean_apt(rootfs)
    _finish_root(rootfs)
    root_uuid = str(uuid.uuid4())
    boot = _write_grub(rootfs, root_uuid, scratch / "core.img")
    name = f"xenweb-appliance-{version()}"
    filesystem = scratch / "root.ext4"
    size_mib = debian.used_mib(rootfs) * 9 // 8 + SLACK_MIB
    debian.make_ext4(rootfs, filesystem, label=ROOT_LABEL, size_mib=size_mib, uuid=root_uuid)
    raw = staged / f"{name}.img"
    _make_disk(raw, filesystem, scratch / "core.img", rootfs / "usr/lib/grub/i386-pc/boot.img")
    filesystem.unlink()
    debian.run(
        ["qemu-img", "convert", "-q", "-c", "-f", "raw", "-O", "qcow2", str(raw),
         str(staged / f"{name}.qcow2")],
        step="qemu-img convert (compressed qcow2)",
    )
    manifest = {
        "builder": BUILDER_VERSION, "version": version(), "versions": versions,
        "root_uuid": root_uuid, "boot": boot,
    }
    (staged / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")


def _finish_root(rootfs: Path) -> None:
    """What no two machines may share and what only the build needed."""
    for rel in ("etc/fstab", "etc/hostname", "etc/hosts"):
        (rootfs / rel).write_text(TREE.files[rel])  # packages may have replaced them
    for key in (rootfs / "etc/ssh").glob("ssh_host_*"):
        key.unlink()
    (rootfs / debian.POLICY_RC_D).unlink(missing_ok=True)
    (rootfs / "etc/machine-id").write_text("")
    (rootfs / "var/lib/dbus/machine-id").unlink(missing_ok=True)
    for leftover in ("etc/xenweb/xenweb.env", "etc/xenweb/redis-password",
                     "var/lib/xenweb/secret_key", "var/lib/xenweb/setup-token"):
        if (rootfs / leftover).exists():
            raise ImageBuildError(f"the image would carry a secret: /{leftover}")


def _newest(boot: Path, pattern: str) -> str:
    found = sorted(boot.glob(pattern))
    if not found:
        raise ImageBuildError(f"the appliance root's /boot has no {pattern}")
    return found[-1].name


def grub_defaults() -> dict[str, str]:
    """The ``KEY="value"`` settings of the shipped ``/etc/default/grub.d/xenweb.cfg``."""
    found = {}
    for line in (BASE / GRUB_DEFAULTS).read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep and key.isidentifier() and not line.startswith("#"):
            found[key] = value.strip('"')
    return found


def grub_config(root_uuid: str, xen: str, kernel: str, initrd: str) -> str:
    """The boot menu: Xen with dom0 (default), plain Linux for rescue. Serial and screen
    both show it (a server's console may be either)."""
    root = f"root=UUID={root_uuid}"
    defaults = grub_defaults()
    xen_args = defaults["GRUB_CMDLINE_XEN_DEFAULT"]
    dom0_args = f"ro {defaults['GRUB_CMDLINE_LINUX_XEN_REPLACE']}"
    rescue_args = f"ro {defaults['GRUB_CMDLINE_LINUX']}"
    return f"""# Written when the appliance image was built; update-grub replaces it with an
# equivalent menu (/etc/default/grub.d/xenweb.cfg keeps Xen the default).
serial --unit=0 --speed=115200
terminal_input console serial
terminal_output console serial
set default=0
set timeout=5
insmod part_msdos
insmod ext2
search --no-floppy --fs-uuid --set=root {root_uuid}
menuentry 'xenweb appliance (Debian 12, Xen 4.17)' --id xenweb-xen {{
    insmod multiboot2
    insmod gzio
    echo 'Loading Xen 4.17 ...'
    multiboot2 /boot/{xen} placeholder {xen_args}
    echo 'Loading Linux (dom0) ...'
    module2 /boot/{kernel} placeholder {root} {dom0_args}
    module2 --nounzip /boot/{initrd}
}}
menuentry 'Debian 12 without Xen (rescue)' --id xenweb-rescue {{
    insmod gzio
    linux /boot/{kernel} {root} {rescue_args}
    initrd /boot/{initrd}
}}
"""


def _write_grub(rootfs: Path, root_uuid: str, core: Path) -> dict[str, str]:
    boot = rootfs / "boot"
    files = {
        "xen": _newest(boot, "xen-4.17*.gz"),
        "kernel": _newest(boot, "vmlinuz-*"),
        "initrd": _newest(boot, "initrd.img-*"),
    }
    grub = boot / "grub"
    shutil.rmtree(grub / "i386-pc", ignore_errors=True)
    shutil.copytree(rootfs / "usr/lib/grub/i386-pc", grub / "i386-pc")
    (grub / "grub.cfg").write_text(grub_config(root_uuid, **files))
    # The core image finds the root file system by its UUID, then reads grub.cfg there.
    early = f"search --no-floppy --fs-uuid --set=root {root_uuid}\nset prefix=($root)/boot/grub\n"
    (grub / "early.cfg").write_text(early)
    debian.run(
        ["chroot", str(rootfs), "grub-mkimage", "-O", "i386-pc", "-o", "/boot/grub/core.img",
         "-c", "/boot/grub/early.cfg", "-p", "/boot/grub", *GRUB_MODULES],
        step="grub-mkimage", env=debian.CHROOT_ENV,
    )
    shutil.move(grub / "core.img", core)
    (grub / "early.cfg").unlink()
    return files


def _make_disk(raw: Path, filesystem: Path, core: Path, boot_img: Path) -> None:
    """MBR with one bootable Linux partition from sector 2048, GRUB's boot.img in the MBR
    and its core image right after it (sector 1: boot.img's and diskboot's defaults)."""
    start = PARTITION_START_SECTOR * SECTOR
    size = start + filesystem.stat().st_size
    raw.unlink(missing_ok=True)
    with raw.open("wb") as handle:
        handle.truncate(size)
    layout = f"label: dos\nunit: sectors\n\nstart={PARTITION_START_SECTOR}, type=83, bootable\n"
    debian.run(["sfdisk", "-q", str(raw)], stdin=layout, step="sfdisk", timeout=60)
    core_bytes = core.read_bytes()
    if len(core_bytes) > start - SECTOR:
        raise ImageBuildError(f"GRUB's core image ({len(core_bytes)} bytes) does not fit "
                              "before the first partition")
    with raw.open("r+b") as handle:
        handle.write(boot_img.read_bytes()[:440])  # the partition table after it stays
        handle.seek(SECTOR)
        handle.write(core_bytes)
    debian.run(
        ["dd", f"if={filesystem}", f"of={raw}", "bs=1M", f"seek={start // (1024 * 1024)}",
         "conv=sparse,notrunc", "status=none"],
        step="writing the root file system into the disk",
    )
