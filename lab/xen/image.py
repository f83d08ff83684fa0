"""The Xen dom0 disk image and boot files, built once from Debian packages and cached.

``ensure_dom0_image()`` returns a :class:`Dom0Image`: a raw ext4 root file system (Debian 12
with Xen 4.17, libvirt's libxl driver and sshd), the Xen hypervisor built from Debian's
source with shadow paging (``hypervisor.py``; QEMU's multiboot loader takes it with
``-kernel``), an uncompressed dom0 ``vmlinux`` (Xen boots it
faster under TCG than the bzImage) and the dom0 initrd (only the modules listed in
``INITRD_MODULES``).

The build runs ``debootstrap`` (minbase) into a scratch folder, installs ``PACKAGES`` without
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

import contextlib
import fcntl
import hashlib
import json
import logging
import lzma
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from lab.errors import LabError
from lab.paths import cache_dir

from .hypervisor import build_hypervisor

log = logging.getLogger(__name__)

# Bump when the image content changes (configuration, layout): it is part of the cache key.
BUILDER_VERSION = 7

SUITE = "bookworm"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
DEFAULT_SECURITY_MIRROR = "http://deb.debian.org/debian-security"
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
BUILD_TIMEOUT_S = 1800

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


class Dom0ImageError(LabError):
    """Building the dom0 image failed; the message says which step and why."""


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
        versions = resolve_versions()
    except Dom0ImageError as exc:
        fallback = _newest(root)
        if fallback is None:
            raise
        log.warning("%s; using the dom0 image built before", exc)
        return fallback
    out = root / cache_key(versions)
    image = _complete(out)
    if image:
        return image
    with _locked(root / ".lock"):
        image = _complete(out)  # built by another process meanwhile?
        if image:
            return image
        for leftover in root.glob(".build-*"):
            shutil.rmtree(leftover, ignore_errors=True)  # from a builder that died
        shutil.rmtree(out, ignore_errors=True)
        began = time.monotonic()
        _build(out, versions, mirror or configured_mirror(), configured_security_mirror())
        log.info("dom0 image built in %.0f s: %s", time.monotonic() - began, out)
        image = _complete(out)
        if image is None:
            raise Dom0ImageError(f"the dom0 image in {out} is incomplete after the build")
        _prune(root, keep=out)
        return image


def _prune(root: Path, keep: Path) -> None:
    """Remove builds for older package versions (about 900 MB each). A QEMU still running
    on one keeps its open files; its overlay is recreated on the next boot anyway."""
    for entry in root.iterdir():
        if entry.is_dir() and entry != keep and not entry.name.startswith("."):
            log.info("removing the outdated dom0 image %s", entry)
            shutil.rmtree(entry, ignore_errors=True)


def _newest(root: Path) -> Dom0Image | None:
    builds = sorted(
        (p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")),
        key=lambda p: p.stat().st_mtime,
        reverse=True,
    )
    for out in builds:
        image = _complete(out)
        if image:
            return image
    return None


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def cache_key(versions: dict[str, str]) -> str:
    text = json.dumps([BUILDER_VERSION, SUITE, sorted(versions.items())])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _run(
    args: list[str], *, step: str, timeout: float = BUILD_TIMEOUT_S, env: dict | None = None
) -> str:
    try:
        result = subprocess.run(
            args, capture_output=True, text=True, check=False, timeout=timeout, env=env
        )
    except FileNotFoundError as exc:
        raise Dom0ImageError(f"{step}: {args[0]} is not installed ({exc})") from exc
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise Dom0ImageError(f"{step}: {exc}") from exc
    if result.returncode != 0:
        detail = " / ".join((result.stderr or result.stdout).strip().splitlines()[-5:])
        raise Dom0ImageError(
            f"{step}: {' '.join(args)} exited with {result.returncode}: {detail}"
        )
    return result.stdout


def resolve_versions() -> dict[str, str]:
    """Candidate versions of ``PACKAGES`` and of the kernel image behind the metapackage."""
    hint = "(run apt-get update?)"
    depends = _run(["apt-cache", "depends", "linux-image-amd64"], step=f"apt-cache {hint}")
    kernels = re.findall(r"^\s*Depends:\s*(linux-image-\S+)\s*$", depends, re.MULTILINE)
    names = [*PACKAGES, *kernels[:1]]
    shown = _run(["apt-cache", "show", "--no-all-versions", *names], step=f"apt-cache {hint}")
    versions: dict[str, str] = {}
    for stanza in shown.split("\n\n"):
        fields = dict(re.findall(r"^([\w-]+): (.*)$", stanza, re.MULTILINE))
        if "Package" in fields and "Version" in fields:
            versions[fields["Package"]] = fields["Version"]
    missing = sorted(set(names) - versions.keys())
    if missing:
        raise Dom0ImageError(f"apt-cache show: no candidate for {', '.join(missing)} {hint}")
    return versions


def _source_uris() -> list[str]:
    sources = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]
    uris = []
    for path in sources:
        try:
            text = path.read_text()
        except OSError:
            continue
        uris += re.findall(r"^(?:URIs:\s*|deb\s+(?:\[[^]]*\]\s+)?)(\S+)", text, re.MULTILINE)
    return [uri.rstrip("/") for uri in uris if uri.startswith(("http://", "https://"))]


def configured_mirror() -> str:
    """The machine's Debian mirror (the first non-security URI of the apt sources)."""
    for uri in _source_uris():
        if "security" not in uri and uri.endswith("/debian"):
            return uri
    return DEFAULT_MIRROR


def configured_security_mirror() -> str:
    """The machine's Debian security mirror (its apt sources' ``…-security`` URI)."""
    for uri in _source_uris():
        if uri.endswith("/debian-security"):
            return uri
    return DEFAULT_SECURITY_MIRROR


