"""Volume bytes in the volume's file (storage.volume_io), without a host: which volumes take
that way, and that the file reader and writer keep holes and report errors in the callers'
terms. The libvirt-stream way is tested on lab hosts (test_volume_transfer_live)."""

from __future__ import annotations

import os
import resource
import signal
import threading
from pathlib import Path

import pytest

from hosts.models import Host
from hosts.virt import VirtError
from storage import volume_io
from storage.uploads import gathered

PACKET = volume_io.STREAM_PACKET


def host(uri: str, *, files_local: bool = False) -> Host:
    return Host(name="h", uri=uri, files_local=files_local)


def test_only_regular_files_on_this_machine_take_the_direct_way(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(volume_io.IO_ENV, raising=False)
    image = tmp_path / "disk.img"
    image.write_bytes(b"x")
    assert volume_io.direct_path(host("xen:///system"), str(image)) == str(image)
    assert volume_io.direct_path(host("qemu+tcp://127.1.0.3/system", files_local=True),
                                 str(image)) == str(image)
    # A remote host's path names a file over there, not here.
    assert volume_io.direct_path(host("xen+ssh://root@dom0.example/system"), str(image)) is None
    # Block devices (LVM volumes) and missing files go through libvirt.
    assert volume_io.direct_path(host("xen:///system"), "/dev/null") is None
    assert volume_io.direct_path(host("xen:///system"), str(tmp_path / "gone")) is None
    # libvirt's test driver (the demo host) only pretends to have volumes.
    assert volume_io.direct_path(host("test:///default"), str(image)) is None
    monkeypatch.setenv(volume_io.IO_ENV, "libvirt")
    assert volume_io.direct_path(host("xen:///system"), str(image)) is None


def test_sparse_upload_leaves_zero_packets_as_holes(tmp_path: Path) -> None:
    target = tmp_path / "vol.img"
    size = 8 * PACKET
    with open(target, "wb") as f:
        f.truncate(size)
    data = os.urandom(PACKET)
    body = data + bytes(4 * PACKET) + data + bytes(PACKET)
    with volume_io.FileUpload(str(target), sparse=True) as upload:
        upload.write(body[:3 * PACKET])
        upload.write(body[3 * PACKET:])
        upload.hole(PACKET)
    assert upload.sent == size
    assert target.read_bytes() == body + bytes(PACKET)
    assert target.stat().st_blocks * 512 <= 3 * PACKET  # two data packets and a little


def test_splice_from_a_pipe_writes_at_the_position_and_counts_a_short_end(
        tmp_path: Path) -> None:
    target = tmp_path / "vol.img"
    with open(target, "wb") as f:
        f.truncate(4 * PACKET)
    data = os.urandom(2 * PACKET)
    read_end, write_end = os.pipe()
    try:
        upload = volume_io.FileUpload(str(target), offset=PACKET, sparse=True)
        writer = threading.Thread(target=lambda: (os.write(write_end, data),
                                                  os.close(write_end)))
        writer.start()
        assert upload.splice_from(read_end, PACKET) == PACKET
        assert upload.splice_from(read_end, 2 * PACKET) == PACKET  # the writer ended
        writer.join()
        upload.finish()
    finally:
        os.close(read_end)
    assert upload.sent == 2 * PACKET
    assert target.read_bytes() == bytes(PACKET) + data + bytes(PACKET)


def test_dense_upload_writes_zeros_too(tmp_path: Path) -> None:
    target = tmp_path / "vol.img"
    target.write_bytes(b"\xff" * 2 * PACKET)  # stale data that must become zeros
    with volume_io.FileUpload(str(target), offset=PACKET) as upload:
        upload.write(bytes(PACKET), holes=False)
    assert target.read_bytes() == b"\xff" * PACKET + bytes(PACKET)


def test_replacing_upload_overwrites_in_place_punching_out_old_bytes(tmp_path: Path) -> None:
    target = tmp_path / "vol.img"
    target.write_bytes(os.urandom(10 * PACKET))  # an earlier image, longer than the new one
    inode = target.stat().st_ino
    data = os.urandom(PACKET)
    body = data + bytes(3 * PACKET) + data + bytes(PACKET)
    with volume_io.FileUpload(str(target), replace=True) as upload:
        upload.write(body[:2 * PACKET])
        upload.write(body[2 * PACKET:])
    assert target.read_bytes() == body  # old bytes zero where the upload had zeros, and cut
    assert target.stat().st_ino == inode
    assert target.stat().st_blocks * 512 <= 3 * PACKET  # the zero runs are holes again


def test_a_broken_off_replacing_upload_is_not_cut(tmp_path: Path) -> None:
    target = tmp_path / "vol.img"
    target.write_bytes(b"\xff" * 4 * PACKET)
    with pytest.raises(RuntimeError), volume_io.FileUpload(str(target), replace=True) as up:
        up.write(b"\x01" * PACKET)
        raise RuntimeError("the client went away")
    assert target.stat().st_size == 4 * PACKET  # the caller empties it (storage.uploads)


def test_punch_hole_zeroes_a_range(tmp_path: Path) -> None:
    target = tmp_path / "vol.img"
    target.write_bytes(b"\xff" * 3 * PACKET)
    fd = os.open(target, os.O_RDWR)
    try:
        volume_io.punch_hole(fd, PACKET, PACKET)
    finally:
        os.close(fd)
    assert target.read_bytes() == b"\xff" * PACKET + bytes(PACKET) + b"\xff" * PACKET


def test_download_reads_the_asked_range_in_chunks(tmp_path: Path) -> None:
    source = tmp_path / "vol.img"
    data = os.urandom(3 * PACKET + 17)
    source.write_bytes(data)
    reader = volume_io.FileDownload(str(source), offset=5, length=2 * PACKET, chunk=PACKET)
    chunks = list(reader)
    assert b"".join(chunks) == data[5:5 + 2 * PACKET] and len(chunks) == 2
    assert reader.received == 2 * PACKET
    # A file shorter than asked ends early; the caller compares the count.
    short = volume_io.FileDownload(str(source), offset=3 * PACKET, length=PACKET, chunk=PACKET)
    assert b"".join(short) == data[3 * PACKET:] and short.received == 17


def test_io_errors_come_out_as_virt_errors(tmp_path: Path) -> None:
    with pytest.raises(VirtError, match="Could not download the volume"):
        volume_io.FileDownload(str(tmp_path / "gone"), offset=0, length=1, chunk=1)
    with pytest.raises(VirtError, match="Could not upload into the volume"):
        volume_io.FileUpload(str(tmp_path / "gone"))
    # Direct I/O takes regular files only (a device is libvirt's, through its streams).
    with pytest.raises(VirtError, match="not a regular file"):
        volume_io.FileUpload("/dev/full")
    # A write error (here: the file size limit) is a VirtError too.
    target = tmp_path / "limited"
    target.write_bytes(b"")
    upload = volume_io.FileUpload(str(target))
    limits = resource.getrlimit(resource.RLIMIT_FSIZE)
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (4, limits[1]))
    try:
        with pytest.raises(VirtError, match="Could not upload into the volume"):
            upload.write(b"data" * 4)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, limits)
        signal.signal(signal.SIGXFSZ, handler)


def test_pieces_for_a_libvirt_stream_are_gathered_in_blocks() -> None:
    pieces = [b"a" * 300, b"b" * 300, b"c" * 500, b"d" * 2000, b"e" * 10]
    blocks = list(gathered(pieces, 1000))
    assert b"".join(blocks) == b"".join(pieces)
    assert [len(b) for b in blocks] == [1100, 2000, 10]
    assert blocks[1] is pieces[3]  # a big piece on its own goes as it is
