"""The lab's exceptions."""

from __future__ import annotations


class LabError(RuntimeError):
    """A lab host could not be started or stopped; the message says why."""


class LabUnavailable(LabError):
    """The machine cannot run lab hosts at all; the message says what is missing."""
