"""Streaming one source disk into a volume: sparse, compressed, checksummed, resumable.

One SSH session runs the reader (reader.py) from the last committed offset to the end.
Records go straight into the volume (its file where this machine holds it, else libvirt
upload streams: storage.volume_io), one writer per segment: when a segment's writer has
finished, its bytes are on the volume and its regions' checksums are kept, so a
dropped connection resumes at the end of the last finished segment. Into a volume file
this machine holds, uncompressed regions are spliced from the SSH pipe; other writes run
in a thread beside the receiving one (conversions.p2v.pipeline). Bytes are never held
beyond a few regions in memory and never written anywhere but the volume.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import os
import subprocess
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field

from conversions.p2v import ssh
from conversions.p2v.pipeline import InlineSteps, WritePipeline
from conversions.p2v.reader import FLAG_ZLIB, HEADER, REGION, SCRIPT, command
from conversions.p2v.ssh import ConnectionLost, HostKeyRefused, LoginRefused, P2VError, Source
from hosts.virt import VirtError, VirtTarget
from storage import volume_io

SEGMENT = 64 * REGION
RETRIES = 3


@dataclass(frozen=True)
class Target:
    """The volume a disk is written to."""

    uri: str
    path: str
    allow_insecure: bool = False  # the host's Host.allow_insecure_transport
    format: str = "raw"  # how verify reads it back: its file's bytes, or qcow2's guest view
    files_local: bool = False  # the host's Host.files_local

    @property
    def virt_target(self) -> VirtTarget:
        return VirtTarget(self.uri, self.allow_insecure)


@dataclass
class DiskCopy:
    device: str
    size: int
    committed: int = 0  # everything before it is on the volume (finished segments)
    high_water: int = 0  # the furthest any attempt wrote: stale bytes may lie below it
    digests: dict[int, bytes] = field(default_factory=dict)  # region offset → source sha256
    wire_bytes: int = 0  # what crossed the SSH channel (headers + payload)
    attempts: int = 0


Progress = Callable[[DiskCopy, int], None]


def _read_exact(fd: int, size: int) -> bytes | None:
    """`size` bytes from the pipe `fd`; None when it ends first."""
    data = os.read(fd, size)
    if len(data) == size or not data:
        return data or None
    parts = [data]
    got = len(data)
    while got < size:
        more = os.read(fd, size - got)
        if not more:
            return None
        parts.append(more)
        got += len(more)
    return b"".join(parts)


def _ended_early(source: Source, proc: subprocess.Popen[bytes], position: int) -> P2VError:
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    stderr = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    if "short read" in stderr or "No such file or directory" in stderr:
        return P2VError(f"The source disk could not be read at offset {position}: "
                        f"{stderr.strip().splitlines()[-1]}")
    error = ssh.explain(source, proc.returncode or 255, stderr)
    if isinstance(error, HostKeyRefused | LoginRefused):
        return error  # retrying would not help (and would count as one more failed login)
    if isinstance(error, ConnectionLost) or proc.returncode in (None, 255) or proc.returncode < 0:
        return ConnectionLost(f"The stream from {source.label} ended at offset {position}: "
                              f"{error}")
    return error


def copy_pass(source: Source, disk: DiskCopy, target: Target, *, progress: Progress,
              level: int = 1, bwlimit: int = 0) -> None:
    """One SSH session from ``disk.committed`` to the end of the disk."""
    with ssh.session(source, command(disk.device, disk.committed, level=level,
                                     bwlimit=bwlimit)) as proc:
        _stream(source, proc, disk, target, progress)


def _stream(source: Source, proc: subprocess.Popen[bytes], disk: DiskCopy, target: Target,
            progress: Progress) -> None:
    """Send the reader to ``proc`` and write the records it answers into the volume."""
    if proc.stdin is None or proc.stdout is None:
        raise P2VError("ssh started without pipes")
    pipe = proc.stdout.fileno()  # read unbuffered: region bytes are spliced from it
    _widen(pipe)
    upload: volume_io.Writer | None = None
    position = disk.committed
    pending: dict[int, bytes] = {}
    local = volume_io.direct_file(target.uri, target.path, files_local=target.files_local)
    steps = InlineSteps() if local else WritePipeline(f"p2v-write-{disk.device}")
    try:
        try:
            proc.stdin.write(SCRIPT.encode())
            proc.stdin.close()
        except BrokenPipeError:
            raise _ended_early(source, proc, position) from None
        while True:
            head = _read_exact(pipe, HEADER.size)
            if head is None:
                raise _ended_early(source, proc, position)
            kind, flags, offset, length, payload_length, digest = HEADER.unpack(head)
            disk.wire_bytes += HEADER.size + payload_length
            if kind == b"E":
                if offset != disk.size:
                    raise P2VError(f"{disk.device} ended at {offset} bytes, not {disk.size}: "
                                   "did the disk change size?")
                steps.drain()
                return
            if offset != position or kind not in (b"D", b"Z"):
                raise ConnectionLost(f"The stream from {source.label} is garbled at offset "
                                     f"{position}.")
            if upload is None:
                segment_end = min(disk.size, position + SEGMENT)
                upload = volume_io.writer(target.virt_target, target.path,
                                          files_local=target.files_local,
                                          offset=position, length=segment_end - position,
                                          sparse=True)
            holes = offset >= disk.high_water  # below it an earlier attempt may have written
            disk.high_water = max(disk.high_water, offset + length)  # before its bytes land
            if kind == b"Z":
                if holes:
                    steps.put(functools.partial(upload.hole, length))
                else:
                    steps.put(functools.partial(upload.write, bytes(length), holes=False))
            elif local and isinstance(upload, volume_io.FileUpload) and not flags & FLAG_ZLIB:
                if payload_length != length:
                    raise ConnectionLost(f"Region at offset {offset} arrived damaged.")
                if upload.splice_from(pipe, length) != length:
                    raise _ended_early(source, proc, position)
            else:
                payload = _read_exact(pipe, payload_length)
                if payload is None:
                    raise _ended_early(source, proc, position)
                data = _unpacked(payload, flags, length)
                if data is None:
                    raise ConnectionLost(f"Region at offset {offset} arrived damaged.")
                steps.put(functools.partial(upload.write, data, holes=holes))
            position = offset + length
            pending[offset] = digest
            if position == segment_end:
                steps.put(functools.partial(_commit, upload, disk, pending, position))
                upload, pending = None, {}
            progress(disk, position)
    except VirtError as exc:
        raise P2VError(f"Writing {disk.device} to {target.path} failed: {exc}") from exc
    finally:
        steps.abort()  # what is still waiting is not written; its segment not committed
        if upload is not None:
            upload.abort()


def _widen(pipe: int) -> None:
    """Let ssh get a region ahead of us (a pipe holds 64 KiB unless told otherwise)."""
    with contextlib.suppress(OSError):
        fcntl.fcntl(pipe, fcntl.F_SETPIPE_SZ, 1 << 20)


def _unpacked(payload: bytes, flags: int, length: int) -> bytes | None:
    """A region's bytes from its payload; None when they cannot be what was sent.

    Their checksum is not computed here: SSH's MAC already rejects damaged packets, and
    verify.py compares the source's checksums with what the volume holds afterwards.
    Hashing every byte here as well cost a fifth of the copy's speed on two cores."""
    try:
        data = zlib.decompress(payload) if flags & FLAG_ZLIB else payload
    except zlib.error:
        return None
    return data if len(data) == length else None


