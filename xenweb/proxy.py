"""Who is the client, and over which scheme did it come: decided once, for HTTP and
websockets alike, before Django, Channels or django-axes look at a request.

``X-Forwarded-For`` and ``X-Forwarded-Proto`` are believed only when the peer that opened
the TCP connection is a configured proxy (``FORWARDED_ALLOW_IPS``: addresses or networks;
empty in the embedded setup, loopback where the appliance's nginx is in front). Then the
scope's ``client`` becomes the first address, from the right, that is not itself a proxy,
and its ``scheme`` follows the proxy's ``X-Forwarded-Proto``. From anyone else the headers
change nothing. Either way every forwarding header is removed from the scope, so no later
code (Django's SECURE_PROXY_SSL_HEADER, a client-IP helper) can be tempted to read a forged
one: ``REMOTE_ADDR`` and ``request.scheme`` are the only truth downstream.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable
from typing import Any

from django.core.exceptions import ImproperlyConfigured

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

FORWARDING_HEADERS = frozenset({
    b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host", b"x-forwarded-port",
    b"x-forwarded-scheme", b"x-forwarded-ssl", b"x-real-ip", b"forwarded",
})


def parse_networks(entries: Iterable[str]) -> tuple[Network, ...]:
    """``FORWARDED_ALLOW_IPS`` entries (``127.0.0.1``, ``::1``, ``10.0.0.0/24``) as networks;
    anything else is a configuration error, said at startup."""
    networks = []
    for entry in entries:
        text = entry.strip()
        if not text:
            continue
        try:
            networks.append(ipaddress.ip_network(text, strict=False))
        except ValueError:
            raise ImproperlyConfigured(
                f"FORWARDED_ALLOW_IPS: {text!r} is not an IP address or network (wildcards "
                "are not accepted: name the proxies that set X-Forwarded-For)") from None
    return tuple(networks)


def _address(text: str) -> Address | None:
    """An address as proxies write it in X-Forwarded-For: ``1.2.3.4``, ``1.2.3.4:5678``,
    ``::1``, ``[::1]:5678``; None for anything else."""
    text = text.strip()
    if text.startswith("["):
        text = text[1:].split("]", 1)[0]
    elif text.count(":") == 1:
        text = text.split(":", 1)[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def is_trusted(host: str | None, networks: tuple[Network, ...]) -> bool:
    if not host or not networks:
        return False
    address = _address(host)
    return address is not None and any(address in network for network in networks)


def forwarded_client(values: list[str], networks: tuple[Network, ...]) -> str | None:
    """The client address in X-Forwarded-For: walking from the right (the hop the trusted
    proxy appended), the first address that is not a trusted proxy. None when the header
    holds nothing usable there."""
    hops = [hop for value in values for hop in value.split(",")]
    for hop in reversed(hops):
        address = _address(hop)
        if address is None:
            return None  # garbage where an address should be: keep the proxy's peer
        if not any(address in network for network in networks):
            return str(address)
    address = _address(hops[0]) if hops else None
    return str(address) if address is not None else None


def forwarded_scheme(values: list[str], websocket: bool) -> str | None:
    """The scheme a trusted proxy names in X-Forwarded-Proto (its last value), as the
    scope spells it for the protocol; None for anything but http/https."""
    if not values:
        return None
    proto = values[-1].split(",")[-1].strip().lower()
    if proto not in {"http", "https"}:
        return None
    if websocket:
        return "wss" if proto == "https" else "ws"
    return proto


@functools.lru_cache(maxsize=8)
def _networks(entries: tuple[str, ...]) -> tuple[Network, ...]:
    return parse_networks(entries)


class TrustedProxyMiddleware:
    """ASGI middleware: see the module's docstring. ``trusted`` defaults to the setting
    ``FORWARDED_ALLOW_IPS`` (read per request, parsed once)."""

    def __init__(self, app: Any, trusted: Iterable[str] | None = None) -> None:
        self.app = app
        self._trusted = tuple(trusted) if trusted is not None else None

    @property
    def networks(self) -> tuple[Network, ...]:
        if self._trusted is not None:
            return _networks(self._trusted)
        from django.conf import settings

        return _networks(tuple(getattr(settings, "FORWARDED_ALLOW_IPS", ())))

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        scope = dict(scope)
        headers = list(scope.get("headers") or [])
        forwarded_for = [v.decode("latin-1") for k, v in headers if k.lower() == b"x-forwarded-for"]
        forwarded_proto = [v.decode("latin-1") for k, v in headers
                           if k.lower() == b"x-forwarded-proto"]
        scope["headers"] = [(k, v) for k, v in headers if k.lower() not in FORWARDING_HEADERS]
        client = scope.get("client")
        if client and is_trusted(client[0], self.networks):
            scheme = forwarded_scheme(forwarded_proto, scope["type"] == "websocket")
            if scheme is not None:
                scope["scheme"] = scheme
            if forwarded_for:
                address = forwarded_client(forwarded_for, self.networks)
                if address is not None:
                    scope["client"] = (address, 0)
        await self.app(scope, receive, send)
