"""Authentication everywhere: every URL of the URL conf and both websocket routes refuse
anonymous users; roles limit what an authenticated user may change."""

from __future__ import annotations

import re
from typing import Any

import pytest
from channels.testing import WebsocketCommunicator
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver

from xenweb.asgi import application
from xenweb.jobs.models import Job

# Pages that must be reachable without a login (the login form itself).
PUBLIC = {"/accounts/login/"}
# The wizard is public only before setup; afterwards it is gone.
GONE_AFTER_SETUP = re.compile(r"^/setup/")


# Sample values for named groups whose pattern is not simply "any id".
SAMPLES = {"target": "xvdb", "mac": "00:16:3e:00:00:01"}


def fill_groups(pattern: str) -> str:
    """Replace each (?P<name>…) group, nested parentheses included, by a sample value:
    a known sample, the first alternative of an alternation, or 1."""
    while (start := pattern.find("(?P<")) >= 0:
        name = pattern[start + 4:pattern.index(">", start)]
        depth, end = 0, start
        for end in range(start, len(pattern)):
            depth += {"(": 1, ")": -1}.get(pattern[end], 0)
            if depth == 0:
                break
        body = pattern[pattern.index(">", start) + 1:end]
        sample = SAMPLES.get(name) or (body.split("|")[0] if "|" in body and "(" not in body
                                       else "1")
        pattern = pattern[:start] + sample + pattern[end + 1:]
    return pattern


def all_paths(resolver: URLResolver | None = None, prefix: str = "") -> list[str]:
    """Every route of the URL conf as a concrete path (converters filled with 1)."""
    resolver = resolver or get_resolver()
    paths = []
    for entry in resolver.url_patterns:
        pattern = str(entry.pattern)
        if "format" in pattern:  # DRF's .json/.api suffix twins of the routes below
            continue
        pattern = fill_groups(pattern)
        pattern = re.sub(r"<(?:int:)?\w+>", "1", pattern)
        pattern = pattern.replace("^", "").replace("$", "").replace("\\", "")
        if isinstance(entry, URLResolver):
            paths += all_paths(entry, prefix + pattern)
        elif isinstance(entry, URLPattern):
            paths.append("/" + prefix + pattern)
    return sorted(set(paths))


def test_url_conf_is_enumerated() -> None:
    paths = all_paths()
    assert "/api/v1/jobs/1/cancel/" in paths
    assert "/jobs/1/" in paths
    assert len(paths) > 25


@pytest.mark.django_db
@pytest.mark.parametrize("method", ["get", "post"])
def test_every_url_refuses_anonymous(appliance_ready: Any, method: str) -> None:
    client = Client()
    failures = []
    for path in all_paths():
        if path in PUBLIC:
            continue
        response = getattr(client, method)(path)
        code = response.status_code
        if GONE_AFTER_SETUP.match(path):
            ok = code == 404
        elif path.startswith("/api/"):
            ok = code in (401, 403)
        else:
            ok = code == 302 and response["Location"].startswith("/accounts/login/")
        if not ok:
            failures.append(f"{method.upper()} {path} -> {code}")
    assert not failures, "\n".join(failures)


@pytest.mark.django_db
def test_api_answers_401_with_a_token_challenge(appliance_ready: Any) -> None:
    response = Client().get("/api/v1/jobs/")
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Token")


async def _ws_connect(path: str, headers: list[tuple[bytes, bytes]]) -> tuple[bool, Any]:
    # The handshake names the host it is made to, as every browser does (xenweb.ws_origin).
    communicator = WebsocketCommunicator(application, path,
                                         headers=[(b"host", b"127.0.0.1"), *headers])
    connected, code = await communicator.connect(timeout=5)
    await communicator.disconnect()
    return connected, code


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
@pytest.mark.parametrize("path", ["/ws/jobs/1/", "/ws/events/"])
async def test_websockets_refuse_anonymous(path: str) -> None:
    connected, _ = await _ws_connect(path, [(b"origin", b"http://127.0.0.1")])
    assert not connected


def _session_headers(client: Client, origin: str) -> list[tuple[bytes, bytes]]:
    cookie = f"sessionid={client.cookies['sessionid'].value}"
    return [(b"origin", origin.encode()), (b"cookie", cookie.encode())]


@pytest.mark.django_db(transaction=True)
@pytest.mark.asyncio
async def test_websockets_check_origin_and_accept_users(admin_client_tx: Client) -> None:
    job = await Job.objects.acreate(kind="selftest", title="t")
    good = _session_headers(admin_client_tx, "http://127.0.0.1")
    evil = _session_headers(admin_client_tx, "https://evil.example")
    for path in (f"/ws/jobs/{job.pk}/", "/ws/events/"):
        assert (await _ws_connect(path, good))[0], path
        assert not (await _ws_connect(path, evil))[0], path
        assert not (await _ws_connect(path, [(b"cookie", good[1][1])]))[0], "no origin"
    assert not (await _ws_connect("/ws/jobs/999999/", good))[0]


@pytest.mark.django_db
def test_viewer_is_read_only(viewer_client: Client, viewer_user: Any) -> None:
    # A viewer sees only their own jobs (xenweb.jobs.visibility), and cancels none.
    job = Job.objects.create(kind="selftest", title="t", owner=viewer_user)
    assert viewer_client.get("/api/v1/jobs/").status_code == 200
    assert viewer_client.get(f"/jobs/{job.pk}/").status_code == 200
    assert viewer_client.post(f"/api/v1/jobs/{job.pk}/cancel/").status_code == 403
    assert viewer_client.post("/api/v1/jobs/selftest/", {}).status_code == 403
    assert viewer_client.post(f"/jobs/{job.pk}/cancel/").status_code == 403
    assert viewer_client.post("/jobs/selftest/").status_code == 403
    assert viewer_client.get("/api/v1/audit/").status_code == 403
    assert viewer_client.get("/audit/").status_code == 403
    assert viewer_client.get("/accounts/users/").status_code == 403
    assert viewer_client.get("/hosts/add/").status_code == 403
    job.refresh_from_db()
    assert job.state == "queued"


@pytest.mark.django_db
def test_operator_runs_jobs_but_not_users_or_audit(operator_client: Client) -> None:
    assert operator_client.post("/api/v1/jobs/selftest/", {"steps": 1},
                                content_type="application/json").status_code == 202
    assert operator_client.get("/api/v1/audit/").status_code == 403
    assert operator_client.get("/accounts/users/").status_code == 403
    assert operator_client.get("/hosts/add/").status_code == 403


@pytest.mark.django_db
def test_forms_enforce_csrf(admin_user: Any) -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(admin_user)
    assert client.post("/jobs/selftest/").status_code == 403
    assert client.post("/api/v1/jobs/selftest/", {}).status_code == 403  # session auth too
    assert not Job.objects.exists()


def test_no_template_comment_spans_lines() -> None:
    """Django's {# #} comments end at the line's end: a longer one prints on the page."""
    from pathlib import Path

    base = Path(__file__).resolve().parent.parent / "templates"
    broken = [f"{path.relative_to(base)}:{number}"
              for path in base.rglob("*.html")
              for number, line in enumerate(path.read_text().splitlines(), start=1)
              if "{#" in line and "#}" not in line.split("{#", 1)[1]]
    assert broken == []
