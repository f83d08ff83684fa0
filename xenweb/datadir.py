"""The appliance's data directory: database, secret key, setup token, keys, uploads.

Everything generated at run time lives here, never in the source tree.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent


def data_dir() -> Path:
    path = Path(os.environ.get("XENWEB_DATA_DIR", BASE_DIR / "var")).resolve()
    path.mkdir(parents=True, exist_ok=True, mode=0o750)
    return path


def write_private(path: Path, text: str) -> None:
    """Write a file only its owner can read, atomically."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.replace(tmp, path)


def secret_key(directory: Path) -> str:
    """The generated secret key, created on first use and kept in the data dir."""
    path = directory / "secret-key"
    if not path.exists():
        write_private(path, secrets.token_urlsafe(64))
    return path.read_text().strip()
