"""qemu-img for conversions: explicit formats and checked results.

Every call goes through `prlimit` (CPU seconds and address space; storage.qemu_img, which
the upload check shares), so a hostile image that makes qemu-img loop or balloon is
stopped by the kernel, not by luck.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO, Any

from conversions.v2v.proposal import MAX_DISK_BYTES, ImportRefused
from storage.qemu_img import (
    CONVERT_ADDRESS_SPACE,
    INFO_ADDRESS_SPACE,
    INFO_CPU_SECONDS,
    QemuImgFailed,
    info_json,
    limited,
)
from storage.qemu_img import reason as _reason

__all__ = ["CONVERT_ADDRESS_SPACE", "INFO_ADDRESS_SPACE", "INFO_CPU_SECONDS", "Image",
           "ImageInfo", "QemuImgError", "check_self_contained", "convert", "info", "limited"]
PROGRESS = re.compile(rb"\((\d+(?:\.\d+)?)/100%\)")


class QemuImgError(ImportRefused):
    """qemu-img failed or refused the image; the message says why."""


@dataclass(frozen=True)
class Image:
    """How qemu-img opens a source: a file with a format, or `--image-opts` (a member of
    a tar read in place: a raw window at an offset of the archive)."""

    path: str
    format: str
    offset: int = 0
    size: int = 0  # with offset: the member's length

    def args(self) -> list[str]:
        if not self.offset and not self.size:
            return ["-f", self.format, self.path]
        escaped = self.path.replace(",", ",,")
        return ["--image-opts", f"driver={self.format},file.driver=raw,"
                f"file.offset={self.offset},file.size={self.size},"
                f"file.file.driver=file,file.file.filename={escaped}"]


@dataclass
class ImageInfo:
    format: str
    virtual_size: int
    actual_size: int
    backing_file: str
    data_file: str
    extents: list[str] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict)


def info(image: Image) -> ImageInfo:
    try:
        data = info_json(image.args())
    except QemuImgFailed as exc:
        raise QemuImgError(f"The image is not a valid {image.format} image: {exc}") from exc
    specific = (data.get("format-specific") or {}).get("data") or {}
    extents = [e.get("filename", "") for e in specific.get("extents") or []]
    return ImageInfo(
        format=str(data.get("format", "")), virtual_size=int(data.get("virtual-size", 0)),
        actual_size=int(data.get("actual-size", 0) or 0),
        backing_file=data.get("backing-filename") or data.get("full-backing-filename") or "",
        data_file=specific.get("data-file") or "", extents=extents, raw=data)


def check_self_contained(image: Image, found: ImageInfo) -> None:
    """Refuse a backing file, an external data file or a format other than declared."""
    if found.format != image.format:
        raise QemuImgError(f"The image was declared {image.format} but qemu-img reads it as "
                           f"{found.format}.")
    if found.backing_file:
        raise QemuImgError(f"The image has a backing file ({found.backing_file}): only "
                           "self-contained images are imported.")
    if found.data_file:
        raise QemuImgError(f"The image keeps its data in an external file "
                           f"({found.data_file}): only self-contained images are imported.")
    specific = (found.raw.get("format-specific") or {}).get("data") or {}
    if found.raw.get("encrypted") or specific.get("encrypt"):
        raise QemuImgError("The image is encrypted: only unencrypted images are imported.")
    if not 0 <= found.virtual_size <= MAX_DISK_BYTES:
        raise QemuImgError(f"The image claims {found.virtual_size} bytes: refused.")


def convert_cpu_seconds(virtual_size: int) -> int:
    """Generous: 10 minutes plus one second per 20 MiB of disk."""
    return 600 + virtual_size // (20 * 1024**2)


def convert(image: Image, target: str, target_format: str, *, virtual_size: int,
            existing: bool, on_progress: Callable[[float], None],
            options: list[str] | None = None) -> None:
    """`qemu-img convert -p` into `target`; `on_progress(fraction)` may raise to stop it.

    `existing`: the target volume was created already (libvirt made it), write into it
    (`-n`) instead of creating a file.
    """
    argv = ["qemu-img", "convert", "-p"]
    if existing:  # a volume libvirt just created reads as zeros: keep its holes
        argv += ["-n", "--target-is-zero"]
    argv += image.args()
    argv += ["-O", target_format, *(options or []), target]
    with tempfile.TemporaryFile() as errors:
        _run_convert(argv, virtual_size, errors, on_progress)


def _run_convert(argv: list[str], virtual_size: int, errors: IO[bytes],
                 on_progress: Callable[[float], None]) -> None:
    process = subprocess.Popen(
        limited(argv, cpu_seconds=convert_cpu_seconds(virtual_size),
                address_space=CONVERT_ADDRESS_SPACE),
        stdout=subprocess.PIPE, stderr=errors, start_new_session=True)
    stdout = process.stdout
    if stdout is None:  # pragma: no cover - Popen with PIPE always has one
        raise QemuImgError("qemu-img could not be started.")
    buffer = b""
    try:
        while chunk := os.read(stdout.fileno(), 256):
            buffer = (buffer + chunk)[-512:]
            found = PROGRESS.findall(buffer)
            if found:
                on_progress(min(1.0, float(found[-1]) / 100))
                buffer = b""
    except BaseException:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        raise
    returncode = process.wait()
    stdout.close()
    errors.seek(0)
    stderr = errors.read(65536).decode(errors="replace")
    if returncode != 0:
        if process.returncode in (-signal.SIGXCPU, -signal.SIGKILL):
            raise QemuImgError("qemu-img hit its CPU time limit and was stopped.")
        raise QemuImgError(f"qemu-img could not convert the image: {_reason(stderr)}")
