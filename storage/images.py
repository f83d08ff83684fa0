"""Checking uploaded disk images with qemu-img before anything uses them.

An image may point outside itself (a backing file or an external data file such as
``/etc/shadow`` or a host block device) or pretend to be raw while being qcow2 (so that
whoever later probes it follows its backing chain). Both are refused. The real format is
detected on a copy of the image's first MiB (the only place qemu-img is allowed to
probe); the written file itself is only ever opened with the declared format (``-f``).
"""

from __future__ import annotations

import json
import subprocess
import tempfile
from dataclasses import dataclass
from typing import Any

from storage.errors import ImageRefused

HEADER_BYTES = 1024 * 1024
QEMU_IMG_TIMEOUT = 60


@dataclass(frozen=True)
class ImageFacts:
    format: str
    virtual_size: int
    backing_file: str
    data_file: str


def _qemu_img_info(path: str, fmt: str | None) -> dict[str, Any]:
    argv = ["qemu-img", "info", "--output=json"]
    if fmt is not None:
        argv += ["-f", fmt]
    argv.append(path)
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=QEMU_IMG_TIMEOUT,
                              check=False)
    except subprocess.TimeoutExpired as exc:
        raise ImageRefused("qemu-img took too long to read the image; it was refused.") \
            from exc
    if done.returncode != 0:
        reason = (done.stderr.strip().splitlines() or ["unreadable image"])[-1]
        raise ImageRefused(f"The image is not a valid {fmt or 'disk'} image: {reason}")
    return json.loads(done.stdout)


def _facts(info: dict[str, Any]) -> ImageFacts:
    specific = (info.get("format-specific") or {}).get("data") or {}
    return ImageFacts(
        format=info.get("format", ""), virtual_size=int(info.get("virtual-size", 0)),
        backing_file=info.get("backing-filename") or info.get("full-backing-filename") or "",
        data_file=specific.get("data-file") or "",
    )


def _refuse_external(facts: ImageFacts) -> None:
    if facts.backing_file:
        raise ImageRefused(f"The image has a backing file ({facts.backing_file}): only "
                           "self-contained images can be uploaded.")
    if facts.data_file:
        raise ImageRefused(f"The image keeps its data in an external file ({facts.data_file}):"
                           " only self-contained images can be uploaded.")


def detect_format(header: bytes) -> ImageFacts:
    """What the first MiB of an image really is (qemu-img probes this copy only)."""
    with tempfile.NamedTemporaryFile(prefix="xenweb-header-", suffix=".img") as copy:
        copy.write(header[:HEADER_BYTES])
        copy.flush()
        return _facts(_qemu_img_info(copy.name, None))


def check_image(header: bytes, declared: str, written_path: str | None = None) -> ImageFacts:
    """Refuse (ImageRefused) an image that is not self-contained or not `declared`.

    `written_path`, when the app can read the written volume (local and lab hosts), is
    checked as a whole, opened with the declared format only.
    """
    probed = detect_format(header)
    if probed.format != declared:
        raise ImageRefused(f"The image was declared {declared} but is {probed.format}: "
                           "upload it into a volume of that format.")
    _refuse_external(probed)
    if written_path is None:
        return probed
    facts = _facts(_qemu_img_info(written_path, declared))
    _refuse_external(facts)
    return facts
