"""The lab's tiny guest: built from Debian packages, booted under plain QEMU (TCG).

Each boot is a direct kernel boot (kernel + initrd, no disk) with the serial console in a
file and the QEMU monitor on a unix socket. Timeouts are generous: TCG is slow on busy CI.
"""

from __future__ import annotations

import gzip
import re
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from lab.tinyguest import (
    TINY_GUEST_BANNER,
    TINY_GUEST_DIRTYING,
    TINY_GUEST_POWER_BUTTON,
    TINY_GUEST_TICK,
    TinyGuestImage,
    ensure_tiny_guest,
    tiny_guest_cmdline,
)

QEMU = shutil.which("qemu-system-x86_64")
BANNER_TIMEOUT = 60.0
POWEROFF_TIMEOUT = 30.0


@pytest.fixture(scope="module")
def image() -> TinyGuestImage:
    return ensure_tiny_guest()


class Guest:
    """One QEMU process running the tiny guest."""

    def __init__(self, image: TinyGuestImage, append: str, workdir: Path) -> None:
        assert QEMU is not None
        self.console = workdir / "console.log"
        self.monitor = workdir / "monitor.sock"
        self.console.write_bytes(b"")
        self.started = time.monotonic()
        args = [
            QEMU,
            "-accel", "tcg",
            "-m", "256",
            "-display", "none",
            "-nic", "none",
            "-no-reboot",
            "-kernel", str(image.kernel),
            "-initrd", str(image.initrd),
            "-append", append,
            "-serial", f"file:{self.console}",
            "-monitor", f"unix:{self.monitor},server,nowait",
        ]  # fmt: skip
        self.log = (workdir / "qemu.log").open("wb")
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT)

    def text(self) -> str:
        return self.console.read_bytes().decode(errors="replace")

    def wait_for(self, pattern: str, timeout: float, start: int = 0) -> re.Match[str]:
        """The first match of ``pattern`` in the console after offset ``start``."""
        deadline = time.monotonic() + timeout
        while True:
            found = re.compile(pattern).search(self.text(), start)
            if found:
                return found
            if self.proc.poll() is not None:
                raise AssertionError(f"QEMU exited ({self.proc.returncode}):\n{self.text()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"no {pattern!r} within {timeout:.0f} s:\n{self.text()}")
            time.sleep(0.2)

    def monitor_command(self, command: str) -> None:
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(10)
            sock.connect(str(self.monitor))
            sock.recv(4096)  # greeting
            sock.sendall(command.encode() + b"\n")
            time.sleep(0.5)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=30)
        self.log.close()


@pytest.fixture
def boot(image: TinyGuestImage) -> Iterator[Callable[[str], Guest]]:
    """``boot(append)``: a Guest whose banner has appeared (one retry on a failed boot)."""
    guests: list[Guest] = []
    workdir = Path(tempfile.mkdtemp(prefix="xw-tg-"))  # short: unix socket path limit

    def start(append: str) -> Guest:
        for attempt in (1, 2):
            attempt_dir = workdir / str(attempt)
            attempt_dir.mkdir(exist_ok=True)
            guest = Guest(image, append, attempt_dir)
            guests.append(guest)
            try:
                guest.wait_for(re.escape(TINY_GUEST_BANNER), BANNER_TIMEOUT)
            except AssertionError:
                guest.stop()
                if attempt == 2:
                    raise
                continue
            print(f"banner {time.monotonic() - guest.started:.1f} s after QEMU start")
            return guest
        raise AssertionError("unreachable")

    if QEMU is None:
        pytest.skip("qemu-system-x86_64 is not installed (scripts/bootstrap.sh installs it)")
    try:
        yield start
    finally:
        for guest in guests:
            guest.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def test_cmdline() -> None:
    assert tiny_guest_cmdline() == "console=ttyS0 panic=-1 loglevel=1 xenweb.dirty=0"
    assert "xenweb.dirty=16" in tiny_guest_cmdline(16).split()
    assert tiny_guest_cmdline(console="hvc0").startswith("console=hvc0 ")
    with pytest.raises(ValueError):
        tiny_guest_cmdline(-1)


def _cpio_names(initrd: Path) -> dict[str, int]:
    """name -> mode of every entry of a gzip'd newc archive."""
    data, offset, names = gzip.decompress(initrd.read_bytes()), 0, {}
    while True:
        assert data[offset : offset + 6] == b"070701"
        fields = [int(data[offset + 6 + 8 * i : offset + 14 + 8 * i], 16) for i in range(13)]
        mode, size, namesize = fields[1], fields[6], fields[11]
        name = data[offset + 110 : offset + 110 + namesize - 1].decode()
        if name == "TRAILER!!!":
            return names
        names[name] = mode
        offset += 110 + namesize
        offset += -offset % 4
        offset += size + (-size % 4)


def test_image_is_cached_and_complete(image: TinyGuestImage) -> None:
    started = time.monotonic()
    assert ensure_tiny_guest() == image
    assert time.monotonic() - started < 5  # the warm path only checks files
    assert image.kernel.stat().st_size > 1_000_000
    assert re.fullmatch(r"\d+\.\d+\.\d+-\d+-amd64", image.kernel_version)
    names = _cpio_names(image.initrd)
    for name in ("init", "bin/busybox", "bin/sh", "bin/acpid", "dev/console"):
        assert name in names, name
    assert "lib/modules/button.ko" in names
    assert "lib/modules/evdev.ko" in names
    assert "etc/acpi/PWRF/00000080" in names
    assert "sbin/poweroff" in names  # what the kernel runs when Xen asks for a shutdown


def test_boots_ticks_and_powers_off_on_acpi_button(boot: Callable[[str], Guest]) -> None:
    guest = boot(tiny_guest_cmdline())
    banner = guest.wait_for(rf"{re.escape(TINY_GUEST_BANNER)} kernel=\S+ uptime=[\d.]+", 5)
    first = guest.wait_for(rf"{TINY_GUEST_TICK} [\d.]+", 30, banner.end())
    guest.wait_for(rf"{TINY_GUEST_TICK} [\d.]+", 30, first.end())
    assert TINY_GUEST_DIRTYING not in guest.text()

    guest.monitor_command("system_powerdown")
    assert guest.proc.wait(timeout=POWEROFF_TIMEOUT) == 0  # the guest powered itself off
    assert TINY_GUEST_POWER_BUTTON in guest.text()


def test_dirty_switch_rewrites_memory_continuously(boot: Callable[[str], Guest]) -> None:
    guest = boot(tiny_guest_cmdline(dirty_mib=16))
    dirtying = guest.wait_for(rf"{TINY_GUEST_DIRTYING} 16 MiB", 60)
    first = guest.wait_for(rf"{TINY_GUEST_TICK} [\d.]+ passes=(\d+)", 30, dirtying.end())
    later = guest.wait_for(rf"{TINY_GUEST_TICK} [\d.]+ passes=(\d+)", 30, first.end())
    assert int(later[1]) > int(first[1])
    assert guest.text().count(TINY_GUEST_DIRTYING) == 1

    guest.monitor_command("system_powerdown")  # still powers off under load
    assert guest.proc.wait(timeout=POWEROFF_TIMEOUT) == 0
