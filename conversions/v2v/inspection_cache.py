"""The inspection of an import-area source, remembered between the preview, the start of an
import and its job (the web process and a worker: the cache's Redis), so that a source is
inspected once and not three times.

A result is found again only for the very same files: the key holds, for the image and each
of its extents, the device, inode, size and modification and change times, which any write
or replacement changes (ctime cannot be set back by a user). Only inspections that found a
guest are kept; refusals and uninspectable images are worked out afresh each time.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path

from django.core.cache import cache

from conversions.inspection.result import Inspection
from conversions.v2v import qemu

VERSION = 1  # bump when the inspector's findings change meaning
TIMEOUT = 3600
FIELDS = [f.name for f in dataclasses.fields(Inspection)]


def _files(path: Path, fmt: str) -> list[Path]:
    """The image and, for a VMDK descriptor, the extent files it names."""
    files = [path]
    if fmt == "vmdk":
        files += [Path(extent) for extent in qemu.info(qemu.Image(str(path), fmt)).extents
                  if extent and Path(extent) != path]
    return files


def key(path: Path, fmt: str) -> str | None:
    """The cache key of the inspection of `path` as it is now; None when it cannot be
    told (a file vanished, an unreadable descriptor)."""
    try:
        stats = [(str(file), s.st_dev, s.st_ino, s.st_size, s.st_mtime_ns, s.st_ctime_ns)
                 for file in _files(path, fmt) for s in [os.stat(file)]]
    except (OSError, qemu.QemuImgError):
        return None
    digest = hashlib.sha256(json.dumps([VERSION, FIELDS, fmt, stats]).encode()).hexdigest()
    return f"v2v-inspection:{digest}"


def remembered(path: Path, fmt: str,
               inspect: Callable[[], Inspection | None]) -> Inspection | None:
    """The inspection of `path` (of format `fmt`) from the cache, else `inspect()`, kept
    when it found a guest and the files did not change while it ran."""
    before = key(path, fmt)
    if before is not None:
        found = cache.get(before)
        if isinstance(found, Inspection):
            return found
    found = inspect()
    if found is not None and before is not None and key(path, fmt) == before:
        cache.set(before, found, TIMEOUT)
    return found
