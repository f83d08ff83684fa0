"""qemu-img, run under resource limits: the one place the app starts it from.

Every call goes through `prlimit` (CPU seconds and address space), so a hostile image
that makes qemu-img loop or balloon (a huge L1 or refcount table, a snapshot table that
claims gigabytes) is stopped by the kernel, not by luck. Uploads (storage.images) and
V2V conversions (conversions.v2v.qemu) both run it from here, with an explicit format.
"""

from __future__ import annotations

import json
import signal
import subprocess
from typing import Any

INFO_CPU_SECONDS = 20
INFO_ADDRESS_SPACE = 1024**3
CONVERT_ADDRESS_SPACE = 4 * 1024**3
INFO_TIMEOUT = 60
MAX_INFO_OUTPUT = 4 * 1024 * 1024


class QemuImgFailed(Exception):
    """qemu-img refused the image, failed, or was stopped by its limits; `str()` says why."""


def limited(argv: list[str], *, cpu_seconds: int, address_space: int) -> list[str]:
    return ["prlimit", f"--cpu={cpu_seconds}", f"--as={address_space}", "--", *argv]


def reason(stderr: str) -> str:
    return (stderr.strip().splitlines() or ["unreadable image"])[-1]


def info_json(image_args: list[str], *, address_space: int | None = None,
              cpu_seconds: int | None = None) -> dict[str, Any]:
    """`qemu-img info --output=json` of `image_args` (``-f FMT PATH`` or ``--image-opts
    …``) under the limits (this module's INFO_* by default); QemuImgFailed with
    qemu-img's own reason otherwise."""
    argv = limited(["qemu-img", "info", "--output=json", *image_args],
                   cpu_seconds=cpu_seconds or INFO_CPU_SECONDS,
                   address_space=address_space or INFO_ADDRESS_SPACE)
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=INFO_TIMEOUT,
                              check=False)
    except subprocess.TimeoutExpired as exc:
        raise QemuImgFailed("qemu-img took too long to read the image.") from exc
    if done.returncode in (-signal.SIGXCPU, -signal.SIGKILL, -signal.SIGSEGV,
                           -signal.SIGABRT):
        raise QemuImgFailed("qemu-img hit its memory or CPU limit reading the image.")
    if done.returncode != 0:
        why = reason(done.stderr)
        if "allocate" in why or "ut of memory" in why:
            why = f"{why} (it hit its memory limit)"
        raise QemuImgFailed(why)
    if len(done.stdout) > MAX_INFO_OUTPUT:
        raise QemuImgFailed("qemu-img describes the image at absurd length.")
    try:
        data = json.loads(done.stdout)
    except ValueError as exc:
        raise QemuImgFailed("qemu-img's description of the image is unreadable.") from exc
    if not isinstance(data, dict):
        raise QemuImgFailed("qemu-img's description of the image is unreadable.")
    return data


def file_args(path: str, fmt: str) -> list[str]:
    """A file opened with an explicit format (never probed)."""
    return ["-f", fmt, path]
