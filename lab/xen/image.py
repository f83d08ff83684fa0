"""The Xen dom0 disk image and boot files, built once from Debian packages and cached.

``ensure_dom0_image()`` returns a :class:`Dom0Image`: a raw ext4 root file system (Debian 12
with Xen 4.17, libvirt's libxl driver and sshd), the Xen hypervisor built from Debian's
source with shadow paging (``hypervisor.py``; QEMU's multiboot loader takes it with
``-kernel``), an uncompressed dom0 ``vmlinux`` (Xen boots it
faster under TCG than the bzImage) and the dom0 initrd (only the modules listed in
``INITRD_MODULES``).

The build (``lab/rootfs.py``, shared with the appliance image) runs ``debootstrap`` (minbase)
into a scratch folder, installs ``PACKAGES`` without
recommends in a chroot (a ``policy-rc.d`` keeps every service from starting on this machine),
configures the system (``_configure``) and makes the image with ``mkfs.ext4 -d``: no loop
mount. It takes a minute or two and about 900 MB; the result lives in
``cache_dir()/xen-dom0/<key>/`` (outside the clone, so that CI and later runs reuse it), the
key hashing the candidate versions of the packages and ``BUILDER_VERSION``. Builders are
serialised by a lock file; a build is renamed into place only when complete.

Each lab host boots the image through its own copy-on-write overlay and gets its identity
(root's ``authorized_keys``, an SSH host key, a hostname) from a small "seed" disk that
``xenweb-seed.service`` copies in before sshd starts (see ``boot.py``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import lzma
import shutil
from dataclasses import dataclass
from pathlib import Path

from lab import rootfs as debian
from lab.paths import cache_dir
from lab.rootfs import SUITE, ImageBuildError, apt_sources

from .hypervisor import build_hypervisor

log = logging.getLogger(__name__)

# Bump when the image content changes (configuration, layout): it is part of the cache key.
BUILDER_VERSION = 7

PACKAGES = (
    "linux-image-amd64",
    "xen-hypervisor-4.17-amd64",
    "xen-utils-4.17",
    "libvirt-daemon",
    "libvirt-daemon-system",
    "libvirt-daemon-driver-xen",
    "openssh-server",
    "udev",
    "kmod",
    "e2fsprogs",
    # Shared storage between lab dom0s: dom0 #1 exports over NFS, the others mount it (a
    # libvirt netfs pool). Installed but not started at boot (see DISABLE).
    "nfs-kernel-server",
    "nfs-common",
)
INITRD_MODULES = (
    "virtio_pci",
    "virtio_blk",
    "virtio_net",
    "ext4",
    "xen-blkfront",
    "xen-netfront",
)
# Free space left in the root file system for the guests' files and logs.
SLACK_MIB = 512

SEED_LABEL = "xenweb-seed"
SEED_SCRIPT = """#!/bin/sh
# Copies this host's identity from the seed disk (made by the lab on the build machine).
set -eu
# The kernel made /dev/vdb (devtmpfs) while probing virtio disks in the initramfs: no need
# to wait for udev's coldplug, which takes minutes on a busy TCG host.
tries=0
while [ ! -b /dev/vdb ]; do
    tries=$((tries + 1))
    if [ "$tries" -gt 1200 ]; then
        echo "xenweb-seed: no seed disk /dev/vdb" >&2
        exit 1
    fi
    sleep 0.5
done
seed=/run/xenweb-seed
mkdir -p "$seed"
mount -t ext4 -o ro /dev/vdb "$seed"
install -d -m 700 /root/.ssh
install -m 600 "$seed/authorized_keys" /root/.ssh/authorized_keys
rm -f /etc/ssh/ssh_host_*
install -m 600 "$seed/ssh_host_ed25519_key" /etc/ssh/ssh_host_ed25519_key
install -m 644 "$seed/ssh_host_ed25519_key.pub" /etc/ssh/ssh_host_ed25519_key.pub
if [ -s "$seed/hostname" ]; then
    cat "$seed/hostname" > /etc/hostname
    hostname "$(cat "$seed/hostname")"
fi
if [ -d "$seed/files" ]; then
    cp -a "$seed/files/." /
