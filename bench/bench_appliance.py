"""The appliance image's figures: its size, how long it takes to build cold and cached, and
how long it boots to the wizard answering over HTTPS under TCG, beside the lab's Xen dom0
booting to SSH in the same run (the baseline: the same emulated machine without GRUB,
first boot and xenweb's services).

- sizes: the raw image's length and what it holds on disk (sparse), the compressed qcow2;
- build: cold (an empty cache directory: debootstrap, packages, xenweb, disk) and cached
  (the lookup a second ``make appliance`` does);
- boot: a fresh machine from the image (SeaBIOS, GRUB, Xen, dom0, first boot, every
  service) until the wizard answers through nginx with the certificate the console showed,
  and the lab dom0 (``lab.xen``) until its SSH answers; ``ratio_boot`` = appliance / dom0.

Printed, never asserted. Needs root and QEMU (skipped with the reason otherwise).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.stats import quiet_start
from lab.errors import LabError

MIB = 1024**2


def _sizes(raw: Path, qcow2: Path) -> dict[str, float]:
    return {
        "raw_mib": round(raw.stat().st_size / MIB),
        "raw_on_disk_mib": round(raw.stat().st_blocks * 512 / MIB),
        "qcow2_mib": round(qcow2.stat().st_size / MIB),
    }


def _build_times() -> tuple[Any, dict[str, float]]:
    from lab.appliance.image import ensure_appliance_image

    cold_cache = Path(tempfile.mkdtemp(prefix="xenweb-bench-cache-"))
    kept = os.environ.get("XENWEB_CACHE_DIR")
    os.environ["XENWEB_CACHE_DIR"] = str(cold_cache)
    try:
        quiet_start()
        began = time.monotonic()
        ensure_appliance_image()
        cold = time.monotonic() - began
    finally:
        if kept is None:
            os.environ.pop("XENWEB_CACHE_DIR", None)
        else:
            os.environ["XENWEB_CACHE_DIR"] = kept
        shutil.rmtree(cold_cache, ignore_errors=True)
    image = ensure_appliance_image()  # the usual cache (built if missing, not timed)
    began = time.monotonic()
    ensure_appliance_image()
    cached = time.monotonic() - began
    return image, {"cold_s": round(cold), "cached_s": round(cached, 2)}


def _appliance_boot(image: Any) -> float:
    from tests.appliance.conftest import boot_appliance

    folder = Path(tempfile.mkdtemp(prefix="xenweb-bench-appliance-"))
    quiet_start()
    booted = boot_appliance(image, folder, "bench-appliance")
    try:
        return booted.boot_seconds
    finally:
        booted.machine.remove()
        shutil.rmtree(folder, ignore_errors=True)


def _dom0_boot() -> float:
    from lab.xen.manager import xen_down, xen_up

    xen_down()
    quiet_start()
    began = time.monotonic()
    try:
        xen_up(1, timeout=1500, tiny_guest=False)
        return time.monotonic() - began
    finally:
        xen_down()


def run() -> dict[str, Any]:
    from tests.appliance.conftest import problems

    missing = problems()
    if missing:
        return {"skipped": "; ".join(missing)}
    try:
        image, build = _build_times()
        appliance = _appliance_boot(image)
        dom0 = _dom0_boot()
    except LabError as exc:
        return {"failed": str(exc)}
    result = {
        "sizes": _sizes(image.raw, image.qcow2),
        "build": build,
        "boot_to_https_s": round(appliance),
        "lab_dom0_boot_to_ssh_s": round(dom0),
        "ratio_boot": round(appliance / dom0, 2),
    }
    print(f"appliance: {result}", flush=True)
    return result
