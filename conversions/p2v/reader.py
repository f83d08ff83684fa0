"""The disk reader the source runs (``python3 - DEVICE OFFSET LENGTH REGION LEVEL BWLIMIT``).

It is sent over the SSH channel on stdin, so nothing is installed on the source. It opens
the device read-only and walks it in regions; for each region it sends one record:

    header  !cBQII32s  kind, flags, offset, length, payload length, sha256 of the region
    payload            the region's bytes (zlib-compressed when flags & 1), 'D' records only

``Z`` records stand for an all-zero region (no payload: the destination stays sparse),
``D`` records carry data, and one ``E`` record (offset = where it stopped) ends the stream.
The checksums are computed on the source from the bytes it read, which is what the
written volume is verified against. The script keeps to Python 3.5 (old servers).
A record is written once the next region has been read (its checksum is computed in a
thread meanwhile), so a short read still sends everything read before it.
"""

from __future__ import annotations

import hashlib
import struct

HEADER = struct.Struct("!cBQII32s")
REGION = 1024 * 1024
ZERO_DIGEST = hashlib.sha256(bytes(REGION)).digest()
FLAG_ZLIB = 1

SCRIPT = r'''
import hashlib, os, struct, sys, time, zlib
from concurrent.futures import ThreadPoolExecutor
HEADER = struct.Struct("!cBQII32s")
device, offset, length, region, level, bwlimit = sys.argv[1], int(sys.argv[2]), \
    int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
out = sys.stdout.buffer
try:  # a bigger pipe to sshd: reading the next region overlaps sending the last one
    import fcntl
    fcntl.fcntl(1, 1031, 1 << 20)  # F_SETPIPE_SZ
except Exception:
    pass
fd = os.open(device, os.O_RDONLY)
size = os.lseek(fd, 0, os.SEEK_END)
# What was read leaves the source's page cache again: a server copied while it runs keeps
# its own cache, and the pages are reused at once instead of new ones being taken.
drop = hasattr(os, "posix_fadvise")  # and read ahead
if drop:
    os.posix_fadvise(fd, offset, 0, os.POSIX_FADV_SEQUENTIAL)
end = size if length <= 0 else min(size, offset + length)
zero = bytes(region)
SAMPLE = 32768
PACKET = 256 * 1024
zero_packet = bytes(PACKET)
backoff = untried = 0
zero_digest = hashlib.sha256(zero).digest()
# A region's checksum is computed in a thread (hashlib lets go of the GIL) while the one
# before it is written to sshd: its record waits one region for its checksum.
hasher = ThreadPoolExecutor(1)
def checksum(data):
    return hashlib.sha256(data).digest()
def emit(record):
    kind, flags, at, count, payload, digest = record
    if not isinstance(digest, bytes):
        digest = digest.result()
    out.write(HEADER.pack(kind, flags, at, count, len(payload), digest))
    if payload:
        out.write(payload)
started, sent, queued = time.time(), 0, None
pos = offset
while pos < end:
    want = min(region, end - pos)
    if drop:  # the next regions are read ahead while this one is checked and sent
        os.posix_fadvise(fd, pos + want, 4 * region, os.POSIX_FADV_WILLNEED)
    data = os.pread(fd, want, pos)
    if len(data) != want:
        if queued is not None:
            emit(queued)
        out.flush()
        sys.stderr.write("short read at %d: %d of %d bytes\n" % (pos, len(data), want))
        sys.exit(3)
    if data == zero[:want]:
        record = (b"Z", 0, pos, want, b"",
                  zero_digest if want == region else hashlib.sha256(data).digest())
    else:
        flags, payload = 0, data
        # A sample first: incompressible data (already compressed, encrypted) is sent as
        # it is without paying for a whole region's compression. After incompressible
        # samples the next regions are not even sampled (1, 2, 4 ... 16 of them), unless
        # one holds a zero packet (those compress well and stay sparse on the volume).
        holey = level > 0 and any(data.startswith(zero_packet, at)
                                  for at in range(0, want, PACKET))
        if level <= 0:
            pass
        elif untried > 0 and not holey:
            untried -= 1
        elif holey or len(zlib.compress(data[:SAMPLE], 1)) < min(SAMPLE, want) * 0.8:
            packed = zlib.compress(data, level)
            if len(packed) < want * 0.9:
                flags, payload = 1, packed
            backoff = untried = 0
        else:
            backoff = min(16, backoff * 2 or 1)
            untried = backoff
        record = (b"D", flags, pos, want, payload, hasher.submit(checksum, data))
        sent += len(payload)
    if queued is not None:
        emit(queued)
    queued = record
    if bwlimit > 0:
        ahead = sent / float(bwlimit) - (time.time() - started)
        if ahead > 0:
            out.flush()
            time.sleep(ahead)
    if drop:
        os.posix_fadvise(fd, pos, want, os.POSIX_FADV_DONTNEED)
    pos += want
if queued is not None:
    emit(queued)
out.write(HEADER.pack(b"E", 0, pos, 0, 0, bytes(32)))
out.flush()
hasher.shutdown()
'''


def command(device: str, offset: int, length: int = 0, *, level: int = 1,
            bwlimit: int = 0) -> list[str]:
    """The remote command line; SCRIPT goes to its stdin."""
    return ["python3", "-", device, str(offset), str(length), str(REGION), str(level),
            str(bwlimit)]
