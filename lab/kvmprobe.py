"""Does KVM really work here? Boot the tiny guest under KVM and look for its banner.

`/dev/kvm` is no proof: on some machines it is a software module (kvm_pvm) that runs
firmware yet hangs booting Linux. The answer is cached per kernel and CPU model, since
the probe costs up to PROBE_SECONDS when KVM hangs.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import subprocess
import tempfile
import time
from pathlib import Path

from lab.paths import cache_dir
from lab.tinyguest import TINY_GUEST_BANNER, ensure_tiny_guest, tiny_guest_cmdline

log = logging.getLogger(__name__)
PROBE_SECONDS = 20.0
QEMU = "/usr/bin/qemu-system-x86_64"


def _machine_key() -> str:
    cpu = ""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        cpu = next((line for line in cpuinfo.read_text().splitlines()
                    if line.startswith("model name")), "")
    text = f"{platform.release()}|{cpu}|{os.path.exists('/dev/kvm')}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _cache_file() -> Path:
    return cache_dir() / "kvm-probe.json"


def kvm_boots_linux(*, use_cache: bool = True) -> bool:
    """True only when a Linux guest really boots under KVM on this machine."""
    if not os.path.exists("/dev/kvm") or not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return False
    key = _machine_key()
    cache = _cache_file()
    if use_cache and cache.exists():
        cached = json.loads(cache.read_text())
        if cached.get("key") == key:
            return bool(cached["kvm"])
    works = _boot_under_kvm()
    cache.write_text(json.dumps({"key": key, "kvm": works, "checked": time.time()}))
    log.info("KVM probe: a Linux guest %s under KVM", "boots" if works else "does not boot")
    return works


def _boot_under_kvm() -> bool:
    image = ensure_tiny_guest()
    with tempfile.TemporaryDirectory(prefix="xenweb-kvm-probe-") as tmp:
        console = Path(tmp) / "console.log"
        argv = [
            QEMU, "-accel", "kvm", "-m", "128", "-display", "none",
            "-no-reboot", "-nodefaults", "-serial", f"file:{console}",
            "-kernel", str(image.kernel), "-initrd", str(image.initrd),
            "-append", tiny_guest_cmdline(),
        ]
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + PROBE_SECONDS
            while time.monotonic() < deadline and proc.poll() is None:
                if console.exists() and TINY_GUEST_BANNER in console.read_text(errors="replace"):
                    return True
                time.sleep(0.2)
            return False
        finally:
            proc.kill()
            proc.wait(timeout=10)
