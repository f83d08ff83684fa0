"""The one error inspection raises: its message says what is wrong with the image."""

from __future__ import annotations


class InspectionError(Exception):
    """The image cannot be inspected (damaged, hostile, unreadable); `str()` says why."""


class UnreadableFile(InspectionError):
    """One file cannot be read (too large, a loop of symbolic links, a hostile name); the
    file system itself may be fine."""
