"""A browser's view of the appliance over HTTPS: the certificate pinned to the fingerprint
the console showed (the check a careful user makes), then verified on every request."""

from __future__ import annotations

import ssl
import time
from typing import Any

import requests
from requests.adapters import HTTPAdapter

from lab.appliance.boot import BootedAppliance, Screen, sha256_fingerprint
from lab.errors import LabError

# The certificate names the appliance's host name and localhost; the forwarded port is on
# loopback, so the client speaks to "localhost".
HOST = "localhost"


class _TrustOnly(HTTPAdapter):
    """Connections verified against one SSL context (the pinned certificate, host name
    checked), whatever CA bundle requests would pick."""

    def __init__(self, context: ssl.SSLContext) -> None:
        self.context = context
        super().__init__()

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        kwargs["ssl_context"] = self.context
        super().init_poolmanager(*args, **kwargs)


class PinnedClient(requests.Session):
    """A session that trusts exactly the certificate whose fingerprint the console showed."""

    def __init__(self, machine: BootedAppliance, screen: Screen) -> None:
        super().__init__()
        self.base = f"https://{HOST}:{machine.https_port}"
        pem = ssl.get_server_certificate(("127.0.0.1", machine.https_port), timeout=30)
        seen = sha256_fingerprint(ssl.PEM_cert_to_DER_cert(pem))
        if seen != screen.fingerprint:
            raise LabError(f"the certificate served ({seen}) is not the one the console "
                           f"showed ({screen.fingerprint})")
        self.pem = pem
        self.mount("https://", _TrustOnly(ssl.create_default_context(cadata=pem)))
        # Django checks the Origin of every form post over HTTPS, as a browser sends it.
        self.headers["Origin"] = self.base

    def url(self, path: str) -> str:
        return self.base + path

    def csrf(self) -> str:
        return self.cookies.get("csrftoken", "")

    def api(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        """A REST call with the session (DRF checks CSRF on session-authenticated writes)."""
        headers = {"X-CSRFToken": self.csrf(), **kwargs.pop("headers", {})}
        return self.request(method, self.url(path), headers=headers,
                            timeout=kwargs.pop("timeout", 300), **kwargs)

    def post_form(self, path: str, data: dict[str, str]) -> requests.Response:
        self.get(self.url(path), timeout=120)  # the form sets the CSRF cookie
        return self.post(self.url(path), data={**data, "csrfmiddlewaretoken": self.csrf()},
                         allow_redirects=False, timeout=300)


def wait_for_wizard(machine: BootedAppliance, screen: Screen, *, timeout: float) -> None:
    """Until the wizard's first page answers over HTTPS through nginx (the services start
    after the console screen is written)."""
    deadline = time.monotonic() + timeout
    last = "no answer yet"
    while time.monotonic() < deadline:
        if not machine.running():
            raise LabError(f"the appliance stopped:\n{machine.console_tail()}")
        try:
            client = PinnedClient(machine, screen)
            page = client.get(client.url("/setup/"), timeout=60)
            if page.status_code == 200 and "Setup token" in page.text:
                return
            last = f"HTTP {page.status_code}"
        except (OSError, requests.RequestException) as exc:
            last = str(exc)
        time.sleep(3)
    raise LabError(f"the wizard did not answer over HTTPS in {timeout:.0f} s ({last}):\n"
                   f"{machine.console_tail()}")


def read_console(client: PinnedClient, guest_id: int, needle: str, *, timeout: float) -> str:
    """The guest's text console through ``wss://`` via nginx, as the browser opens it (the
    session cookie, the page's Origin), read until ``needle`` shows."""
    from websockets.sync.client import connect

    url = client.base.replace("https://", "wss://") + f"/ws/guests/{guest_id}/console/"
    headers = {"Origin": client.base, "Cookie": f"sessionid={client.cookies['sessionid']}"}
    context = ssl.create_default_context(cadata=client.pem)
    seen = b""
    deadline = time.monotonic() + timeout
    with connect(url, ssl=context, additional_headers=headers, open_timeout=60) as ws:
        while needle.encode() not in seen:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise LabError(f"no {needle!r} on the console in {timeout:.0f} s: "
                               f"{seen[-2000:]!r}")
            try:
                frame = ws.recv(timeout=remaining)
            except TimeoutError:
                continue
            if isinstance(frame, bytes):
                seen += frame
    return seen.decode(errors="replace")
