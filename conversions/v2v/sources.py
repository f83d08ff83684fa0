"""The import area: `$XENWEB_DATA_DIR/import/`, where sources are named by relative path.

A source path that is absolute, contains `..`, or resolves (through a symlink) outside
the area is refused; so is anything but a regular file.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path, PurePosixPath

from django.conf import settings

from conversions.v2v.proposal import ImportRefused


def import_root() -> Path:
    root = Path(settings.DATA_DIR) / "import"
    root.mkdir(parents=True, exist_ok=True)
    return root.resolve()


def work_dir() -> Path:
    """Scratch space of running imports (rebuilt XVA disks): beside, not inside, the area."""
    path = Path(settings.DATA_DIR) / "import-work"
    path.mkdir(parents=True, exist_ok=True)
    return path.resolve()


MAX_SOURCE_LENGTH = 1024


def resolve_source(source: str) -> Path:
    """The regular file `source` names inside the import area, or ImportRefused."""
    if not isinstance(source, str) or not source.strip():
        raise ImportRefused("Name the source file by its path inside the import area.")
    if "\x00" in source or "\\" in source:
        raise ImportRefused("The source path contains characters paths cannot hold.")
    relative = PurePosixPath(source)
    if relative.is_absolute() or ".." in relative.parts:
        raise ImportRefused(f"'{source}' is not a path inside the import area (absolute "
                            "paths and '..' are refused).")
    if len(source) > MAX_SOURCE_LENGTH or any(len(part) > 255 for part in relative.parts):
        raise ImportRefused(f"The source path is too long (at most {MAX_SOURCE_LENGTH} "
                            "characters, 255 per name).")
    root = import_root()
    try:
        path = (root / relative).resolve()
    except OSError as exc:
        raise ImportRefused(f"'{source}' cannot be resolved: {exc.strerror}.") from exc
    if not path.is_relative_to(root):
        raise ImportRefused(f"'{source}' leads outside the import area.")
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError as exc:
        raise ImportRefused(f"There is no file '{source}' in the import area.") from exc
    except OSError as exc:
        raise ImportRefused(f"'{source}' cannot be read: {exc.strerror}.") from exc
    if not stat.S_ISREG(mode):
        raise ImportRefused(f"'{source}' is not a regular file.")
    return path


def sibling(directory: Path, name: str, *, what: str) -> Path:
    """A file another file names (a VMDK extent, a VMX disk) in the same directory.

    Only a bare file name is accepted: no slashes, no `..`, not absolute, no symlink.
    """
    if (not name or "/" in name or "\\" in name or name in (".", "..") or "\x00" in name
            or name.startswith("~")):
        raise ImportRefused(f"The {what} '{name}' is not a plain file name in the same "
                            "directory: paths and '..' are refused.")
    path = directory / name
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError as exc:
        raise ImportRefused(f"The {what} '{name}' is missing beside its descriptor.") from exc
    if not stat.S_ISREG(mode):
        raise ImportRefused(f"The {what} '{name}' is not a regular file (links and devices "
                            "are refused).")
    if not path.resolve().is_relative_to(import_root()):
        raise ImportRefused(f"The {what} '{name}' lies outside the import area.")
    return path
