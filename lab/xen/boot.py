"""Booting one Xen 4.17 dom0 under QEMU (TCG), and stopping it by PID.

Each host has a folder (``<xen lab>/hosts/<name>/``) holding:

- ``overlay.qcow2``: copy-on-write over the cached raw base image, so the base stays pristine
  (``qemu-img create -f qcow2 -F raw -b BASE``: explicit formats, no probing);
- ``seed.img``: a small ext4 disk (``mkfs.ext4 -d``) with the host's identity: root's
  ``authorized_keys`` (the appliance's public key), its SSH host key (generated here once and
  kept, so the host keeps its key across restarts), its hostname and extra files (the tiny
  guest's kernel and initrd); ``xenweb-seed.service`` copies them in before sshd starts;
- ``console.log``: Xen's serial console (Xen, then dom0's ``hvc0``);
- ``qemu.pid``: the daemonised QEMU.

dom0's sshd is reachable only on loopback: QEMU user networking with
``hostfwd=tcp:127.0.0.1:PORT-:22``. A second NIC can join the lab's storage network between
dom0s (:class:`PeerLink`): QEMU socket networking over loopback, one dom0 listening and the
other connecting, a private layer-2 link (``10.99.0.0/24``) that nothing else can reach.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import time
from dataclasses import dataclass
from pathlib import Path

from lab import procs
from lab.errors import LabError
from lab.rootfs import run

from .image import SEED_LABEL, Dom0Image

QEMU = "qemu-system-x86_64"
QEMU_IMG = "qemu-img"
MEMORY_MIB = 1536
DOM0_MEMORY = "768M"
VCPUS = 2
# Each of these fixed a failure under TCG (see the module docstring of manager.py).
ACCEL = "tcg,thread=multi,tb-size=256"
# -avx...: QEMU 7.2 (Debian 12) is the first to emulate AVX/AVX2 under TCG, and with them
# the dom0s corrupted memory at random (garbage bytes in libvirt's domain XML, malloc
# corruption in virsh, bad SSH host-key signatures, with one TCG thread as with several):
# glibc's string functions use AVX2 wherever the CPU offers it. Without AVX they use SSE.
CPU = "max,vendor=GenuineIntel,-svm,+vme,-avx,-avx2,-fma,-f16c,-vaes,x-force-features=on"
# bootscrub=false: Xen would otherwise scrub all free RAM while dom0 boots, on the same
# (emulated, slow) CPUs. spec-ctrl=eager-fpu: with Xen's lazy FPU switching, TCG corrupted
# dom0's SSE registers whenever a guest ran (found on the appliance: lab.appliance.boot).
XEN_ARGS = (
    f"dom0_mem={DOM0_MEMORY} smap=0 smep=0 cet=0 spec-ctrl=eager-fpu "
    "console=com1 com1=115200,8n1 "
    "loglvl=warning guest_loglvl=warning bootscrub=false"
)
DOM0_ARGS = "root=/dev/vda rw console=hvc0 loglevel=4"
STOP_TIMEOUT_S = 10.0
PEER_NETWORK = "10.99.0"


@dataclass(frozen=True)
class PeerLink:
    """This dom0's NIC on the storage network: host ``index`` gets ``10.99.0.<index>``.

    QEMU's socket netdev joins exactly two NICs: one side ``listen``s on a loopback port,
    the other ``connect``s to it (and may come and go: the listener accepts it again)."""

    index: int
    listen: int | None = None
    connect: int | None = None

    @property
    def mac(self) -> str:
        return f"52:54:00:99:00:{self.index:02x}"

    @property
    def address(self) -> str:
        return f"{PEER_NETWORK}.{self.index}"

    def netdev(self) -> str:
        if (self.listen is None) == (self.connect is None):
            raise LabError("a peer link either listens or connects")
        if self.listen is not None:
            return f"socket,id=peer,listen=127.0.0.1:{self.listen}"
        return f"socket,id=peer,connect=127.0.0.1:{self.connect}"

    def network_file(self) -> str:
        """systemd-networkd's configuration of the NIC (before the catch-all DHCP one)."""
        return (
            f"[Match]\nMACAddress={self.mac}\n\n[Network]\nAddress={self.address}/24\n"
            "LinkLocalAddressing=no\nIPv6AcceptRA=no\n"
        )


