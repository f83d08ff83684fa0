"""System checks for settings that only make sense together."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core import checks


@checks.register("security", deploy=True)
def secure_needs_a_trusted_proxy(
    app_configs: Any = None, **kwargs: Any
) -> list[checks.CheckMessage]:
    """With XENWEB_SECURE the app redirects plain HTTP to HTTPS; it learns that a request
    came over HTTPS only from a trusted proxy's X-Forwarded-Proto (xenweb.proxy)."""
    if settings.SECURE and not settings.FORWARDED_ALLOW_IPS:
        return [checks.Warning(
            "XENWEB_SECURE is on but FORWARDED_ALLOW_IPS names no proxy: every request is "
            "seen as plain HTTP and redirected to HTTPS for ever.",
            hint="Set FORWARDED_ALLOW_IPS to the address of the TLS proxy in front "
                 "(127.0.0.1,::1 for the appliance's nginx).",
            id="xenweb.W001",
        )]
    return []
