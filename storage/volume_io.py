"""Where a volume's bytes are read and written: straight in its file when this machine
holds that file (the dom0 the appliance runs on, ``Host.files_local`` hosts), through a
libvirt stream otherwise (remote hosts, block devices).

The appliance usually serves the volumes of the dom0 it runs on. Sending their bytes
through libvirtd as well costs another process and two more copies of every byte on the
same CPUs (measured on the 2-core lab machine: uploads at 0.42 of `virsh vol-upload`'s
throughput, downloads at 0.52). V2V imports already let qemu-img write such volume files
(conversions.v2v.import_job). libvirt still creates, sizes and deletes the volumes and
refreshes the pools: only the bytes take the short way, and only where this process may
read and write the file (the installed appliance runs as the user ``xenweb``, its dom0's
pool files are root's: there the bytes go through libvirt). ``XENWEB_VOLUME_IO=libvirt``
sends them through libvirt everywhere.

Only regular files take the short way: a hole left in a block device (an LVM volume) would
read as whatever the device held before, while libvirt writes it as zeros there.
"""

from __future__ import annotations

import ctypes
import errno
import os
import stat
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import Protocol

from hosts.models import Host
from hosts.virt import VirtError, VirtTarget
from hosts.virt import volumes as virt
from hosts.virt.volumes import STREAM_PACKET
from storage.access import holds_files

IO_ENV = "XENWEB_VOLUME_IO"
_ZEROS = bytes(STREAM_PACKET)


class Writer(Protocol):
    sent: int

    def write(self, data: bytes | memoryview, *, holes: bool = True) -> None: ...
    def hole(self, length: int) -> None: ...
    def finish(self) -> None: ...
    def abort(self) -> None: ...
    def __enter__(self) -> Writer: ...
    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None: ...


class Reader(Protocol):
    received: int

    def __iter__(self) -> Iterator[bytes]: ...
    def abort(self) -> None: ...


def direct_file(uri: str, path: str, *, files_local: bool) -> str | None:
    """The volume's file, when this machine holds it (storage.access.holds_files) as a
    regular file."""
    if (os.environ.get(IO_ENV, "") == "libvirt" or not path
            or not holds_files(uri, files_local=files_local)):
        return None
    try:
        mode = os.lstat(path).st_mode
        if stat.S_ISLNK(mode):
            if stat.S_ISREG(os.stat(path).st_mode):
                # libvirt would follow it as well: never read or write through a link.
                raise VirtError(f"The volume {path} is a symbolic link: the app does not "
                                "read or write a file through a link.")
            return None  # an LVM or iSCSI device link: libvirt's streams
    except OSError:
        return None
    if not stat.S_ISREG(mode):
        return None
    # The appliance runs as its own user while libvirtd (root) owns the pool files: then
    # the bytes go through libvirt after all.
    return path if may_read_and_write(path) else None


def may_read_and_write(path: str) -> bool:
    """Whether this process may read and write the file (the short way needs both)."""
    return os.access(path, os.R_OK | os.W_OK)


def open_file(path: str, flags: int, action: str) -> int:
    """The volume file `path` opened with `flags`, never through a symlink: O_NOFOLLOW for
    its own name, and the file opened must be a regular file directly in the (resolved)
    directory its path names (no link anywhere leads elsewhere)."""
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NOCTTY)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise VirtError(f"The volume {path} is a symbolic link: the app does not "
                            f"{action} a file through a link.") from exc
        raise _failed(exc, action, path) from exc
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise VirtError(f"The volume {path} is not a regular file: cannot {action} it "
                            "directly.")
        opened = os.readlink(f"/proc/self/fd/{fd}")
        directory, name = os.path.split(path)
        if opened != os.path.join(os.path.realpath(directory), name):
            raise VirtError(f"The volume {path} leads to {opened}, out of its pool's "
                            f"directory: the app does not {action} it.")
    except BaseException:
        os.close(fd)
        raise
    return fd