fi
umount "$seed"
"""
SEED_UNIT = """[Unit]
Description=xenweb lab: this host's identity from the seed disk
DefaultDependencies=no
After=local-fs.target
Before=ssh.service libvirtd.service systemd-networkd.service network-pre.target
Wants=network-pre.target

[Service]
Type=oneshot
RemainAfterExit=yes
TimeoutStartSec=900
ExecStart=/usr/local/sbin/xenweb-seed

[Install]
WantedBy=multi-user.target
"""
# libvirt-daemon depends on the QEMU driver, which a Xen dom0 does not use: without its
# module libvirtd starts faster (no probing for /dev/kvm and QEMU binaries).
DPKG_EXCLUDE = (
    "/usr/lib/x86_64-linux-gnu/libvirt/connection-driver/libvirt_driver_qemu.so",
    "/usr/lib/x86_64-linux-gnu/libvirt/connection-driver/libvirt_driver_lxc.so",
)
FILES = {
    "etc/fstab": "/dev/vda / ext4 defaults,noatime 0 1\n",
    "etc/hostname": "xenweb-dom0\n",
    "etc/hosts": "127.0.0.1 localhost\n",
    # QEMU's user network always hands out 10.0.2.15: a static address spares the DHCP
    # exchange at boot.
    "etc/systemd/network/80-lab.network": (
        "[Match]\nName=en* eth*\n\n[Network]\nAddress=10.0.2.15/24\nGateway=10.0.2.2\n"
        "DNS=10.0.2.3\nLinkLocalAddressing=no\nIPv6AcceptRA=no\n"
    ),
    "etc/systemd/journald.conf.d/xenweb.conf": "[Journal]\nStorage=volatile\n",
    # A busy machine can slow a TCG boot to minutes: systemd's 90 s defaults would fail
    # units (sshd, libvirtd) that are merely slow.
    "etc/systemd/system.conf.d/xenweb.conf": (
        "[Manager]\nDefaultTimeoutStartSec=900s\nDefaultDeviceTimeoutSec=900s\n"
    ),
    # A storage pool where an operator keeps guest images (Xen's own place for them), as
    # virt-manager or the installer would have defined; the app's volumes land here.
    "etc/libvirt/storage/default.xml": (
        "<pool type='dir'>\n  <name>default</name>\n"
        "  <uuid>5f0c6a51-7b1e-4c1a-9a53-00000000d0d0</uuid>\n"
        "  <target>\n    <path>/var/lib/xen/images</path>\n  </target>\n</pool>\n"
    ),
    "etc/ssh/sshd_config.d/xenweb.conf": (
        "HostKey /etc/ssh/ssh_host_ed25519_key\n"
        "PermitRootLogin prohibit-password\n"
        "PasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\n"
        "UseDNS no\n"
        # No PAM session: pam_systemd would start a systemd --user manager for root on
        # each login, which takes seconds under TCG (libvirt opens one SSH login per
        # connection). Key authentication does not need PAM.
        "UsePAM no\n"
        "PrintMotd no\n"
        "PrintLastLog no\n"
        # Under TCG a key exchange takes seconds, and the app opens several libvirt
        # connections at once (web, watcher, console, jobs): sshd's default MaxStartups
        # (10:30:100) then drops new connections at random (kex_exchange_identification).
        "MaxStartups 100:30:200\n"
        "LoginGraceTime 600\n"
    ),
    # libvirt's libxl driver needs xenstored and friends: start after the Xen init script.
    "etc/systemd/system/libvirtd.service.d/xen.conf": (
        "[Unit]\nAfter=xen.service xenstored.service\nWants=xen.service\n"
    ),
    # Always on (Debian's default --timeout 120 makes it exit when idle).
    "etc/default/libvirtd": 'LIBVIRTD_ARGS=""\n',
    "etc/initramfs-tools/conf.d/xenweb": "MODULES=list\nCOMPRESS=gzip\n",
    "etc/initramfs-tools/modules": "".join(f"{name}\n" for name in INITRD_MODULES),
    "usr/sbin/policy-rc.d": "#!/bin/sh\nexit 101\n",
    "usr/local/sbin/xenweb-seed": SEED_SCRIPT,
    "etc/systemd/system/xenweb-seed.service": SEED_UNIT,
    "etc/dpkg/dpkg.cfg.d/xenweb-lab": "".join(f"path-exclude={p}\n" for p in DPKG_EXCLUDE),
}
# Units that only slow a lab dom0's boot under TCG (no VGA, no disks to scrub, no updates,
# no logins on a console: everything goes over SSH, which runs without PAM).
MASK = (
    "e2scrub_reap.service",
    "e2scrub_all.timer",
    "apt-daily.timer",
    "apt-daily-upgrade.timer",
    "fstrim.timer",
    "dpkg-db-backup.timer",
    "logrotate.timer",
    "systemd-tmpfiles-clean.timer",
    "getty@tty1.service",
    "serial-getty@hvc0.service",
    "systemd-rfkill.service",
    "systemd-rfkill.socket",
    "libvirt-guests.service",
    "systemd-logind.service",
    "systemd-machined.service",
    "systemd-binfmt.service",
    "proc-sys-fs-binfmt_misc.automount",
    "systemd-pstore.service",
    "systemd-random-seed.service",
    "systemd-update-utmp.service",
    "systemd-update-utmp-runlevel.service",
    "systemd-journal-flush.service",
    "systemd-remount-fs.service",
    "sys-kernel-debug.mount",
    "sys-kernel-tracing.mount",
    "sys-kernel-config.mount",
    "sys-fs-fuse-connections.mount",
    "dev-mqueue.mount",
    "modprobe@drm.service",
    "modprobe@efi_pstore.service",
    "modprobe@fuse.service",
    "modprobe@configfs.service",
    "modprobe@dm_mod.service",
)
# Installed but not started at boot: the lab starts the NFS server where it is needed.
DISABLE = (
    "nfs-server.service",
    "nfs-client.target",
    "rpcbind.service",
    "rpcbind.socket",
)
EXECUTABLE = {"usr/sbin/policy-rc.d", "usr/local/sbin/xenweb-seed"}
LINKS = {"etc/libvirt/storage/autostart/default.xml": "/etc/libvirt/storage/default.xml"}
MACHINE_ID = "8d3c0f9a6f2b4e0c9b7d1a2e3f405060"
ENABLE = {
    "multi-user.target.wants/systemd-networkd.service": (
        "/lib/systemd/system/systemd-networkd.service"
    ),
    "multi-user.target.wants/xenweb-seed.service": "/etc/systemd/system/xenweb-seed.service",
    "multi-user.target.wants/libvirtd.service": "/lib/systemd/system/libvirtd.service",
}
TREE = debian.Tree(
    files=FILES, executable=frozenset(EXECUTABLE), links=LINKS, enable=ENABLE, mask=MASK
)

# Kept for callers that name the dom0 build's failures.
Dom0ImageError = ImageBuildError
__all__ = [
    "Dom0Image", "Dom0ImageError", "apt_sources", "ensure_dom0_image", "extract_vmlinux"
]


@dataclass(frozen=True)
class Dom0Image:
    root: Path
    disk: Path  # raw ext4
    xen: Path  # gunzipped hypervisor (multiboot kernel)
    kernel: Path  # dom0 vmlinux (ELF)
    initrd: Path
    versions: dict[str, str]


def image_root() -> Path:
    path = cache_dir() / "xen-dom0"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _image(out: Path, versions: dict[str, str]) -> Dom0Image:
    return Dom0Image(
        out, out / "dom0.img", out / "xen", out / "vmlinux", out / "initrd.img", versions
    )


def _complete(out: Path) -> Dom0Image | None:
    try:
        manifest = json.loads((out / "manifest.json").read_text())
    except (OSError, ValueError):
        return None
    image = _image(out, manifest.get("versions", {}))
    if all(p.is_file() for p in (image.disk, image.xen, image.kernel, image.initrd)):
        return image
    return None


def ensure_dom0_image(*, mirror: str | None = None) -> Dom0Image:
    """The cached dom0 image for the current package versions, built if missing.

    Process-safe: a second caller waits for the first one's build and reuses it. When the
    package versions cannot be resolved (no apt lists), the newest complete build is used.
    """
    root = image_root()
    try:
        versions = debian.resolve_versions(PACKAGES)
    except ImageBuildError as exc:
        fallback = debian.newest(root, _complete)
        if fallback is None:
            raise
        log.warning("%s; using the dom0 image built before", exc)
        return fallback
    mirror = mirror or debian.configured_mirror()
    security = debian.configured_security_mirror()
    return debian.ensure_cached(
        root, cache_key(versions), complete=_complete, what="dom0 image",
        build=lambda staged, scratch: _build(staged, scratch, versions, mirror, security),
    )


def cache_key(versions: dict[str, str]) -> str:
    text = json.dumps([BUILDER_VERSION, SUITE, sorted(versions.items())])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _build(
    staged: Path, scratch: Path, versions: dict[str, str], mirror: str, security: str
) -> None:
    rootfs = scratch / "rootfs"
    debian.debootstrap(rootfs, TREE, mirror=mirror, security=security)
    (rootfs / "var/lib/xen/images").mkdir(parents=True, exist_ok=True)
    debian.apt_install(rootfs, PACKAGES)
    _finish_root(rootfs)
    debian.clean_apt(rootfs)
    _boot_files(rootfs, staged)
    hypervisor = build_hypervisor(
        _debian_xen_config(rootfs), staged / "xen", scratch / "xen-src",
        mirror=mirror, security=security, suite=SUITE,
    )
    size_mib = debian.used_mib(rootfs) * 5 // 4 + SLACK_MIB
    debian.make_ext4(rootfs, staged / "dom0.img", label="xenweb-dom0", size_mib=size_mib)
    manifest = {"builder": BUILDER_VERSION, "versions": versions, "hypervisor": hypervisor}
    (staged / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")


def _finish_root(rootfs: Path) -> None:
    """After the packages: no shared host keys, no policy-rc.d, services enabled."""
    for key in (rootfs / "etc/ssh").glob("ssh_host_*"):
        key.unlink()
    (rootfs / "usr/sbin/policy-rc.d").unlink(missing_ok=True)
    _write_files_after(rootfs)


def _write_files_after(rootfs: Path) -> None:
    # Packages may have replaced these (conffiles): write them again.
    for rel in ("etc/default/libvirtd", "etc/fstab", "etc/hostname"):
        (rootfs / rel).write_text(FILES[rel])
    # Not a "first boot" (which would apply presets to every unit, re-enabling what DISABLE
    # turned off): a set machine-id; each lab host gets its own on the kernel command line
    # (systemd.machine_id=, boot.py). Root has no password.
    (rootfs / "etc/machine-id").write_text(f"{MACHINE_ID}\n")
    for wants in (rootfs / "etc/systemd/system").glob("*.wants"):
        for unit in DISABLE:
            (wants / unit).unlink(missing_ok=True)
    # libvirt's default NAT network needs dnsmasq (not installed): no autostart.
    (rootfs / "etc/libvirt/qemu/networks/autostart/default.xml").unlink(missing_ok=True)


def _debian_xen_config(rootfs: Path) -> Path:
    configs = sorted((rootfs / "boot").glob("xen-4.17*.config"))
    if not configs:
        raise ImageBuildError("Debian's Xen configuration is missing in the dom0 root's /boot")
    return configs[-1]


def _boot_files(rootfs: Path, staged: Path) -> None:
    """The dom0 kernel and initrd (the hypervisor is built: see hypervisor.py)."""
    boot = rootfs / "boot"
    kernels = sorted(boot.glob("vmlinuz-*"))
    initrds = sorted(boot.glob("initrd.img-*"))
    if not (kernels and initrds):
        found = ", ".join(p.name for p in boot.iterdir())
        raise ImageBuildError(f"boot files missing in the dom0 root's /boot (found: {found})")
    (staged / "vmlinux").write_bytes(extract_vmlinux(kernels[-1].read_bytes()))
    shutil.copyfile(initrds[-1], staged / "initrd.img")


def extract_vmlinux(bzimage: bytes) -> bytes:
    """The ELF kernel inside a bzImage whose payload is xz-compressed (Debian's)."""
    start = bzimage.find(b"\xfd7zXZ\x00")
    if start < 0:
        raise ImageBuildError("the dom0 kernel is not an xz-compressed bzImage")
    decompressor = lzma.LZMADecompressor(format=lzma.FORMAT_XZ)
    try:
        elf = decompressor.decompress(bzimage[start:])
    except lzma.LZMAError as exc:
        raise ImageBuildError(f"cannot decompress the dom0 kernel: {exc}") from exc
    if not elf.startswith(b"\x7fELF"):
        raise ImageBuildError("the dom0 kernel's payload is not an ELF image")
    return elf
