"""The disk under inspection, read in user space only.

A raw image is read in place: Python reads its bytes, and the file system readers get the
image and a byte offset. Any other format is read through `qemu-img` (under prlimit, with an
explicit format): `qemu-img convert` of a raw window (driver=raw with offset and size over
the image) into a temporary raw file, a few sectors for the tables and superblocks, the whole
partition (sparse, capped in size) for one a reader must walk. (`qemu-img dd` is not used: in
QEMU 7.2 its count= counts from the disk's start once skip= is given.) Nothing is mounted
and no kernel block device (nbd, loop) is used.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from conversions.inspection.errors import InspectionError
from conversions.inspection.run import Budget, ReaderFailed, run_bounded
from storage.qemu_img import (
    CONVERT_ADDRESS_SPACE,
    QemuImgFailed,
    info_json,
)
from storage.qemu_img import reason as qemu_reason

FORMATS = ("raw", "qcow2", "vmdk", "vpc", "vhdx", "qed", "vdi")
MAX_DISK_BYTES = 64 * 1024**4
MAX_READ = 64 * 1024**2
MAX_WINDOW_BYTES = 256 * 1024**3
WINDOW_CPU_SECONDS = 600
WINDOW_TIMEOUT = 900.0
READ_CPU_SECONDS = 20
READ_TIMEOUT = 60.0


@dataclass(frozen=True)
class Window:
    """Where a file system reader finds a partition: a raw file and a byte offset in it."""

    path: str
    offset: int


class Disk:
    """A disk image of `size` bytes; `read` a range, `window` a partition for a reader.

    Use as a context manager: temporary copies go with it.
    """

    def __init__(self, path: str | os.PathLike[str], fmt: str = "raw") -> None:
        if fmt not in FORMATS:
            raise InspectionError(f"The image format '{fmt}' is not one inspection reads.")
        source = Path(path)
        if not source.is_file():
            raise InspectionError(f"The image {source} does not exist or is not a file.")
        self.format = fmt
        self._tmp = Path(tempfile.mkdtemp(prefix="xenweb-inspect-"))
        # readers parse '?' (debugfs) and '@@' (mtools) in a name: give them a plain one.
        # qemu-img gets the real path: a VMDK descriptor names its extents beside itself.
        self._source = source.resolve()
        self._link = self._tmp / "disk.img"
        self._link.symlink_to(self._source)
        self._windows: dict[tuple[int, int], Window] = {}
        self.readers = Budget()  # the file system readers' (windows are copied apart)
        if fmt == "raw":
            self.size = source.stat().st_size
        else:
            try:
                data = info_json(["-f", fmt, str(self._source)])
            except QemuImgFailed as exc:
                self.close()
                raise InspectionError(f"The image is not a readable {fmt} image: {exc}") \
                    from exc
            if data.get("format") != fmt or data.get("backing-filename"):
                self.close()
                raise InspectionError(f"The image is not a self-contained {fmt} image.")
            self.size = int(data.get("virtual-size", 0))
        if not 0 < self.size <= MAX_DISK_BYTES:
            self.close()
            raise InspectionError(f"The image claims {self.size} bytes: not a disk to inspect.")

    def __enter__(self) -> Disk:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        shutil.rmtree(self._tmp, ignore_errors=True)

    def read(self, offset: int, length: int) -> bytes:
        """`length` bytes at `offset`; fewer at the disk's end, never more than MAX_READ."""
        if offset < 0 or length < 0 or length > MAX_READ:
            raise InspectionError(f"Refused to read {length} bytes at {offset}.")
        length = max(0, min(length, self.size - offset))
        if not length:
            return b""
        if self.format == "raw":
            with open(self._link, "rb") as image:
                image.seek(offset)
                return image.read(length)
        return self._qemu_read(offset, length)

    def _qemu_read(self, offset: int, length: int) -> bytes:
        start = offset // 512 * 512
        end = min(self.size, -(-(offset + length) // 512) * 512)
        out = self._tmp / "range.raw"
        try:
            self._convert(start, end - start, out, cpu_seconds=READ_CPU_SECONDS,
                          timeout=READ_TIMEOUT)
            with open(out, "rb") as data:
                data.seek(offset - start)
                return data.read(length)
        finally:
            out.unlink(missing_ok=True)

    def _convert(self, start: int, size: int, out: Path, *, cpu_seconds: int,
                 timeout: float) -> None:
        """`qemu-img convert` of the raw window [start, start + size) of the image."""
        escaped = str(self._source).replace(",", ",,")
        argv = ["qemu-img", "convert", "--image-opts",
                f"driver=raw,offset={start},size={size},file.driver={self.format},"
                f"file.file.driver=file,file.file.filename={escaped}",
                "-O", "raw", str(out)]
        try:
            done = run_bounded(argv, max_output=65536, timeout=timeout,
                               cpu_seconds=cpu_seconds, address_space=CONVERT_ADDRESS_SPACE)
        except ReaderFailed as exc:
            raise InspectionError(f"qemu-img could not read the image: {exc}.") from exc
        if done.returncode != 0:
            raise InspectionError(f"qemu-img could not read the image: "
                                  f"{qemu_reason(done.stderr)}")

    def window(self, start: int, size: int) -> Window:
        """The partition at [start, start + size) as a reader sees it."""
        if self.format == "raw":
            return Window(str(self._link), start)
        key = (start, size)
        if key in self._windows:
            return self._windows[key]
        if size > MAX_WINDOW_BYTES:
            raise InspectionError(f"The partition at byte {start} is {size} bytes: larger than "
                                  f"inspection copies out of a {self.format} image.")
        out = self._tmp / f"part-{start}.raw"
        self._convert(start, size, out, cpu_seconds=WINDOW_CPU_SECONDS, timeout=WINDOW_TIMEOUT)
        self._windows[key] = Window(str(out), 0)
        return self._windows[key]