def _commit(upload: volume_io.Writer, disk: DiskCopy, digests: dict[int, bytes],
            position: int) -> None:
    """A segment's writer finished: its bytes are on the volume, its checksums kept."""
    upload.finish()
    disk.digests.update(digests)
    disk.committed = position

def copy_disk(source: Source, disk: DiskCopy, target: Target, *, progress: Progress,
              retries: int = RETRIES, backoff: float = 2.0, level: int = 1, bwlimit: int = 0,
              on_retry: Callable[[str], None] | None = None) -> None:
    """Copy the whole disk, resuming after dropped connections.

    Gives up after ``retries`` consecutive failures that made no progress; errors other
    than a lost connection (host key, permission, unreadable disk) are not retried.
    """
    failures = 0
    while True:
        before = disk.committed
        disk.attempts += 1
        try:
            copy_pass(source, disk, target, progress=progress, level=level, bwlimit=bwlimit)
            return
        except ConnectionLost as exc:
            failures = 1 if disk.committed > before else failures + 1
            if failures > retries:
                raise P2VError(f"Copying {disk.device} failed {failures} times in a row "
                               f"without progress; last error: {exc}") from exc
            if on_retry is not None:
                on_retry(f"{exc} Resuming at offset {disk.committed} (attempt "
                         f"{failures + 1} of {retries + 1}).")
            time.sleep(backoff * failures)


def digest_list(disk: DiskCopy) -> str:
    """One checksum for the whole disk: sha256 over its regions' sha256s, in order."""
    whole = hashlib.sha256()
    for offset in sorted(disk.digests):
        whole.update(disk.digests[offset])
    return whole.hexdigest()
