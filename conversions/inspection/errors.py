"""The one error inspection raises: its message says what is wrong with the image."""

from __future__ import annotations


class InspectionError(Exception):
    """The image cannot be inspected (damaged, hostile, unreadable); `str()` says why."""


class DamagedImage(InspectionError):
    """The partition table or a file system is damaged, or built to trip a reader: the
    image is refused, where other inspection errors only mean it says nothing."""


class UnreadableFile(InspectionError):
    """One file cannot be read (too large, a loop of symbolic links, a hostile name); the
    file system itself may be fine."""
