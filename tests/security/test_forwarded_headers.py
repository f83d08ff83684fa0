"""L2: X-Forwarded-For / X-Forwarded-Proto are believed only from configured proxies
(FORWARDED_ALLOW_IPS), and no code below the proxy handling can read a forged one.

The login lockout runs against the real web process (uvicorn as the Procfile starts it,
tests.live.processes.WebServer): the finding was a locked-out account logging in from
127.0.0.1 with a forged X-Forwarded-For."""

from __future__ import annotations

import http.client
import os
import re
from collections.abc import Iterator
from typing import Any

import pytest
from django.test import Client, override_settings

from tests.conftest import PASSWORD
from tests.live.processes import WebServer
from xenweb.proxy import TrustedProxyMiddleware, parse_networks
from xenweb.security import client_ip

# --- the middleware on real scopes -----------------------------------------------------------


async def _resolve(peer: str, headers: list[tuple[bytes, bytes]], trusted: list[str],
                   kind: str = "http") -> dict[str, Any]:
    seen: dict[str, Any] = {}

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        seen.update(scope)

    scope = {"type": kind, "scheme": "ws" if kind == "websocket" else "http",
             "client": (peer, 5000), "headers": headers, "path": "/"}
    await TrustedProxyMiddleware(app, trusted)(scope, None, None)
    return seen


def _h(**headers: str) -> list[tuple[bytes, bytes]]:
    return [(name.replace("_", "-").encode(), value.encode()) for name, value in headers.items()]


FORGED = _h(x_forwarded_for="198.51.100.7", x_forwarded_proto="https", x_real_ip="198.51.100.8",
            forwarded="for=198.51.100.9;proto=https", x_forwarded_host="evil.example")


@pytest.mark.asyncio
@pytest.mark.parametrize("trusted", [[], ["10.0.0.0/8"], ["::1"]])
async def test_headers_from_an_untrusted_peer_change_nothing_and_are_removed(
    trusted: list[str],
) -> None:
    for kind in ("http", "websocket"):
        scope = await _resolve("127.0.0.1", FORGED, trusted, kind)
        assert scope["client"] == ("127.0.0.1", 5000)
        assert scope["scheme"] == ("ws" if kind == "websocket" else "http")
        assert scope["headers"] == []  # nothing left for Django to misread


@pytest.mark.asyncio
async def test_a_configured_proxy_names_the_client_and_scheme() -> None:
    nginx = ["127.0.0.1", "::1"]
    scope = await _resolve("127.0.0.1", _h(x_forwarded_for="203.0.113.5",
                                           x_forwarded_proto="https"), nginx)
    assert scope["client"] == ("203.0.113.5", 0) and scope["scheme"] == "https"
    scope = await _resolve("::1", _h(x_forwarded_for="203.0.113.5", x_forwarded_proto="https"),
                           nginx, "websocket")
    assert scope["client"] == ("203.0.113.5", 0) and scope["scheme"] == "wss"
    assert scope["headers"] == []
    # nginx appends the address it saw: what the client wrote before it is not believed.
    scope = await _resolve("127.0.0.1", _h(x_forwarded_for="198.51.100.7, 203.0.113.5"), nginx)
    assert scope["client"][0] == "203.0.113.5"
    # Several trusted proxies in a row are skipped, from the right.
    scope = await _resolve("127.0.0.1", _h(x_forwarded_for="198.51.100.7, 203.0.113.5, "
                                                           "10.1.2.3"), [*nginx, "10.0.0.0/8"])
    assert scope["client"][0] == "203.0.113.5"
    # Ports and brackets as proxies write them.
    scope = await _resolve("127.0.0.1", _h(x_forwarded_for="[2001:db8::5]:443"), nginx)
    assert scope["client"][0] == "2001:db8::5"
    scope = await _resolve("127.0.0.1", _h(x_forwarded_for="203.0.113.5:1234"), nginx)
    assert scope["client"][0] == "203.0.113.5"
    # Garbage where the proxy's hop should be, or a scheme that is none: the peer stays.
    scope = await _resolve("127.0.0.1", _h(x_forwarded_for="unknown", x_forwarded_proto="gopher"),
                           nginx)
    assert scope["client"] == ("127.0.0.1", 5000) and scope["scheme"] == "http"
    # The address of a trusted peer written as IPv4-mapped IPv6 is the same peer.
    scope = await _resolve("::ffff:127.0.0.1", _h(x_forwarded_for="203.0.113.5"), nginx)
    assert scope["client"][0] == "203.0.113.5"


def test_wildcards_and_garbage_are_refused_as_proxies() -> None:
    from django.core.exceptions import ImproperlyConfigured

    for entry in ("*", "localhost", "127.0.0.1/99", "nginx"):
        with pytest.raises(ImproperlyConfigured, match="FORWARDED_ALLOW_IPS"):
            parse_networks([entry])
    assert len(parse_networks(["127.0.0.1", " ::1 ", "10.0.0.0/8", ""])) == 3


