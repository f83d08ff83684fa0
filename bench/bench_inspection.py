"""Guest inspection cost: `inspect_image` of a test disk (the converted-machine shape: MBR +
SYSLINUX, FAT /boot with the tiny guest's real Debian kernel, an initramfs and a kernel
config, ext4 root with /etc) beside `qemu-img info` of the same disk, in the same run, and
beside libguestfs's `virt-inspector` where it is installed (it is not a dependency: skipped
when absent). Cold: the first run, with the disk's pages dropped from the page cache (and,
for virt-inspector, an empty appliance cache: supermin builds its appliance). Warm: the
median of ROUNDS runs. Memory: the peak resident set of the largest process of a run (a
GNU time's %M), inspection run in its own Python process for that figure.

libguestfs boots a small VM: set LIBGUESTFS_BACKEND_SETTINGS=force_tcg where /dev/kvm
hangs (see lab/kvmprobe.py), and SUPERMIN_KERNEL/SUPERMIN_MODULES where no kernel is
installed in /boot. ``INSPECTION_BENCH_GUESTFS=0`` skips it."""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from conversions.inspection import inspect_image
from lab.tinyguest import ensure_tiny_guest
from tests.conversions.inspection.diskmaker import syslinux_disk

ROUNDS = 5
GUESTFS_TIMEOUT = 900
ROOT = Path(__file__).resolve().parent.parent


def _drop(path: Path) -> None:
    with open(path, "rb") as image:
        os.posix_fadvise(image.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)


def _child(argv: list[str], env: dict[str, str] | None = None,
           timeout: float = 120) -> tuple[float, int, int]:
    """(seconds, peak RSS in KiB, return code) of `argv` run to its end. GNU time measures
    the peak: a child forked from this (large) process would report this one's."""
    with tempfile.NamedTemporaryFile(mode="r") as peak:
        started = time.perf_counter()
        try:
            done = subprocess.run(["/usr/bin/time", "-f", "%M", "-o", peak.name, *argv],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                  env=env, timeout=timeout, check=False)
            code = done.returncode
        except subprocess.TimeoutExpired:
            code = -1
        seconds = time.perf_counter() - started
        lines = [line for line in peak.read().splitlines() if line.strip().isdigit()]
    return seconds, int(lines[-1]) if lines else 0, code


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 1)


def _inspection(disk: Path, fmt: str) -> dict[str, Any]:
    _drop(disk)
    started = time.perf_counter()
    inspect_image(disk, fmt)
    cold = time.perf_counter() - started
    warm = []
    for _ in range(ROUNDS):
        started = time.perf_counter()
        inspect_image(disk, fmt)
        warm.append(time.perf_counter() - started)
    script = f"from conversions.inspection import inspect_image; inspect_image({str(disk)!r}, " \
             f"{fmt!r})"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    seconds, rss, code = _child([sys.executable, "-c", script], env=env)
    return {"cold_ms": _ms(cold), "warm_ms": _ms(statistics.median(warm)),
            "process_ms": _ms(seconds), "peak_rss_mib": round(rss / 1024, 1),
            "ok": code == 0}


def _qemu_img_info(disk: Path, fmt: str) -> dict[str, Any]:
    runs = [_child(["qemu-img", "info", "-f", fmt, str(disk)]) for _ in range(ROUNDS)]
    return {"warm_ms": _ms(statistics.median(r[0] for r in runs)),
            "peak_rss_mib": round(max(r[1] for r in runs) / 1024, 1)}


def _virt_inspector(disk: Path, root: Path) -> dict[str, Any]:
    tool = shutil.which("virt-inspector")
    if tool is None or os.environ.get("INSPECTION_BENCH_GUESTFS") == "0":
        return {"skipped": "virt-inspector is not installed" if tool is None else "disabled"}
    cache = root / "guestfs-cache"
    cache.mkdir()
    env = dict(os.environ, LIBGUESTFS_BACKEND=os.environ.get("LIBGUESTFS_BACKEND", "direct"),
               LIBGUESTFS_CACHEDIR=str(cache), TMPDIR=str(root))
    argv = [tool, "--format=raw", "-a", str(disk)]
    _drop(disk)
    cold, cold_rss, code = _child(argv, env=env, timeout=GUESTFS_TIMEOUT)
    if code != 0:
        return {"failed": f"virt-inspector exited with {code} after {cold:.0f} s"}
    warm = [_child(argv, env=env, timeout=GUESTFS_TIMEOUT) for _ in range(2)]
    return {"cold_ms": _ms(cold), "warm_ms": _ms(statistics.median(w[0] for w in warm)),
            "peak_rss_mib": round(max([cold_rss] + [w[1] for w in warm]) / 1024, 1),
            "tcg": "force_tcg" in os.environ.get("LIBGUESTFS_BACKEND_SETTINGS", "")}


def run() -> dict[str, Any]:
    kernel = ensure_tiny_guest().kernel
    with tempfile.TemporaryDirectory(prefix="xenweb-bench-inspect-") as tmp:
        root = Path(tmp)
        (root / "raw").mkdir()
        disk = syslinux_disk(root / "raw", kernel)
        qcow2 = root / "disk.qcow2"
        subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(disk),
                        str(qcow2)], check=True)
        out: dict[str, Any] = {"disk_mib": disk.stat().st_size // 1024**2, "rounds": ROUNDS}
        out["inspection_raw"] = _inspection(disk, "raw")
        out["inspection_qcow2"] = _inspection(qcow2, "qcow2")
        out["qemu_img_info"] = _qemu_img_info(disk, "raw")
        out["virt_inspector"] = _virt_inspector(disk, root)
        out["ratio_inspection_to_info"] = round(
            out["inspection_raw"]["warm_ms"] / max(out["qemu_img_info"]["warm_ms"], 0.1), 1)
        if "warm_ms" in out["virt_inspector"]:
            out["ratio_virt_inspector_to_inspection"] = round(
                out["virt_inspector"]["warm_ms"] / out["inspection_raw"]["warm_ms"], 1)
        print(f"  inspection {out['inspection_raw']} qemu-img info {out['qemu_img_info']} "
              f"virt-inspector {out['virt_inspector']}", flush=True)
        return out
