"""Reading untrusted tar archives (OVA, XVA) with every header bounded.

Python's tarfile reads some header records whole into memory before any code sees the
member: GNU long names and long link names, pax extended headers, and GNU sparse maps
(old-style extension blocks, pax 0.x/1.0 maps). A few hundred KiB of gzip make such a
record hundreds of MiB. `BoundedTarInfo` refuses those records above small caps (a
name is at most 4 KiB, a pax header 64 KiB) and refuses sparse members altogether (no
OVA or XVA has them), before tarfile reads them. Pass it as ``tarinfo=`` to
``tarfile.open``.

What a member *is* (regular file, link, device, its name) is checked by the callers;
`check_member` holds those rules for both.
"""

from __future__ import annotations

import tarfile
from typing import Any

MAX_LONG_NAME = 4096
MAX_PAX_HEADER = 64 * 1024


class ArchiveRefused(tarfile.TarError):
    """A header of the archive is out of bounds; `str()` says why."""


class BoundedTarInfo(tarfile.TarInfo):
    def _proc_member(self, tarfile_: tarfile.TarFile) -> Any:
        if self.type in (tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK):
            if self.size > MAX_LONG_NAME:
                raise ArchiveRefused(f"a long-name record of {self.size} bytes (at most "
                                     f"{MAX_LONG_NAME})")
        elif self.type in (tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.SOLARIS_XHDTYPE):
            if self.size > MAX_PAX_HEADER:
                raise ArchiveRefused(f"a pax header of {self.size} bytes (at most "
                                     f"{MAX_PAX_HEADER})")
        elif self.type == tarfile.GNUTYPE_SPARSE:
            raise ArchiveRefused(f"the sparse member '{self.name}'")
        return super()._proc_member(tarfile_)  # type: ignore[misc]

    def _proc_gnusparse_00(self, *args: Any) -> Any:
        raise ArchiveRefused(f"the sparse member '{self.name}'")

    def _proc_gnusparse_01(self, *args: Any) -> Any:
        raise ArchiveRefused(f"the sparse member '{self.name}'")

    def _proc_gnusparse_10(self, *args: Any) -> Any:
        raise ArchiveRefused(f"the sparse member '{self.name}'")


def member_kind(member: tarfile.TarInfo) -> str:
    """"" for a regular file, else what it is (for the refusal)."""
    if member.isreg() and member.type != tarfile.GNUTYPE_SPARSE:
        return ""
    if member.issym() or member.islnk():
        return "link"
    if member.ischr() or member.isblk():
        return "device"
    if member.isfifo():
        return "FIFO"
    if member.isdir():
        return "directory"
    return "non-file"