def direct_path(host: Host, path: str) -> str | None:
    return direct_file(host.uri, path, files_local=host.files_local)


def _failed(exc: OSError, action: str, path: str) -> VirtError:
    """An I/O error in the callers' terms (they handle the libvirt path's VirtError)."""
    return VirtError(f"Could not {action} the volume {path}: {exc.strerror or exc}.")


class FileUpload:
    """VolumeUpload's interface, writing the volume's file (at `offset`) itself. With
    `sparse`, all-zero packets are skipped (the file was freshly created and reads as zeros
    there), as libvirt's sparse stream would leave them.

    With `replace`, the writes replace the whole file in place, as `virsh vol-upload`
    does: the skipped packets are punched out (the old bytes there must read as zeros) and
    the file ends where the writes end. Deleting and re-creating a big volume first cost
    more than a tenth of a 512 MiB upload (freeing its blocks and cached pages)."""

    def __init__(self, path: str, *, offset: int = 0, sparse: bool = False,
                 replace: bool = False) -> None:
        self.path = path
        self.sparse = sparse or replace
        self.replace = replace
        self.sent = 0
        self._position = offset
        self._hole_start: int | None = None  # where the skipped bytes not yet punched begin
        self._fd: int | None = open_file(path, os.O_WRONLY, "upload into")

    def _pwrite(self, view: memoryview) -> None:
        if not view:
            return
        self._punch()
        if self._fd is None:
            raise VirtError(f"The upload into {self.path} was closed.")
        try:
            while view:
                written = os.pwrite(self._fd, view, self._position)
                view = view[written:]
                self._position += written
        except OSError as exc:
            self._close()
            raise _failed(exc, "upload into", self.path) from exc

    def _skip(self, length: int) -> None:
        if self.replace and self._hole_start is None:
            self._hole_start = self._position
        self._position += length

    def _punch(self) -> None:
        """Zeros where bytes were skipped since the last write (replace mode only)."""
        start, self._hole_start = self._hole_start, None
        if start is None or self._fd is None or start >= self._position:
            return
        try:
            punch_hole(self._fd, start, self._position - start)
        except OSError as exc:
            self._close()
            raise _failed(exc, "upload into", self.path) from exc

    def write(self, data: bytes | memoryview, *, holes: bool = True) -> None:
        view = memoryview(data)
        if not (self.sparse and holes):
            self._pwrite(view)
        else:
            run_start = 0
            for start in range(0, len(view), STREAM_PACKET):
                packet = view[start:start + STREAM_PACKET]
                if _ZEROS.startswith(packet):  # a memcmp
                    self._pwrite(view[run_start:start])
                    self._skip(len(packet))
                    run_start = start + len(packet)
            self._pwrite(view[run_start:])
        self.sent += len(view)

    def splice_from(self, pipe: int, length: int) -> int:
        """Up to `length` bytes from the pipe `pipe`, moved by the kernel (splice) without
        passing through this process; the count moved (fewer: the pipe's writer ended).
        All of them are written, zeros included."""
        self._punch()
        if self._fd is None:
            raise VirtError(f"The upload into {self.path} was closed.")
        moved = 0
        try:
            while moved < length:
                count = os.splice(pipe, self._fd, length - moved, offset_dst=self._position)
                if count == 0:
                    break
                moved += count
                self._position += count
        except OSError as exc:
            self._close()
            raise _failed(exc, "upload into", self.path) from exc
        self.sent += moved
        return moved

    def hole(self, length: int) -> None:
        if not self.sparse:
            raise ValueError("holes need a sparse upload")
        self._skip(length)
        self.sent += length

    def finish(self) -> None:
        if self.replace and self._fd is not None:
            self._punch()
            try:
                os.ftruncate(self._fd, self._position)
            except OSError as exc:
                self._close()
                raise _failed(exc, "upload into", self.path) from exc
        self._close()

    def abort(self) -> None:
        self._close()

    def _close(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)

    def __enter__(self) -> FileUpload:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if kind is None:
            self.finish()
        else:
            self.abort()


