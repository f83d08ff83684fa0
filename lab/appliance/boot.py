"""Booting the appliance image under QEMU (TCG), as a user's machine would boot it.

Each booted appliance has a folder holding a copy-on-write overlay over the cached raw image
(bigger than the image, so first boot has a disk to grow into), a seed disk with root's
``authorized_keys`` (the NoCloud-like seed that ``deploy/appliance/first-boot.sh`` reads),
the serial console's log and QEMU's PID file. The firmware is SeaBIOS, the boot loader the
image's own GRUB, the hypervisor Debian's stock Xen: nothing is passed on QEMU's command
line but hardware. User-mode networking forwards the appliance's 443 and 22 to loopback.

The emulated CPU leaves out what TCG gets wrong under Xen (``lab.xen.boot``): AVX; and SMAP
and SMEP, which the lab's dom0s turn off on Xen's command line instead (a user's image must
not need that). The image's Xen switches FPU state eagerly (``spec-ctrl=eager-fpu`` in
``deploy/appliance/grub-defaults.cfg``): with Xen's lazy switching, QEMU 7.2's TCG corrupted
dom0's SSE registers whenever a guest ran.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from lab.errors import LabError
from lab.rootfs import make_ext4, run
from lab.xen import boot as xen_boot

from .image import ApplianceImage

QEMU = xen_boot.QEMU
MEMORY_MIB = 3072
VCPUS = 2
DISK_SIZE = "16G"
CPU = f"{xen_boot.CPU.replace(',x-force-features=on', '')},-smap,-smep,x-force-features=on"
SEED_LABEL = "xenweb-seed"
SCREEN = {
    "url": re.compile(r"xenweb appliance: open (https://\S+/) in a browser"),
    "token": re.compile(r"xenweb setup token: (\S.*?)\s*$", re.MULTILINE),
    "fingerprint": re.compile(r"xenweb TLS certificate SHA-256: ([0-9A-F:]{95})"),
}


@dataclass(frozen=True)
class Screen:
    """What the console shows a user: where to go, the token, the certificate."""

    url: str
    token: str
    fingerprint: str


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class BootedAppliance:
    """One appliance under QEMU; :meth:`stop` always tears it down."""

    def __init__(self, image: ApplianceImage, folder: Path, *, name: str = "appliance") -> None:
        self.image = image
        self.folder = folder
        self.name = name
        self.https_port = free_port()
        self.ssh_port = free_port()
        self.pid: int | None = None
        self.started = 0.0
        # The lab dom0's folder layout (overlay, seed, console log, PID file): its QEMU
        # start and stop work here unchanged.
        self.files = xen_boot.HostFiles(folder)

    @property
    def overlay(self) -> Path:
        return self.files.overlay

    @property
    def seed(self) -> Path:
        return self.files.seed

    @property
    def console_log(self) -> Path:
        return self.files.console_log

    @property
    def key(self) -> Path:
        return self.folder / "id_ed25519"

    def prepare(self) -> None:
        """A fresh overlay and seed disk: the machine as a user gets it from the image."""
        self.folder.mkdir(parents=True, exist_ok=True)
        self.overlay.unlink(missing_ok=True)
        run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", str(self.image.raw),
             str(self.overlay), DISK_SIZE], step="creating the appliance overlay", timeout=120)
        if not self.key.is_file():
            run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "xenweb-appliance-test",
                 "-f", str(self.key)], step="generating the test's SSH key", timeout=60)
        seed = self.folder / "seed"
        shutil.rmtree(seed, ignore_errors=True)
        seed.mkdir()
        shutil.copyfile(self.key.with_suffix(".pub"), seed / "authorized_keys")
        make_ext4(seed, self.seed, label=SEED_LABEL, size_mib=8)
        shutil.rmtree(seed)

    def argv(self) -> list[str]:
        forwards = (f"hostfwd=tcp:127.0.0.1:{self.https_port}-:443,"
                    f"hostfwd=tcp:127.0.0.1:{self.ssh_port}-:22")
        return [
            QEMU,
            "-name", f"xenweb-{self.name},process=xenweb-{self.name}",
            "-nodefaults", "-no-user-config",
            "-machine", "pc",
            "-accel", xen_boot.ACCEL,
            "-cpu", CPU,
            "-smp", str(VCPUS),
            "-m", str(MEMORY_MIB),
            "-drive", f"file={self.overlay},format=qcow2,if=virtio,cache=unsafe",
            "-drive", f"file={self.seed},format=raw,if=virtio,readonly=on",
            "-netdev", f"user,id=net0,{forwards}",
            "-device", "virtio-net-pci,netdev=net0",
            "-display", "none",
            "-serial", f"file:{self.console_log}",
            "-monitor", "none",
            "-pidfile", str(self.files.pidfile),
            "-daemonize",
        ]

    def start(self) -> None:
        self.started = time.monotonic()
        self.pid = xen_boot.start_qemu(self.argv(), self.files)

    def running(self) -> bool:
        return xen_boot.is_running(self.pid, self.files)

    def stop(self) -> None:
        xen_boot.stop_qemu(self.pid, self.files)
        self.pid = None

    def remove(self) -> None:
        self.stop()
        for path in (self.overlay, self.seed):
            path.unlink(missing_ok=True)

    def console(self) -> str:
        try:
            return self.console_log.read_text(errors="replace")
        except OSError:
            return ""

    def console_tail(self, lines: int = 25) -> str:
        return _plain(xen_boot.console_tail(self.files, lines))

    def wait_for(self, pattern: re.Pattern[str] | str, *, timeout: float, after: int = 0,
                 what: str = "") -> re.Match[str]:
        """The first match of ``pattern`` in the console from offset ``after`` on."""
        regex = re.compile(pattern) if isinstance(pattern, str) else pattern
        deadline = time.monotonic() + timeout
        while True:
            found = regex.search(_plain(self.console()[after:]))
            if found:
                return found
            if not self.running():
                raise LabError(f"the appliance stopped while waiting for {what or regex.pattern}"
                               f":\n{self.console_tail()}")
            if time.monotonic() > deadline:
                raise LabError(f"no {what or regex.pattern} on the console after {timeout:.0f} s:"
                               f"\n{self.console_tail()}")
            time.sleep(1.0)

    def screen(self, *, timeout: float, after: int = 0) -> Screen:
        """The console screen's three lines, waited for (printed by xenweb-console)."""
        url = self.wait_for(SCREEN["url"], timeout=timeout, after=after, what="the address")
        rest = url.start() + after
        found = {
            name: self.wait_for(regex, timeout=60, after=rest, what=name).group(1)
            for name, regex in SCREEN.items() if name != "url"
        }
        return Screen(url=url.group(1), token=found["token"], fingerprint=found["fingerprint"])

    def ssh(self, command: str, *, timeout: float = 300, check: bool = True,
            stdin: bytes | None = None) -> str:
        """Runs ``command`` as root on the appliance over the forwarded SSH port (``stdin``
        fed to it)."""
        # accept-new: the key the machine made at first boot is learnt once, and a changed
        # key afterwards (a reboot must keep it) fails the login.
        result = subprocess.run(
            [shutil.which("ssh") or "/usr/bin/ssh", "-i", str(self.key), "-p", str(self.ssh_port),
             "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=accept-new",
             "-o", f"UserKnownHostsFile={self.folder / 'known_hosts'}",
             "-o", "ConnectTimeout=60", "-o", "LogLevel=ERROR",
             "root@127.0.0.1", command],
            capture_output=True, timeout=timeout, check=False, input=stdin,
        )
        out, err = result.stdout.decode(errors="replace"), result.stderr.decode(errors="replace")
        if check and result.returncode != 0:
            raise LabError(f"ssh {command!r} exited with {result.returncode}: "
                           f"{(err or out).strip()[-2000:]}")
        return out


ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][A-Z0-9]|\r")


def _plain(text: str) -> str:
    """The console log without terminal control sequences (GRUB's menu, agetty)."""
    return ANSI.sub("", text)


def sha256_fingerprint(der: bytes) -> str:
    """A certificate's SHA-256 fingerprint as openssl prints it (AA:BB:…)."""
    digest = hashlib.sha256(der).hexdigest().upper()
    return ":".join(digest[i:i + 2] for i in range(0, len(digest), 2))
