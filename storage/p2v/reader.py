"""The disk reader the source runs (``python3 - DEVICE OFFSET LENGTH REGION LEVEL BWLIMIT``).

It is sent over the SSH channel on stdin, so nothing is installed on the source. It opens
the device read-only and walks it in regions; for each region it sends one record:

    header  !cBQII32s  kind, flags, offset, length, payload length, sha256 of the region
    payload            the region's bytes (zlib-compressed when flags & 1), 'D' records only

``Z`` records stand for an all-zero region (no payload: the destination stays sparse),
``D`` records carry data, and one ``E`` record (offset = where it stopped) ends the stream.
The checksums are computed on the source from the bytes it read, which is what the
written volume is verified against. The script keeps to Python 3.5 (old servers).
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
zero_digest = hashlib.sha256(zero).digest()
started, sent = time.time(), 0
pos = offset
while pos < end:
    want = min(region, end - pos)
    if drop:  # the next regions are read ahead while this one is checked and sent
        os.posix_fadvise(fd, pos + want, 4 * region, os.POSIX_FADV_WILLNEED)
    data = os.pread(fd, want, pos)
    if len(data) != want:
        sys.stderr.write("short read at %d: %d of %d bytes\n" % (pos, len(data), want))
        sys.exit(3)
    if data == zero[:want]:
        digest = zero_digest if want == region else hashlib.sha256(data).digest()
        out.write(HEADER.pack(b"Z", 0, pos, want, 0, digest))
    else:
        digest = hashlib.sha256(data).digest()
        flags, payload = 0, data
        # A sample first: incompressible data (already compressed, encrypted) is sent as
        # it is without paying for a whole region's compression.
        if level > 0 and len(zlib.compress(data[:SAMPLE], 1)) < min(SAMPLE, want) * 0.8:
            packed = zlib.compress(data, level)
            if len(packed) < want * 0.9:
                flags, payload = 1, packed
        out.write(HEADER.pack(b"D", flags, pos, want, len(payload), digest))
        out.write(payload)
        sent += len(payload)
        if bwlimit > 0:
            ahead = sent / float(bwlimit) - (time.time() - started)
            if ahead > 0:
                out.flush()
                time.sleep(ahead)
    if drop:
        os.posix_fadvise(fd, pos, want, os.POSIX_FADV_DONTNEED)
    pos += want
out.write(HEADER.pack(b"E", 0, pos, 0, 0, bytes(32)))
out.flush()
'''


def command(device: str, offset: int, length: int = 0, *, level: int = 1,
            bwlimit: int = 0) -> list[str]:
    """The remote command line; SCRIPT goes to its stdin."""
    return ["python3", "-", device, str(offset), str(length), str(REGION), str(level),
            str(bwlimit)]
