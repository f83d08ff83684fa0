"""M2: a websocket opens only from the appliance's own origin (scheme, host and port) or a
configured trusted origin. The handshakes go through the real ASGI application (proxy
handling, origin check, session authentication, the events consumer on the real Redis)
with an administrator's valid session cookie, so only the Origin decides."""

from __future__ import annotations

from typing import Any

import pytest
from channels.testing import ApplicationCommunicator
from django.test import Client, override_settings

from xenweb.asgi import application

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.asyncio]

PATH = "/ws/events/"


async def handshake(client: Client, *, host: str | None, origin: str | list[str] | None,
                    scheme: str = "ws", peer: str = "127.0.0.1",
                    extra: list[tuple[bytes, bytes]] | None = None) -> bool:
    """True when the websocket was accepted."""
    headers = [(b"cookie", f"sessionid={client.cookies['sessionid'].value}".encode())]
    if host is not None:
        headers.append((b"host", host.encode()))
    for value in [origin] if isinstance(origin, str) else origin or []:
        headers.append((b"origin", value.encode()))
    headers += extra or []
    scope = {"type": "websocket", "path": PATH, "query_string": b"", "headers": headers,
             "subprotocols": [], "scheme": scheme, "client": (peer, 40000),
             "server": ("127.0.0.1", 8000)}
    communicator = ApplicationCommunicator(application, scope)
    await communicator.send_input({"type": "websocket.connect"})
    answer = await communicator.receive_output(10)
    accepted = answer["type"] == "websocket.accept"
    await communicator.send_input({"type": "websocket.disconnect", "code": 1000})
    await communicator.wait(10)
    return accepted


HOST = "127.0.0.1:8000"


async def test_the_own_origin_is_accepted(admin_client_tx: Client) -> None:
    assert await handshake(admin_client_tx, host=HOST, origin="http://127.0.0.1:8000")


@pytest.mark.parametrize("origin", [
    "http://127.0.0.1:8001",  # another port of the same host name: the finding
    "http://127.0.0.1:80",  # the default port is another port too
    "http://127.0.0.1",
    "https://127.0.0.1:8000",  # another scheme
    "null",  # sandboxed frames, file: pages
    "",
    "http://evil.example:8000",
    "http://127.0.0.1.evil.example:8000",
    "http://user@127.0.0.1:8000",  # userinfo: no browser sends it, refuse rather than strip
    "http://user:pw@127.0.0.1:8000",
    "http://127.0.0.1:8000/",  # a path
    "http://127.0.0.1:8000/x",
    "http://127.0.0.1:8000?x",
    "ws://127.0.0.1:8000",  # no browser origin has a websocket scheme
    "ftp://127.0.0.1:8000",
    "http://127.0.0.1:08000x",
    "http://127.0.0.1:99999",
    "127.0.0.1:8000",
    "http:// 127.0.0.1:8000",
    "http://127.0.0.1:8000 ",
])
async def test_foreign_origins_are_refused(admin_client_tx: Client, origin: str) -> None:
    assert not await handshake(admin_client_tx, host=HOST, origin=origin)


async def test_a_missing_or_doubled_origin_is_refused(admin_client_tx: Client) -> None:
    assert not await handshake(admin_client_tx, host=HOST, origin=None)
    assert not await handshake(admin_client_tx, host=HOST,
                               origin=["http://127.0.0.1:8000", "http://evil.example"])
    assert not await handshake(admin_client_tx, host=HOST,
                               origin=["http://127.0.0.1:8000", "http://127.0.0.1:8000"])


async def test_the_host_header_must_be_single_and_allowed(admin_client_tx: Client) -> None:
    """The page's own origin is that of the Host it asked for, and that Host must be one of
    ALLOWED_HOSTS (a rebinding DNS name pointing at the appliance is not)."""
    assert not await handshake(admin_client_tx, host=None, origin="http://127.0.0.1:8000")
    assert not await handshake(admin_client_tx, host="evil.example:8000",
                               origin="http://evil.example:8000")
    assert not await handshake(admin_client_tx, host="user@127.0.0.1:8000",
                               origin="http://127.0.0.1:8000")
    assert not await handshake(admin_client_tx, host=HOST, origin="http://127.0.0.1:8000",
                               extra=[(b"host", b"evil.example")])


