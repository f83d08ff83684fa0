"""The one-time setup token that guards the first-boot wizard.

Whoever reaches a fresh appliance over the network first must not be able to take
it over: the wizard asks for this token, which only someone with access to the
server's log or data dir can read.
"""

from __future__ import annotations

import logging
import secrets

from django.conf import settings

from xenweb.datadir import write_private

log = logging.getLogger("xenweb.setup")


def ensure_setup_token() -> str:
    """Return the setup token, creating it (and logging it) on first call."""
    path = settings.SETUP_TOKEN_FILE
    if path.exists():
        token = path.read_text().strip()
        if token:
            return token
    token = secrets.token_urlsafe(24)
    write_private(path, token + "\n")
    announce(token)
    return token


def announce(token: str) -> None:
    log.warning(
        "First-boot setup is not complete. Open /setup/ and enter the setup token: %s "
        "(also stored in %s)",
        token,
        settings.SETUP_TOKEN_FILE,
    )


def check_setup_token(candidate: str) -> bool:
    path = settings.SETUP_TOKEN_FILE
    if not path.exists():
        return False
    expected = path.read_text().strip()
    return bool(expected) and secrets.compare_digest(expected, candidate.strip())


def delete_setup_token() -> None:
    settings.SETUP_TOKEN_FILE.unlink(missing_ok=True)