def machine_id(name: str) -> str:
    """A stable machine-id per lab host (systemd.machine_id= on dom0's command line)."""
    return hashlib.sha256(f"xenweb-lab-{name}".encode()).hexdigest()[:32]


class HostFiles:
    """Paths of one Xen lab host's folder."""

    def __init__(self, root: Path) -> None:
        self.root = root

    @property
    def overlay(self) -> Path:
        return self.root / "overlay.qcow2"

    @property
    def seed(self) -> Path:
        return self.root / "seed.img"

    @property
    def seed_dir(self) -> Path:
        return self.root / "seed"

    @property
    def console_log(self) -> Path:
        return self.root / "console.log"

    @property
    def pidfile(self) -> Path:
        return self.root / "qemu.pid"

    @property
    def host_key(self) -> Path:
        return self.root / "ssh_host_ed25519_key"

    @property
    def known_hosts(self) -> Path:
        """known_hosts with only this host's key, for the lab's own readiness checks."""
        return self.root / "known_hosts"

    @property
    def marker(self) -> str:
        """What the QEMU command line of this host contains (trailing slash: xen1 != xen10)."""
        return f"{self.root}/"


def _run(args: list[str], what: str, timeout: float = 120.0) -> str:
    return run(args, step=what, timeout=timeout)


def ensure_host_key(files: HostFiles) -> str:
    """The host's SSH host key (generated once); returns the public key line."""
    if not files.host_key.is_file():
        files.root.mkdir(parents=True, exist_ok=True)
        _run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "xenweb-lab",
             "-f", str(files.host_key)],
            "generating the host key",
        )
    return files.host_key.with_suffix(".pub").read_text().strip()


def make_overlay(image: Dom0Image, files: HostFiles) -> None:
    files.overlay.unlink(missing_ok=True)
    _run(
        [QEMU_IMG, "create", "-q", "-f", "qcow2", "-F", "raw", "-b", str(image.disk),
         str(files.overlay)],
        "creating the dom0 overlay",
    )


def make_seed(
    files: HostFiles, *, authorized_key: str, hostname: str, extra: dict[str, Path],
    texts: dict[str, str] | None = None,
) -> None:
    """The seed disk. ``extra`` maps absolute paths in dom0 to files here, ``texts`` to
    file contents."""
    shutil.rmtree(files.seed_dir, ignore_errors=True)
    seed = files.seed_dir
    seed.mkdir(parents=True)
    (seed / "authorized_keys").write_text(authorized_key.strip() + "\n")
    shutil.copyfile(files.host_key, seed / "ssh_host_ed25519_key")
    shutil.copyfile(files.host_key.with_suffix(".pub"), seed / "ssh_host_ed25519_key.pub")
    (seed / "hostname").write_text(hostname + "\n")
    size = 0
    for target, source in extra.items():
        if not target.startswith("/") or ".." in Path(target).parts:
            raise LabError(f"seed file target must be an absolute path: {target!r}")
        dest = seed / "files" / target.lstrip("/")
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, dest)
        size += dest.stat().st_size
    for target, text in (texts or {}).items():
        if not target.startswith("/") or ".." in Path(target).parts:
            raise LabError(f"seed file target must be an absolute path: {target!r}")
        dest = seed / "files" / target.lstrip("/")
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_text(text)
        if target.startswith("/root/.ssh/"):
            dest.parent.chmod(0o700)
            dest.chmod(0o600)  # ssh refuses a private key others can read
    size_mib = size // (1024 * 1024) * 5 // 4 + 8
    files.seed.unlink(missing_ok=True)
    with files.seed.open("wb") as handle:
        handle.truncate(size_mib * 1024 * 1024)
    _run(
        ["mkfs.ext4", "-q", "-F", "-L", SEED_LABEL, "-d", str(seed), str(files.seed)],
        "making the seed disk",
    )
    shutil.rmtree(seed, ignore_errors=True)