@pytest.mark.parametrize(("host", "origin", "accepted"), [
    # Case: host names are case-insensitive (browsers send lower case anyway).
    ("localhost", "http://LOCALHOST", True),
    ("LocalHost:8000", "http://localhost:8000", True),
    # Default ports, explicit or implicit, on either side.
    ("localhost", "http://localhost:80", True),
    ("localhost:80", "http://localhost", True),
    ("localhost", "http://localhost:443", False),
    # A trailing dot is another origin for the browser: only an exact match counts.
    ("localhost", "http://localhost.", False),
    ("localhost.", "http://localhost", False),
    ("localhost.", "http://localhost.", True),
    # IPv6 literals, also written differently.
    ("[::1]:8000", "http://[::1]:8000", True),
    ("[::1]:8000", "http://[0:0:0:0:0:0:0:1]:8000", True),
    ("[::1]:8000", "http://[::2]:8000", False),
    ("[::1]:8000", "http://[::1]:8001", False),
    ("[::1]:8000", "http://::1:8000", False),
    ("[::1]", "http://[::1]", True),
])
async def test_origin_variants(admin_client_tx: Client, host: str, origin: str,
                               accepted: bool) -> None:
    assert await handshake(admin_client_tx, host=host, origin=origin) is accepted


async def test_wss_wants_an_https_origin(admin_client_tx: Client) -> None:
    for origin, accepted in (("https://localhost", True), ("https://localhost:443", True),
                             ("http://localhost", False), ("http://localhost:443", False),
                             ("https://localhost:8443", False)):
        got = await handshake(admin_client_tx, host="localhost", origin=origin, scheme="wss")
        assert got is accepted, origin


async def test_behind_a_trusted_proxy_the_scheme_is_the_proxys(admin_client_tx: Client) -> None:
    """nginx terminates TLS and talks ws:// to the app: X-Forwarded-Proto from a configured
    proxy makes the own origin https://..., from anyone else it changes nothing."""
    proto = [(b"x-forwarded-proto", b"https")]
    with override_settings(FORWARDED_ALLOW_IPS=["127.0.0.1", "::1"]):
        assert await handshake(admin_client_tx, host="localhost", origin="https://localhost",
                               extra=proto)
        assert not await handshake(admin_client_tx, host="localhost",
                                   origin="http://localhost", extra=proto)
        # The same headers from a peer that is not a configured proxy.
        assert not await handshake(admin_client_tx, host="localhost", peer="192.0.2.10",
                                   origin="https://localhost", extra=proto)
        assert await handshake(admin_client_tx, host="localhost", peer="192.0.2.10",
                               origin="http://localhost", extra=proto)
    # Without configured proxies, loopback is not trusted either.
    assert not await handshake(admin_client_tx, host="localhost", origin="https://localhost",
                               extra=proto)


async def test_trusted_origins_are_exact(admin_client_tx: Client) -> None:
    trusted = ["https://xenweb.example.org:8443", "https://*.corp.example"]
    cases: list[tuple[str, bool]] = [
        ("https://xenweb.example.org:8443", True),
        ("http://xenweb.example.org:8443", False),
        ("https://xenweb.example.org", False),
        ("https://a.corp.example", True),
        ("https://a.b.corp.example:443", True),
        ("https://corp.example", True),
        ("https://evilcorp.example", False),
        ("https://a.corp.example.evil", False),
        ("https://a.corp.example:8443", False),
        ("http://a.corp.example", False),
    ]
    with override_settings(CSRF_TRUSTED_ORIGINS=trusted):
        for origin, accepted in cases:
            got = await handshake(admin_client_tx, host=HOST, origin=origin)
            assert got is accepted, origin


async def test_refused_before_the_consumer_runs(admin_client_tx: Client) -> None:
    """A refused handshake never reaches the session or the consumer: the same request
    without a cookie is refused the same way (HTTP 403 from the server)."""
    scope: dict[str, Any] = {
        "type": "websocket", "path": PATH, "query_string": b"", "subprotocols": [],
        "headers": [(b"host", b"127.0.0.1:8000"), (b"origin", b"http://127.0.0.1:8001")],
        "scheme": "ws", "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 8000),
    }
    communicator = ApplicationCommunicator(application, scope)
    await communicator.send_input({"type": "websocket.connect"})
    answer = await communicator.receive_output(10)
    assert answer == {"type": "websocket.close"}
    await communicator.send_input({"type": "websocket.disconnect", "code": 1006})
    await communicator.wait(10)
