"""Websocket Origin check: a websocket opens only from a page of the appliance itself.

Browsers send cookies with a websocket handshake whatever page opens it, so a page on
another origin (another port or scheme of the same host name included: each is its own
origin) could otherwise drive a console with an administrator's session. The handshake is
accepted only when its Origin header is exactly the request's own origin, i.e. the scheme
the request came over (``ws`` → ``http``, ``wss`` → ``https``; behind a trusted proxy the
scheme it names, see xenweb.proxy), the Host header's name and its port (default ports
made explicit), or one of ``CSRF_TRUSTED_ORIGINS`` (the same list Django checks form posts
against, ``https://*.example.org`` wildcards included). The Host header must be one of
``ALLOWED_HOSTS`` too. A missing, ``null``, malformed or foreign Origin is refused before
the consumer runs (HTTP 403).
"""

from __future__ import annotations

import ipaddress
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from channels.security.websocket import WebsocketDenier
from django.conf import settings
from django.http.request import split_domain_port, validate_host

logger = logging.getLogger(__name__)

DEFAULT_PORTS = {"http": 80, "https": 443}
WS_TO_HTTP = {"ws": "http", "wss": "https"}
HOST_NAME = re.compile(r"^[a-z0-9_.-]+$")


@dataclass(frozen=True)
class Origin:
    scheme: str
    host: str  # lower case; an IPv6 literal compressed, without brackets
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"


def parse_origin(scheme: str, netloc: str) -> Origin | None:
    """``scheme://netloc`` as an Origin, or None when it is not a plain origin (userinfo,
    a path, a bad port, characters no host name has)."""
    if scheme not in DEFAULT_PORTS or not netloc or netloc != netloc.strip() \
            or any(ch in netloc for ch in "@/?#\\ \t"):
        return None
    try:
        parts = urlsplit(f"{scheme}://{netloc}")
        port = parts.port
    except ValueError:
        return None
    host = parts.hostname or ""
    if not host:
        return None
    if netloc.startswith("["):
        try:
            host = ipaddress.IPv6Address(host).compressed
        except ValueError:
            return None
    elif not HOST_NAME.match(host):
        return None
    return Origin(scheme, host, port if port is not None else DEFAULT_PORTS[scheme])


def parse_origin_header(value: str) -> Origin | None:
    """An Origin header as browsers send it: ``scheme://host[:port]``, nothing more."""
    scheme, sep, rest = value.partition("://")
    if not sep:
        return None
    return parse_origin(scheme.lower(), rest)


def own_origin(scope: dict[str, Any]) -> Origin | None:
    """The origin the handshake was made to: its scheme and its (single) Host header."""
    hosts = [v for k, v in scope.get("headers") or [] if k.lower() == b"host"]
    if len(hosts) != 1:
        return None
    try:
        host = hosts[0].decode("ascii")
    except UnicodeDecodeError:
        return None
    domain, _port = split_domain_port(host)
    if not domain or not validate_host(domain, settings.ALLOWED_HOSTS):
        return None
    scheme = WS_TO_HTTP.get(scope.get("scheme") or "ws")
    return parse_origin(scheme, host) if scheme else None


@dataclass(frozen=True)
class TrustedOrigin:
    origin: Origin
    subdomains: bool  # from ``scheme://*.domain``: the domain and every name below it

    def matches(self, origin: Origin) -> bool:
        mine = self.origin
        if (origin.scheme, origin.port) != (mine.scheme, mine.port):
            return False
        if self.subdomains:
            return origin.host == mine.host or origin.host.endswith("." + mine.host)
        return origin.host == mine.host


def trusted_origins(entries: Iterable[str]) -> list[TrustedOrigin]:
    trusted = []
    for entry in entries:
        scheme, sep, netloc = entry.strip().partition("://")
        wildcard = netloc.startswith("*.")
        origin = parse_origin(scheme.lower(), netloc[2:] if wildcard else netloc) if sep \
            else None
        if origin is None:
            logger.warning("CSRF_TRUSTED_ORIGINS: %r is not an origin; ignored for websockets",
                           entry)
            continue
        trusted.append(TrustedOrigin(origin, wildcard))
    return trusted


def origin_allowed(scope: dict[str, Any], trusted: Iterable[str] | None = None) -> bool:
    values = [v for k, v in scope.get("headers") or [] if k.lower() == b"origin"]
    if len(values) != 1:
        return False
    try:
        origin = parse_origin_header(values[0].decode("ascii"))
    except UnicodeDecodeError:
        return False
    mine = own_origin(scope)
    if origin is None or mine is None:
        return False
    if origin == mine:
        return True
    entries = settings.CSRF_TRUSTED_ORIGINS if trusted is None else trusted
    return any(entry.matches(origin) for entry in trusted_origins(entries))


class SameOriginValidator:
    """ASGI middleware for websockets: refuses a handshake whose Origin is not the
    appliance's own (see the module's docstring)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        if scope["type"] == "websocket" and not origin_allowed(scope):
            origin = dict(scope.get("headers") or []).get(b"origin", b"(none)")
            logger.warning("websocket %s refused: Origin %s is not this appliance's origin "
                           "(add it to CSRF_TRUSTED_ORIGINS if it is)", scope.get("path"),
                           origin.decode("latin-1"))
            denier = WebsocketDenier()
            return await denier(scope, receive, send)
        return await self.app(scope, receive, send)