_FALLOC_FL_KEEP_SIZE = 0x01
_FALLOC_FL_PUNCH_HOLE = 0x02
_libc = ctypes.CDLL(None, use_errno=True)
_libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]


def punch_hole(fd: int, offset: int, length: int) -> None:
    """Deallocate a range of a file (it reads as zeros); zeros are written where the file
    system cannot punch holes."""
    mode = _FALLOC_FL_PUNCH_HOLE | _FALLOC_FL_KEEP_SIZE
    if _libc.fallocate(fd, mode, offset, length) == 0:
        return
    code = ctypes.get_errno()
    if code not in (errno.EOPNOTSUPP, errno.ENOSYS):
        raise OSError(code, os.strerror(code))
    end = min(offset + length, os.fstat(fd).st_size)
    while offset < end:
        offset += os.pwrite(fd, _ZEROS[:end - offset], offset)


class FileDownload:
    """VolumeDownload's interface, reading `length` bytes of the volume's file from
    `offset` in chunks of `chunk` bytes (fewer at the end of the file)."""

    def __init__(self, path: str, *, offset: int, length: int, chunk: int) -> None:
        self.path = path
        self.received = 0
        self._offset = offset
        self._length = length
        self._chunk = chunk
        self._fd: int | None = open_file(path, os.O_RDONLY, "download")
        os.posix_fadvise(self._fd, offset, length, os.POSIX_FADV_SEQUENTIAL)

    def __iter__(self) -> Iterator[bytes]:
        try:
            while self._fd is not None and self.received < self._length:
                size = min(self._chunk, self._length - self.received)
                try:
                    data = os.pread(self._fd, size, self._offset + self.received)
                except OSError as exc:
                    raise _failed(exc, "download", self.path) from exc
                if not data:
                    break
                self.received += len(data)
                yield data
        finally:
            self.abort()

    def abort(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)


def writer(host: VirtTarget, path: str, *, files_local: bool, sparse: bool,
           offset: int = 0, length: int = 0) -> Writer:
    """Where bytes go into a volume from `offset` (`length` of them at most, 0: to the end).
    `host` and `files_local`: the host's ``Host.virt_target`` and ``Host.files_local``."""
    local = direct_file(host.uri, path, files_local=files_local)
    if local:
        return FileUpload(local, offset=offset, sparse=sparse)
    return virt.VolumeUpload(host, path, offset=offset, length=length, sparse=sparse)


def reader(host: VirtTarget, path: str, *, files_local: bool, offset: int,
           length: int, chunk: int, file_chunk: int | None = None) -> Reader:
    """Where `length` bytes of a volume from `offset` come from: chunks of at most `chunk`
    bytes from a libvirt stream, of `file_chunk` (default `chunk`) bytes from the file."""
    local = direct_file(host.uri, path, files_local=files_local)
    if local:
        return FileDownload(local, offset=offset, length=length, chunk=file_chunk or chunk)
    return virt.VolumeDownload(host, path, offset=offset, length=length, chunk=chunk)


def replacing_writer(host: Host, path: str, *, make_empty: Callable[[], None]) -> Writer:
    """Where an upload replaces the whole content of a volume: its file, overwritten in
    place (FileUpload's `replace`), or a libvirt sparse stream into the volume that
    `make_empty` re-creates empty first (a stream cannot punch out the old bytes)."""
    local = direct_path(host, path)
    if local:
        return FileUpload(local, replace=True)
    make_empty()
    return virt.VolumeUpload(host.virt_target, path, offset=0, length=0, sparse=True)


def open_reader(host: Host, path: str, *, offset: int, length: int, chunk: int,
                file_chunk: int) -> Reader:
    """Where a download reads `length` bytes from `offset`."""
    return reader(host.virt_target, path, files_local=host.files_local, offset=offset,
                  length=length, chunk=chunk, file_chunk=file_chunk)
