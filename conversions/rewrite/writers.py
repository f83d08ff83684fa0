"""Replacing one file inside a raw disk image, in user space like the readers
(conversions.inspection): ext2/3/4 with ``debugfs -w`` on ``image?offset=N`` (the file's
mode and owner kept), FAT with ``mcopy -o`` on ``image@@N``. Every writer runs under
prlimit and a timeout, and what was written is read back and compared.
"""

from __future__ import annotations

import os
import posixpath
import re
import struct
import tempfile

from conversions.inspection.disk import Disk
from conversions.inspection.filesystems import PROBE_BYTES, open_fs, probe
from conversions.inspection.run import ReaderFailed, run_bounded
from conversions.rewrite.errors import ConversionFailed

EXT_NEEDS_RECOVERY = 0x4  # s_feature_incompat: the journal holds unreplayed changes
MAX_FILE = 1024**2


def _checked_name(path: str) -> tuple[str, str]:
    directory, name = posixpath.split(path)
    if not path.startswith("/") or not name or any(c in path for c in '"\n\r\\'):
        raise ConversionFailed(f"Refused to write the path {path!r}.")
    return directory or "/", name


def _bounded(argv: list[str], what: str, env: dict[str, str] | None = None) -> str:
    """The tool's stdout; ConversionFailed when it fails or hits a bound."""
    try:
        done = run_bounded(argv, max_output=MAX_FILE, env=env)
    except ReaderFailed as exc:
        raise ConversionFailed(f"{what}: {exc}") from exc
    if done.returncode != 0 or done.truncated:
        last = done.stderr.strip().splitlines()[-1:] or [f"exit status {done.returncode}"]
        raise ConversionFailed(f"{what}: {argv[0]} failed: {last[0]}")
    return done.stdout.decode("utf-8", "replace")


def check_ext_clean(image: str, offset: int, label: str) -> None:
    """Refuse an ext file system whose journal still holds changes: writing beside them
    would be undone (or worse) when the guest replays it."""
    with open(image, "rb") as disk:
        disk.seek(offset + 1024 + 0x60)
        incompat = struct.unpack("<I", disk.read(4))[0]
    if incompat & EXT_NEEDS_RECOVERY:
        raise ConversionFailed(
            f"{label}: the file system was not shut down cleanly (its journal needs "
            "recovery). Shut the source machine down cleanly and export it again.")


def _ext_attributes(image: str, offset: int, path: str, label: str) -> tuple[str, str, str]:
    """(mode, uid, gid) of the regular file `path`, as debugfs prints them."""
    text = _bounded(["debugfs", "-c", "-R", f'stat "{path}"', f"{image}?offset={offset}"],
                    f"{label}: reading {path}")
    kind = re.search(r"Type: (\w+)", text)
    mode = re.search(r"Mode:\s+(\d+)", text)
    owner = re.search(r"User:\s+(\d+)\s+Group:\s+(\d+)", text)
    if not (kind and mode and owner) or kind[1] != "regular":
        raise ConversionFailed(f"{label}: {path} is not a regular file: not rewritten.")
    return mode[1], owner[1], owner[2]


def write_ext(image: str, offset: int, path: str, data: bytes, label: str) -> None:
    """Replace the regular file `path` of the ext file system at `offset` with `data`."""
    directory, name = _checked_name(path)
    check_ext_clean(image, offset, label)
    mode, uid, gid = _ext_attributes(image, offset, path, label)
    with tempfile.TemporaryDirectory(prefix="xenweb-rewrite-") as work:
        local = os.path.join(work, "content")
        with open(local, "wb") as out:
            out.write(data)
        script = os.path.join(work, "commands")
        with open(script, "w") as out:
            out.write(f'cd "{directory}"\nrm "{name}"\nwrite "{local}" "{name}"\n'
                      f'sif "{name}" mode 0100{int(mode, 8) & 0o7777:04o}\n'
                      f'sif "{name}" uid {uid}\nsif "{name}" gid {gid}\n')
        _bounded(["debugfs", "-w", "-f", script, f"{image}?offset={offset}"],
                 f"{label}: writing {path}")
    _bounded(["e2fsck", "-fn", f"{image}?offset={offset}"],
             f"{label}: checking the file system after writing {path}")


def write_fat(image: str, offset: int, path: str, data: bytes, label: str) -> None:
    """Replace the file `path` of the FAT file system at `offset` with `data`."""
    _checked_name(path)
    with tempfile.TemporaryDirectory(prefix="xenweb-rewrite-") as work:
        local = os.path.join(work, "content")
        with open(local, "wb") as out:
            out.write(data)
        _bounded(["mcopy", "-o", "-i", f"{image}@@{offset}", local, f"::{path}"],
                 f"{label}: writing {path}",
                 env={"MTOOLS_SKIP_CHECK": "1", "PATH": "/usr/bin:/bin", "LC_ALL": "C"})


def replace_file(image: str, start: int, size: int, path: str, data: bytes,
                 label: str) -> None:
    """Write `data` as the file `path` of the partition at `start` of the raw `image`,
    then read it back through inspection's reader."""
    with Disk(image, "raw") as disk:
        found = probe(disk.read(start, PROBE_BYTES))
    if found.kind.startswith("ext"):
        write_ext(image, start, path, data, label)
    elif found.kind == "vfat":
        write_fat(image, start, path, data, label)
    else:
        raise ConversionFailed(f"{label}: cannot write to a {found.kind or 'unknown'} file "
                               "system.")
    with Disk(image, "raw") as disk:
        back = open_fs(disk, start, size, found, label).read(path, MAX_FILE)
    if back != data:
        raise ConversionFailed(f"{label}: {path} reads back different from what was "
                               "written.")
