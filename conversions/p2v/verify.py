"""Reading a written volume back and comparing it with the checksums the source computed.

What is compared is what the guest will see: a raw volume's bytes, or a qcow2 volume's
guest view (qcow2.py maps its file), never the qcow2 container itself.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Generator
from contextlib import closing

from conversions.p2v import qcow2
from conversions.p2v.copy import DiskCopy, Target
from conversions.p2v.reader import REGION
from conversions.p2v.ssh import P2VError
from hosts.virt import VirtError
from storage import volume_io


class VerifyMismatch(P2VError):
    def __init__(self, device: str, regions: list[tuple[int, int]]) -> None:
        shown = ", ".join(f"{first}-{last - 1}" for first, last in regions[:5])
        more = f" and {len(regions) - 5} more" if len(regions) > 5 else ""
        super().__init__(f"The copy of {device} differs from the source in bytes {shown}{more}.")
        self.regions = regions


def file_chunks(target: Target, offset: int, length: int) -> Generator[bytes, None, None]:
    """``length`` bytes of the volume's file from ``offset``, read where it lies or through
    a libvirt stream (storage.volume_io; aborted when the reader stops early, e.g. on
    cancel)."""
    try:
        download = volume_io.reader(target.virt_target, target.path,
                                    files_local=target.files_local,
                                    offset=offset, length=length, chunk=REGION)
    except VirtError as exc:
        raise P2VError(f"Reading back {target.path} failed: {exc}") from exc
    try:
        yield from download
    except VirtError as exc:
        raise P2VError(f"Reading back {target.path} failed: {exc}") from exc
    finally:
        download.abort()  # a no-op once finished


def guest_chunks(target: Target, size: int) -> Generator[bytes, None, None]:
    """The first ``size`` bytes the guest will see on the volume."""
    if target.format == "qcow2":
        return qcow2.guest_chunks(lambda offset, length: file_chunks(target, offset, length),
                                  size)
    return file_chunks(target, 0, size)


def volume_digests(target: Target, size: int,
                   progress: Callable[[int], None] | None = None) -> dict[int, bytes]:
    """sha256 of each REGION of the volume's first ``size`` guest-visible bytes."""
    digests: dict[int, bytes] = {}
    buffer = bytearray()
    position = 0
    with closing(guest_chunks(target, size)) as chunks:  # closing aborts the download
        for chunk in chunks:
            buffer += chunk
            while len(buffer) >= REGION:
                digests[position] = hashlib.sha256(buffer[:REGION]).digest()
                del buffer[:REGION]
                position += REGION
                if progress is not None:
                    progress(position)
    if buffer:
        digests[position] = hashlib.sha256(buffer).digest()
        position += len(buffer)
    if position != size:
        raise P2VError(f"Reading back {target.path} gave {position} bytes, not {size}.")
    return digests


def verify_disk(disk: DiskCopy, target: Target,
                progress: Callable[[int], None] | None = None) -> None:
    """Raise VerifyMismatch naming the differing byte ranges, if any."""
    written = volume_digests(target, disk.size, progress)
    regions: list[tuple[int, int]] = []
    for offset in sorted(set(disk.digests) | set(written)):
        if disk.digests.get(offset) != written.get(offset):
            last = min(offset + REGION, disk.size)
            if regions and regions[-1][1] == offset:
                regions[-1] = (regions[-1][0], last)
            else:
                regions.append((offset, last))
    if regions:
        raise VerifyMismatch(disk.device, regions)