def apt_sources(mirror: str, security: str) -> str:
    """The dom0's sources.list: the release with its updates and security fixes, the same
    suites whose candidate versions ``resolve_versions`` reads on this machine (the key)."""
    return (
        f"deb {mirror} {SUITE} main\n"
        f"deb {mirror} {SUITE}-updates main\n"
        f"deb {security} {SUITE}-security main\n"
    )


def _build(out: Path, versions: dict[str, str], mirror: str, security: str) -> None:
    scratch = out.parent / f".build-{out.name}-{os.getpid()}"
    scratch.mkdir()
    try:
        rootfs = scratch / "rootfs"
        debs = cache_dir() / "debootstrap"
        debs.mkdir(exist_ok=True)
        _run(
            ["debootstrap", "--variant=minbase", f"--cache-dir={debs}", SUITE, str(rootfs), mirror],
            step="debootstrap",
        )
        _write_files(rootfs)
        (rootfs / "etc/apt/sources.list").write_text(apt_sources(mirror, security))
        env = {
            "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
            "DEBIAN_FRONTEND": "noninteractive",
            "LC_ALL": "C",
        }
        _run(["chroot", str(rootfs), "apt-get", "update", "-q"], step="apt-get update in the "
             "dom0 root", env=env)
        _run(
            [
                "chroot", str(rootfs), "apt-get", "install", "-y", "-q",
                "--no-install-recommends",
                "-o", "Dpkg::Options::=--force-confold",
                "-o", "Dpkg::Options::=--force-confdef",
                *PACKAGES,
            ],
            step="apt-get install in the dom0 root",
            env=env,
        )
        _run(["chroot", str(rootfs), "apt-get", "clean"], step="apt-get clean", env=env)
        _finish_root(rootfs)
        staged = scratch / "out"
        staged.mkdir()
        _boot_files(rootfs, staged)
        hypervisor = build_hypervisor(
            _debian_xen_config(rootfs), staged / "xen", scratch / "xen-src",
            mirror=mirror, security=security, suite=SUITE,
        )
        _make_disk(rootfs, staged / "dom0.img")
        manifest = {"builder": BUILDER_VERSION, "versions": versions, "hypervisor": hypervisor}
        (staged / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        os.replace(staged, out)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _write_files(rootfs: Path) -> None:
    for rel, text in FILES.items():
        path = rootfs / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        if rel in EXECUTABLE:
            path.chmod(0o755)
    wants = rootfs / "etc/systemd/system"
    for rel, target in ENABLE.items():
        link = wants / rel
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.is_symlink():
            link.symlink_to(target)
    for unit in MASK:
        link = wants / unit
        link.unlink(missing_ok=True)
        link.symlink_to("/dev/null")
    for rel, target in LINKS.items():
        link = rootfs / rel
        link.parent.mkdir(parents=True, exist_ok=True)
        link.unlink(missing_ok=True)
        link.symlink_to(target)
    (rootfs / "var/lib/xen/images").mkdir(parents=True, exist_ok=True)


def _finish_root(rootfs: Path) -> None:
    """After the packages: no shared host keys, no policy-rc.d, services enabled."""
    for key in (rootfs / "etc/ssh").glob("ssh_host_*"):
        key.unlink()
    (rootfs / "usr/sbin/policy-rc.d").unlink(missing_ok=True)
    _write_files_after(rootfs)
    for entry in (rootfs / "var/cache/apt/archives").glob("*.deb"):
        entry.unlink()
    for entry in (rootfs / "var/lib/apt/lists").glob("*_dists_*"):
        entry.unlink()  # the package lists (about 100 MB), fetched again by apt-get update


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
        raise Dom0ImageError("Debian's Xen configuration is missing in the dom0 root's /boot")
    return configs[-1]


def _boot_files(rootfs: Path, staged: Path) -> None:
    """The dom0 kernel and initrd (the hypervisor is built: see hypervisor.py)."""
    boot = rootfs / "boot"
    kernels = sorted(boot.glob("vmlinuz-*"))
    initrds = sorted(boot.glob("initrd.img-*"))
    if not (kernels and initrds):
        found = ", ".join(p.name for p in boot.iterdir())
        raise Dom0ImageError(f"boot files missing in the dom0 root's /boot (found: {found})")
    (staged / "vmlinux").write_bytes(extract_vmlinux(kernels[-1].read_bytes()))
    shutil.copyfile(initrds[-1], staged / "initrd.img")


def extract_vmlinux(bzimage: bytes) -> bytes:
    """The ELF kernel inside a bzImage whose payload is xz-compressed (Debian's)."""
    start = bzimage.find(b"\xfd7zXZ\x00")
    if start < 0:
        raise Dom0ImageError("the dom0 kernel is not an xz-compressed bzImage")
    decompressor = lzma.LZMADecompressor(format=lzma.FORMAT_XZ)
    try:
        elf = decompressor.decompress(bzimage[start:])
    except lzma.LZMAError as exc:
        raise Dom0ImageError(f"cannot decompress the dom0 kernel: {exc}") from exc
    if not elf.startswith(b"\x7fELF"):
        raise Dom0ImageError("the dom0 kernel's payload is not an ELF image")
    return elf


def _make_disk(rootfs: Path, disk: Path) -> None:
    used = _run(["du", "-sxm", str(rootfs)], step="du").split()[0]
    size_mib = int(used) * 5 // 4 + SLACK_MIB
    with disk.open("wb") as handle:
        handle.truncate(size_mib * 1024 * 1024)
    _run(
        ["mkfs.ext4", "-q", "-F", "-L", "xenweb-dom0", "-d", str(rootfs), str(disk)],
        step="mkfs.ext4 -d",
    )