@pytest.mark.django_db
def test_client_ip_never_reads_the_header() -> None:
    """django-axes' address: REMOTE_ADDR only, also with XENWEB_SECURE (which used to trust
    the last X-Forwarded-For hop from anyone)."""
    for secure in (False, True):
        with override_settings(SECURE=secure):
            request = Client().get("/accounts/login/", HTTP_X_FORWARDED_FOR="198.51.100.7",
                                   REMOTE_ADDR="192.0.2.1").wsgi_request
            assert client_ip(request) == "192.0.2.1"


# --- the real web process: the login lockout ----------------------------------------------


class Browser:
    """Just enough of a browser for the login form: cookies and the CSRF token."""

    def __init__(self, server: WebServer) -> None:
        self.server = server
        self.cookies: dict[str, str] = {}

    def request(self, method: str, path: str, body: str | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, str]:
        conn = http.client.HTTPConnection("127.0.0.1", self.server.port, timeout=60)
        sent = dict(headers or {})
        if self.cookies:
            sent["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        if body is not None:
            sent["Content-Type"] = "application/x-www-form-urlencoded"
        conn.request(method, path, body=body, headers=sent)
        answer = conn.getresponse()
        for header, value in answer.getheaders():
            if header.lower() == "set-cookie":
                name, _, rest = value.partition("=")
                self.cookies[name] = rest.split(";", 1)[0]
        text = answer.read().decode(errors="replace")
        conn.close()
        return answer.status, text

    def login(self, username: str, password: str, **headers: str) -> int:
        status, page = self.request("GET", "/accounts/login/", headers=headers)
        assert status == 200, page[:500]
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page)
        assert token, page[:500]
        from urllib.parse import urlencode

        body = urlencode({"csrfmiddlewaretoken": token.group(1), "username": username,
                          "password": password})
        status, _ = self.request("POST", "/accounts/login/", body, headers=headers)
        return status


def _lock_out(server: WebServer, username: str, **headers: str) -> None:
    browser = Browser(server)
    statuses = [browser.login(username, "not-" + PASSWORD, **headers) for _ in range(5)]
    assert statuses == [200, 200, 200, 200, 429], statuses


FORGERIES = [
    {"X-Forwarded-For": "198.51.100.7"},
    {"X-Forwarded-For": "198.51.100.7, 198.51.100.8"},
    {"X-Forwarded-For": "::1"},
    {"X-Real-IP": "198.51.100.7"},
    {"Forwarded": "for=198.51.100.7"},
    {"X-Forwarded-For": "198.51.100.7", "X-Forwarded-Proto": "https"},
]


@pytest.fixture(scope="module")
def plain_server(django_db_setup: Any, django_db_blocker: Any) -> Iterator[WebServer]:
    """The embedded setup: FORWARDED_ALLOW_IPS not set at all (uvicorn's own handling
    trusted 127.0.0.1 then)."""
    saved = os.environ.pop("FORWARDED_ALLOW_IPS", None)
    try:
        server = WebServer()
    finally:
        if saved is not None:
            os.environ["FORWARDED_ALLOW_IPS"] = saved
    yield server
    server.stop()


@pytest.fixture(scope="module")
def proxied_server(django_db_setup: Any, django_db_blocker: Any) -> Iterator[WebServer]:
    """As behind the appliance's nginx: loopback is the proxy."""
    server = WebServer(env={"FORWARDED_ALLOW_IPS": "127.0.0.1,::1"})
    yield server
    server.stop()


@pytest.mark.django_db(transaction=True)
def test_a_locked_out_account_stays_locked_whatever_header_it_forges(
    plain_server: WebServer, viewer_user: Any,
) -> None:
    _lock_out(plain_server, viewer_user.username)
    for headers in FORGERIES:
        status = Browser(plain_server).login(viewer_user.username, PASSWORD, **headers)
        assert status == 429, headers


@pytest.mark.django_db(transaction=True)
def test_behind_the_proxy_the_forwarded_client_is_counted(
    proxied_server: WebServer, viewer_user: Any, operator_user: Any,
) -> None:
    """With loopback configured as the proxy, each forwarded client has its own count (the
    header is honoured), and a client cannot escape its lockout by writing another address
    before the one the proxy appended."""
    _lock_out(proxied_server, viewer_user.username, **{"X-Forwarded-For": "203.0.113.5"})
    still = Browser(proxied_server).login(
        viewer_user.username, PASSWORD, **{"X-Forwarded-For": "198.51.100.7, 203.0.113.5"})
    assert still == 429
    elsewhere = Browser(proxied_server).login(
        viewer_user.username, PASSWORD, **{"X-Forwarded-For": "203.0.113.6"})
    assert elsewhere == 302


@pytest.mark.django_db(transaction=True)
def test_secure_mode_learns_https_only_from_the_proxy(appliance_ready: Any) -> None:
    """XENWEB_SECURE redirects plain HTTP: a forged X-Forwarded-Proto from a client that is
    no configured proxy is still plain HTTP (redirected); from the proxy it is HTTPS."""
    for trusted, redirected in (("", True), ("127.0.0.1", False)):
        server = WebServer(env={"XENWEB_SECURE": "true", "FORWARDED_ALLOW_IPS": trusted})
        try:
            status, _ = Browser(server).request("GET", "/accounts/login/",
                                                headers={"X-Forwarded-Proto": "https"})
            assert (status == 301) is redirected, (trusted, status)
        finally:
            server.stop()
