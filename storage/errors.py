"""Storage errors the API answers with 409 (or 422 for refused images), message in `detail`."""

from __future__ import annotations


class StorageError(Exception):
    """An action on a pool or volume was refused or failed; `str()` is for humans."""


class ImageRefused(StorageError):
    """An uploaded image is unsafe or not what was declared; its content was discarded."""
