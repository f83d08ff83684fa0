"""The appliance's own SSH key pair, used for xen+ssh:// hosts (and later P2V)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from django.conf import settings

KEY_NAME = "id_ed25519"
SSH_KEYGEN = "/usr/bin/ssh-keygen"


def key_dir() -> Path:
    path = settings.DATA_DIR / "ssh"
    path.mkdir(mode=0o700, exist_ok=True)
    return path


def ensure_keypair(comment: str = "xenweb-appliance") -> Path:
    """Generate the key pair once; returns the private key's path."""
    private = key_dir() / KEY_NAME
    if not private.exists():
        subprocess.run(
            [SSH_KEYGEN, "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(private)],
            check=True, capture_output=True, timeout=30,
        )
    return private


def public_key() -> str:
    return ensure_keypair().with_suffix(".pub").read_text().strip()
