"""A real "physical server" for the P2V tests: its own sshd on 127.0.0.1 (own host key,
root login with the appliance's key only) and disks that are loop devices backed by files
holding an MBR partition table and an ext4 filesystem with known files."""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import struct
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

SSHD = "/usr/sbin/sshd"
MIB = 1024 * 1024
PART_START = MIB  # the partition starts at 1 MiB (sector 2048), like fdisk's default


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _keygen(path: Path) -> None:
    path.unlink(missing_ok=True)
    path.with_suffix(".pub").unlink(missing_ok=True)
    subprocess.run(["/usr/bin/ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)],
                   check=True, capture_output=True)


@dataclass
class SshServer:
    root: Path
    authorized_key: str
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def host_key(self) -> Path:
        return self.root / "host_ed25519"

    def start(self, *, new_key: bool = False) -> None:
        if new_key or not self.host_key.exists():
            _keygen(self.host_key)
        authorized = self.root / "authorized_keys"
        authorized.write_text(self.authorized_key + "\n")
        authorized.chmod(0o600)
        config = self.root / "sshd_config"
        config.write_text("\n".join([
            "ListenAddress 127.0.0.1", f"HostKey {self.host_key}",
            f"AuthorizedKeysFile {authorized}", "PermitRootLogin prohibit-password",
            "PasswordAuthentication no", "KbdInteractiveAuthentication no", "UsePAM no",
            "StrictModes no", f"PidFile {self.root / 'sshd.pid'}", "LogLevel ERROR", "",
        ]))
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation dir
        with open(self.root / "sshd.log", "ab") as log:  # the child keeps its own copy
            self.proc = subprocess.Popen(
                [SSHD, "-D", "-e", "-f", str(config), "-p", str(self.port)],
                stdout=subprocess.DEVNULL, stderr=log)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("sshd exited: " + (self.root / "sshd.log").read_text())
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("sshd did not listen within 30 s")

    def stop(self) -> None:
        self.kill_sessions()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def sessions(self) -> list[int]:
        """The per-connection sshd processes (children of the listener)."""
        if self.proc is None:
            return []
        found = subprocess.run(["pgrep", "-P", str(self.proc.pid)], capture_output=True,
                               text=True, check=False)
        return [int(pid) for pid in found.stdout.split()]

    def kill_sessions(self) -> int:
        """Drop every open SSH connection, as a network failure would."""
        killed = 0
        for pid in self.sessions():
            try:
                os.kill(pid, signal.SIGKILL)
                killed += 1
            except ProcessLookupError:
                pass
        return killed


def _mbr(total: int) -> bytes:
    """A DOS partition table with one Linux partition from 1 MiB to the end."""
    first = PART_START // 512
    count = total // 512 - first
    entry = struct.pack("<B3sB3sII", 0, b"\xfe\xff\xff", 0x83, b"\xfe\xff\xff", first, count)
    return bytes(446) + entry + bytes(48) + b"\x55\xaa"


@dataclass
class LoopDisk:
    image: Path
    device: str
    size: int

    def sha256(self) -> str:
        digest = hashlib.sha256()
        with open(self.image, "rb") as handle:
            while chunk := handle.read(4 * MIB):
                digest.update(chunk)
        return digest.hexdigest()


def make_disk(image: Path, size_mib: int, files: dict[str, bytes]) -> LoopDisk:
    """An image with a partition table and an ext4 filesystem holding ``files``, attached
    as a loop device (with its partitions)."""
    content = image.with_suffix(".files")
    content.mkdir()
    for name, data in files.items():
        (content / name).write_bytes(data)
    size = size_mib * MIB
    with open(image, "wb") as handle:
        handle.truncate(size)
        handle.write(_mbr(size))
    subprocess.run(["/usr/sbin/mkfs.ext4", "-F", "-q", "-E", f"offset={PART_START}",
                    "-L", image.stem[:16], "-d", str(content), str(image),
                    f"{(size - PART_START) // 1024}k"], check=True, capture_output=True)
    device = subprocess.run(["/usr/sbin/losetup", "-f", "--show", "-P", "-r", str(image)],
                            check=True, capture_output=True, text=True).stdout.strip()
    return LoopDisk(image=image, device=device, size=size)


def detach(disk: LoopDisk) -> None:
    subprocess.run(["/usr/sbin/losetup", "-d", disk.device], check=False, capture_output=True)


def loop_disks(base: Path, specs: dict[str, tuple[int, dict[str, bytes]]]) -> \
        Iterator[dict[str, LoopDisk]]:
    """Build and attach the disks; detach them however the test ends."""
    made: dict[str, LoopDisk] = {}
    try:
        for name, (size_mib, files) in specs.items():
            made[name] = make_disk(base / f"{name}.img", size_mib, files)
        yield made
    finally:
        for disk in made.values():
            detach(disk)
