"""Content Security Policy: a per-request nonce for the few inline scripts, everything else
from the appliance itself. Django 5.2 has no CSP support of its own (6.0 adds it)."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse

HEADER = "Content-Security-Policy"


def policy(nonce: str) -> str:
    directives = {
        "default-src": "'self'",
        "script-src": f"'self' 'nonce-{nonce}'",
        # Bootstrap, htmx and xterm.js set style attributes; styles cannot run code.
        "style-src": "'self' 'unsafe-inline'",
        "img-src": "'self' data:",
        "font-src": "'self' data:",
        "connect-src": "'self'",  # CSP level 3: same-origin ws:/wss: included
        "object-src": "'none'",
        "base-uri": "'self'",
        "form-action": "'self'",
        "frame-ancestors": "'none'",
    }
    text = "; ".join(f"{name} {value}" for name, value in directives.items())
    if settings.SECURE:
        text += "; upgrade-insecure-requests"
    return text


class ContentSecurityPolicyMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        nonce = secrets.token_urlsafe(16)
        request.csp_nonce = nonce  # type: ignore[attr-defined]
        response = self.get_response(request)
        response.headers.setdefault(HEADER, policy(nonce))
        return response


def client_ip(request: HttpRequest) -> str:
    """The address django-axes counts failures for: the peer, or behind a configured proxy
    the client it names (xenweb.proxy has resolved that, and removed the header, before
    Django runs). X-Forwarded-For is never read here."""
    return request.META.get("REMOTE_ADDR", "")


def csp_nonce(request: HttpRequest) -> dict[str, Any]:
    """Template context processor: `<script nonce="{{ csp_nonce }}">`."""
    return {"csp_nonce": getattr(request, "csp_nonce", "")}
