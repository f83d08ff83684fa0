"""Where the lab keeps its state and its downloads.

- ``lab_dir()``: built artefacts and lab state, inside the data dir (``DATA_DIR/lab``).
- ``cache_dir()``: downloaded files (Debian packages…), outside the clone so that CI
  and later runs reuse them: ``$XENWEB_CACHE_DIR`` or ``~/.cache/xenweb``.
"""

from __future__ import annotations

import os
from pathlib import Path

from django.conf import settings


def lab_dir() -> Path:
    """``DATA_DIR/lab``, created if missing."""
    path = Path(settings.DATA_DIR) / "lab"
    path.mkdir(parents=True, exist_ok=True)
    return path


def cache_dir() -> Path:
    """``$XENWEB_CACHE_DIR`` or ``~/.cache/xenweb``, created if missing."""
    configured = os.environ.get("XENWEB_CACHE_DIR", "").strip()
    path = Path(configured).expanduser() if configured else Path.home() / ".cache" / "xenweb"
    path.mkdir(parents=True, exist_ok=True)
    return path
