from __future__ import annotations

import logging

from django.conf import settings

from xenweb.appliance.setup_state import setup_done
from xenweb.appliance.token import announce, ensure_setup_token

log = logging.getLogger("xenweb.setup")


def announce_setup_token_if_needed() -> str | None:
    """At start-up: if setup is not done, make sure a token exists and print it."""
    try:
        if setup_done():
            return None
        existed = settings.SETUP_TOKEN_FILE.exists()
        token = ensure_setup_token()
        if existed:
            announce(token)
        return token
    except Exception as exc:  # never keep the server from starting
        log.error("could not prepare the setup token: %s", exc)
        return None
