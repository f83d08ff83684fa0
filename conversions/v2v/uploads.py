"""Files uploaded into the import area through the API, streamed to disk in chunks.

The name is a relative path with the import area's rules (no `..`, not absolute, no
hidden names); an existing file is never overwritten; the bytes land in a hidden
temporary file that is renamed into place only once complete.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import stat
import uuid
from pathlib import Path, PurePosixPath
from typing import IO, Any

from conversions.v2v.inspect import relative
from conversions.v2v.proposal import ImportRefused
from conversions.v2v.sources import import_root
from xenweb.audit.services import record

CHUNK = 1024 * 1024
PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 _.+-]{0,200}$")
SPARE_BYTES = 1024**3  # keep this much free beside the upload


def upload_target(name: str) -> Path:
    relative_path = PurePosixPath(name)
    if relative_path.is_absolute() or not relative_path.parts or len(relative_path.parts) > 4:
        raise ImportRefused("Name the file by a relative path of at most 4 parts.")
    for part in relative_path.parts:
        if not PART.match(part):
            raise ImportRefused(f"'{part}' is not an allowed file or folder name (letters, "
                                "digits, space and _ . + -, not starting with a dot).")
    root = import_root()
    target = root.joinpath(*relative_path.parts)
    _check_folders(root, relative_path.parts[:-1], name)
    if os.path.lexists(target):
        raise ImportRefused(f"'{name}' exists already in the import area.")
    return target


def _check_folders(root: Path, parts: tuple[str, ...], name: str, *,
                   create: bool = False) -> None:
    """Every folder on the way is a real directory inside the area (never a symlink, a
    file or a device), created one level at a time with `create`."""
    folder = root
    for part in parts:
        folder = folder / part
        if create:
            with contextlib.suppress(FileExistsError):
                os.mkdir(folder, 0o750)
        try:
            mode = os.lstat(folder).st_mode
        except FileNotFoundError:
            if create:
                raise ImportRefused(f"'{name}': the folder '{part}' vanished.") from None
            return  # made when the upload starts
        if not stat.S_ISDIR(mode):
            raise ImportRefused(f"'{name}' leads through '{part}', which is not a folder of "
                                "the import area (links are not followed).")
    if not folder.resolve().is_relative_to(root):
        raise ImportRefused(f"'{name}' leads outside the import area.")


def receive(name: str, body: IO[bytes], length: int, *, user: Any,
            request: Any = None) -> dict[str, Any]:
    try:
        target = upload_target(name)
        _check_folders(import_root(), PurePosixPath(name).parts[:-1], name, create=True)
        if shutil.disk_usage(target.parent).free < length + SPARE_BYTES:
            raise ImportRefused("The import area has not enough free space for this file.")
        partial = target.parent / f".upload-{uuid.uuid4().hex}"
        try:
            done = 0
            with open(partial, "xb") as out:
                while done < length:
                    chunk = body.read(min(CHUNK, length - done))
                    if not chunk:
                        raise ImportRefused(f"The upload ended after {done} of {length} bytes;"
                                            " nothing was kept.")
                    out.write(chunk)
                    done += len(chunk)
            os.link(partial, target)  # fails if the name appeared meanwhile
        finally:
            partial.unlink(missing_ok=True)
    except (ImportRefused, OSError) as exc:
        record("import.upload", user=user, request=request, target_type="import",
               target_label=name[:200], result="failed", message=str(exc))
        if isinstance(exc, ImportRefused):
            raise
        raise ImportRefused(f"The file could not be stored: {exc}") from exc
    record("import.upload", user=user, request=request, target_type="import",
           target_label=relative(target), bytes=length)
    return {"source": relative(target), "bytes": length}
