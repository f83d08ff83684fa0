"""A real "physical server" for the P2V tests: its own sshd (own host key, root login with
the appliance's P2V key) and disks that are loop devices backed by files holding an MBR
partition table and an ext4 filesystem with known files.

The tests run the sshd in a network namespace of its own (``SourceNetwork``): a veth pair
joins it to this machine, 10.98.N.1/24 on this side and 10.98.N.2/24 inside, so the
appliance reaches the source over a real interface and the source's inventory sees its
own NIC. N, the namespace's and the links' names are unique per test session (they carry
the session's pid); what a killed session left behind is removed by the next one.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

SSHD = "/usr/sbin/sshd"
IP = shutil.which("ip", path="/usr/sbin:/sbin:/usr/bin:/bin") or "/usr/sbin/ip"
MIB = 1024 * 1024
PART_START = MIB  # the partition starts at 1 MiB (sector 2048), like fdisk's default
NETNS_PREFIX = "xwp2v-"
SUBNET = "10.98"  # the source networks are 10.98.N.0/24


class NamespaceUnavailable(RuntimeError):
    """A network namespace for the source cannot be made here; the message says why."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _keygen(path: Path) -> None:
    path.unlink(missing_ok=True)
    path.with_suffix(".pub").unlink(missing_ok=True)
    subprocess.run(["/usr/bin/ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)],
                   check=True, capture_output=True)


def _ip(*args: str) -> str:
    """Run ``ip ARGS``; its stdout, or NamespaceUnavailable with ip's own words."""
    try:
        done = subprocess.run([IP, *args], capture_output=True, text=True, timeout=30,
                              check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise NamespaceUnavailable(f"ip {' '.join(args)}: {exc}") from exc
    if done.returncode != 0:
        raise NamespaceUnavailable(f"ip {' '.join(args)}: "
                                   f"{done.stderr.strip() or done.returncode}")
    return done.stdout


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def _allocation_lock() -> Iterator[None]:
    """Parallel sessions choose their subnet one at a time."""
    with open(Path(tempfile.gettempdir()) / "xenweb-p2v-netns.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _subnets_in_use() -> set[int]:
    used = set()
    for link in json.loads(_ip("-j", "-4", "addr", "show") or "[]"):
        for address in link.get("addr_info", []):
            parts = str(address.get("local", "")).split(".")
            if len(parts) == 4 and ".".join(parts[:2]) == SUBNET:
                used.add(int(parts[2]))
    return used


@dataclass
class SourceNetwork:
    """A network namespace joined to this machine by a veth pair."""

    tag: int  # the owning session's pid: names are unique per session
    index: int = 0  # several networks of one session
    octet: int = -1  # N of 10.98.N.0/24, chosen by up()

    @property
    def name(self) -> str:
        return f"{NETNS_PREFIX}{self.tag}-{self.index}"

    @property
    def host_link(self) -> str:
        return f"xwp{self.tag}h{self.index}"  # at most 15 characters (IFNAMSIZ)

    @property
    def source_link(self) -> str:
        return f"xwp{self.tag}s{self.index}"

    @property
    def host_address(self) -> str:
        return f"{SUBNET}.{self.octet}.1"

    @property
    def source_address(self) -> str:
        return f"{SUBNET}.{self.octet}.2"

    def up(self) -> None:
        """Make the namespace and the link; on any failure nothing is left behind."""
        remove_stale_networks()
        try:
            with _allocation_lock():
                used = _subnets_in_use()
                free = [n for n in range(self.tag % 250, 250) if n not in used] + \
                    [n for n in range(self.tag % 250) if n not in used]
                if not free:
                    raise NamespaceUnavailable(f"no free subnet in {SUBNET}.0.0/16")
                self.octet = free[0]
                _ip("netns", "add", self.name)
                _ip("link", "add", self.host_link, "type", "veth", "peer", "name",
                    self.source_link, "netns", self.name)
                _ip("addr", "add", f"{self.host_address}/24", "dev", self.host_link)
                _ip("link", "set", self.host_link, "up")
            _ip("-n", self.name, "addr", "add", f"{self.source_address}/24", "dev",
                self.source_link)
            _ip("-n", self.name, "link", "set", self.source_link, "up")
            _ip("-n", self.name, "link", "set", "lo", "up")
        except NamespaceUnavailable:
            self.down()
            raise

    def down(self) -> None:
        """Kill what still runs inside, delete the namespace and the link (idempotent)."""
        with contextlib.suppress(NamespaceUnavailable):
            for pid in _ip("netns", "pids", self.name).split():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)
        with contextlib.suppress(NamespaceUnavailable):
            _ip("netns", "delete", self.name)
        with contextlib.suppress(NamespaceUnavailable):
            _ip("link", "delete", self.host_link)  # gone with the namespace, normally

    def exists(self) -> bool:
        names = {entry.get("name") for entry in json.loads(_ip("-j", "netns", "list") or "[]")}
        return self.name in names


def link_exists(name: str) -> bool:
    return subprocess.run([IP, "link", "show", "dev", name], capture_output=True,
                          check=False).returncode == 0


def remove_stale_networks() -> list[str]:
    """Take down the source networks of test sessions that died without doing it."""
    removed = []
    for entry in json.loads(_ip("-j", "netns", "list") or "[]"):
        name = str(entry.get("name", ""))
        tag, _, index = name.removeprefix(NETNS_PREFIX).partition("-")
        if name.startswith(NETNS_PREFIX) and tag.isdigit() and index.isdigit() \
                and not _alive(int(tag)):
            SourceNetwork(tag=int(tag), index=int(index)).down()
            removed.append(name)
    return removed


@contextlib.contextmanager
def make_source_network(index: int = 0) -> Iterator[SourceNetwork]:
    """A source network of this session, up inside the block and down however it ends."""
    network = SourceNetwork(tag=os.getpid(), index=index)
    network.up()
    try:
        yield network
    finally:
        network.down()


def shadow_line(user: str, password: str) -> str:
    """An /etc/shadow entry giving ``user`` the password ``password`` (SHA-512 crypt)."""
    hashed = subprocess.run(["/usr/bin/openssl", "passwd", "-6", "-stdin"],
                            input=password + "\n", capture_output=True, text=True,
                            check=True).stdout.strip()
    return f"{user}:{hashed}:19000:0:99999:7:::\n"


@dataclass
class SshServer:
    """sshd in ``network`` on port 22, or (no network: the benchmark) on 127.0.0.1 and a
    free port.

    With ``root_password`` it also takes password logins for root (PAM off: sshd checks
    /etc/shadow itself). That password is a test's own: sshd runs in a mount namespace
    of its own where a temporary shadow file, holding only root's entry, is bind-mounted
    over /etc/shadow. The machine's /etc/shadow is neither changed nor read.

    With ``hostname`` it runs in a UTS namespace of its own under that name (the source's
    inventory reports it); else it shares this machine's.
    """

    root: Path
    authorized_key: str
    network: SourceNetwork | None = None
    port: int = 0
    root_password: str | None = None
    force_command: str = ""  # sshd's ForceCommand: what every login runs instead
    hostname: str = ""
    proc: subprocess.Popen[bytes] | None = None

    def __post_init__(self) -> None:
        if not self.port:
            self.port = 22 if self.network is not None else free_port()

    @property
    def address(self) -> str:
        return self.network.source_address if self.network is not None else "127.0.0.1"

    @property
    def host_key(self) -> Path:
        return self.root / "host_ed25519"

    def _argv(self, config: Path) -> list[str]:
        sshd = [SSHD, "-D", "-e", "-f", str(config), "-p", str(self.port)]
        if self.root_password is not None:
            shadow = self.root / "shadow"
            shadow.touch(mode=0o600)
            shadow.write_text(shadow_line("root", self.root_password))
            # Both wrappers below make a new mount namespace whose mounts stay in it.
            sshd = ["/bin/sh", "-c", 'mount --bind "$1" /etc/shadow && shift && exec "$@"',
                    "sh", str(shadow), *sshd]
        if self.hostname:  # unshare and sh exec: sshd keeps the pid started
            sshd = ["/usr/bin/unshare", "--uts", "--", "/bin/sh", "-c",
                    'hostname "$1" && shift && exec "$@"', "sh", self.hostname, *sshd]
        if self.network is None:
            return ["/usr/bin/unshare", "--mount", "--propagation", "private", "--", *sshd] \
                if self.root_password is not None else sshd
        return [IP, "netns", "exec", self.network.name, *sshd]  # ip execs: same pid

    def _config(self, authorized: Path) -> list[str]:
        password = self.root_password is not None
        return [
            f"ListenAddress {self.address}", f"HostKey {self.host_key}",
            f"AuthorizedKeysFile {authorized}",
            f"PermitRootLogin {'yes' if password else 'prohibit-password'}",
            f"PasswordAuthentication {'yes' if password else 'no'}",
            "KbdInteractiveAuthentication no", "UsePAM no", "StrictModes no",
            f"PidFile {self.root / 'sshd.pid'}", "LogLevel ERROR",
            *([f"ForceCommand {self.force_command}"] if self.force_command else []), "",
        ]

    def start(self, *, new_key: bool = False) -> None:
        if new_key or not self.host_key.exists():
            _keygen(self.host_key)
        authorized = self.root / "authorized_keys"
        authorized.write_text(self.authorized_key + "\n")
        authorized.chmod(0o600)
        config = self.root / "sshd_config"
        config.write_text("\n".join(self._config(authorized)))
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation dir
        with open(self.root / "sshd.log", "ab") as log:  # the child keeps its own copy
            self.proc = subprocess.Popen(self._argv(config), stdout=subprocess.DEVNULL,
                                         stderr=log)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("sshd exited: " + (self.root / "sshd.log").read_text())
            try:
                socket.create_connection((self.address, self.port), timeout=1).close()
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
        (self.root / "shadow").unlink(missing_ok=True)

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
    attached: bool = True  # once detached, the device name may belong to someone else

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
    return attach(image)


def attach(image: Path) -> LoopDisk:
    """The image attached as a read-only loop device (with its partitions)."""
    device = subprocess.run(["/usr/sbin/losetup", "-f", "--show", "-P", "-r", str(image)],
                            check=True, capture_output=True, text=True).stdout.strip()
    return LoopDisk(image=image, device=device, size=image.stat().st_size)


def detach(disk: LoopDisk) -> None:
    if disk.attached:
        disk.attached = False
        subprocess.run(["/usr/sbin/losetup", "-d", disk.device], check=False,
                       capture_output=True)


def is_attached(disk: LoopDisk) -> bool:
    """Whether ``disk.device`` is a loop device backed by the disk's image."""
    found = subprocess.run(["/usr/sbin/losetup", "-n", "-O", "BACK-FILE", disk.device],
                           capture_output=True, text=True, check=False)
    return found.returncode == 0 and found.stdout.strip() == str(disk.image)


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