def _no_comma(path: Path) -> str:
    text = str(path)
    if "," in text or " " in text:
        raise LabError(f"QEMU's multiboot loader cannot take a path with ',' or ' ': {text}")
    return text


def qemu_argv(
    image: Dom0Image, files: HostFiles, *, name: str, ssh_port: int,
    peer: PeerLink | None = None,
) -> list[str]:
    """The QEMU command line of one dom0 (an argument list; no shell)."""
    dom0_args = f"{DOM0_ARGS} systemd.machine_id={machine_id(name)}"
    modules = f"{_no_comma(image.kernel)} {dom0_args},{_no_comma(image.initrd)}"
    peer_nic = [
        "-netdev", peer.netdev(),
        "-device", f"virtio-net-pci,netdev=peer,mac={peer.mac}",
    ] if peer else []
    return [
        QEMU,
        "-name", f"xenweb-{name},process=xenweb-{name}",
        "-nodefaults", "-no-user-config",
        "-machine", "pc",
        "-accel", ACCEL,
        "-cpu", CPU,
        "-smp", str(VCPUS),
        "-m", str(MEMORY_MIB),
        "-kernel", _no_comma(image.xen),
        "-append", XEN_ARGS,
        "-initrd", modules,
        "-drive", f"file={_no_comma(files.overlay)},format=qcow2,if=virtio,cache=unsafe",
        "-drive", f"file={_no_comma(files.seed)},format=raw,if=virtio,readonly=on",
        "-netdev", f"user,id=net0,hostfwd=tcp:127.0.0.1:{ssh_port}-:22",
        "-device", "virtio-net-pci,netdev=net0",
        *peer_nic,
        "-display", "none",
        "-serial", f"file:{_no_comma(files.console_log)}",
        "-monitor", "none",
        "-pidfile", str(files.pidfile),
        "-daemonize",
    ]


def start_qemu(argv: list[str], files: HostFiles) -> int:
    """Start the daemonised QEMU; returns its PID (read from the pidfile)."""
    files.pidfile.unlink(missing_ok=True)
    files.console_log.unlink(missing_ok=True)
    _run(argv, "starting QEMU", timeout=60)
    try:
        pid = int(files.pidfile.read_text().strip())
    except (OSError, ValueError) as exc:
        raise LabError(f"QEMU started but wrote no PID file {files.pidfile}: {exc}") from exc
    if not procs.is_lab_process(pid, files.marker):
        raise LabError(f"QEMU (PID {pid}) exited right after starting; see {files.console_log}")
    return pid


def is_running(pid: int | None, files: HostFiles) -> bool:
    return procs.is_lab_process(pid, files.marker)


def stop_qemu(pid: int | None, files: HostFiles, timeout: float = STOP_TIMEOUT_S) -> None:
    """Stop this host's QEMU by PID (checked against its command line), SIGKILL if need be."""
    if pid and is_running(pid, files):
        for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                break
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline and procs.is_alive(pid):
                time.sleep(0.1)
            if not procs.is_alive(pid):
                break
        if procs.is_alive(pid):
            raise LabError(f"QEMU (PID {pid}) of {files.root.name} did not stop")
    files.pidfile.unlink(missing_ok=True)


def remove_disks(files: HostFiles) -> None:
    for path in (files.overlay, files.seed):
        path.unlink(missing_ok=True)
    shutil.rmtree(files.seed_dir, ignore_errors=True)


def console_tail(files: HostFiles, lines: int = 15) -> str:
    try:
        text = files.console_log.read_text(errors="replace")
    except OSError:
        return "(no console log)"
    return "\n".join(text.strip().splitlines()[-lines:]) or "(console log empty)"
