"""The streamed upload path (`PUT /api/v1/volumes/<id>/content/` through the real web
server, uvicorn, and xenweb.streamed_body) on a lab host: who may send a body, what a bad
image gets, and what a connection that breaks off mid-body leaves behind.

A refused request must be refused before its body is read: with `Expect: 100-continue`
the server answers with the refusal, never with "100 Continue".
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from lab.register import register_lab_host
from storage.inventory import reconcile_pools
from storage.models import Pool, Volume
from tests.conftest import make_user
from tests.live.processes import WebServer, wait_for
from xenweb.accounts.roles import VIEWER
from xenweb.accounts.tokens import create_token
from xenweb.audit.models import AuditRecord
from xenweb.jobs.models import Job

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True)]

MIB = 1024**2
CSRF = "c" * 32  # a CSRF secret: Django accepts it unmasked when cookie and header agree


@pytest.fixture
def local_pool(lab_hosts: list[Any]) -> Pool:
    host, _ = register_lab_host(lab_hosts[0])
    reconcile_pools(host)
    return Pool.objects.get(host=host, name="local")


def new_volume(client: Client, pool: Pool, size: str, fmt: str = "raw") -> dict[str, Any]:
    created = client.post("/api/v1/volumes/", {
        "pool": pool.pk, "name": f"s-{uuid.uuid4().hex[:8]}.{fmt}", "size": size,
        "format": fmt}, content_type="application/json")
    assert created.status_code == 201, created.json()
    return created.json()


def put(server: WebServer, url: str, body: bytes, headers: dict[str, str]) -> tuple[int, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=300)
    conn.request("PUT", url, body=body, headers={
        "Content-Type": "application/octet-stream", **headers})
    response = conn.getresponse()
    payload = response.read()
    conn.close()
    return response.status, json.loads(payload) if payload else None


def first_answer_to_expect(server: WebServer, url: str, headers: dict[str, str]) -> bytes:
    """Send only the head of a 1 GiB PUT with `Expect: 100-continue`; the status line the
    server answers with (a refusal, or 100 Continue if it would read the body)."""
    lines = [f"PUT {url} HTTP/1.1", f"Host: 127.0.0.1:{server.port}",
             "Content-Type: application/octet-stream", f"Content-Length: {1024 * MIB}",
             "Expect: 100-continue", *(f"{k}: {v}" for k, v in headers.items()), "", ""]
    with socket.create_connection(("127.0.0.1", server.port), timeout=60) as sock:
        sock.sendall("\r\n".join(lines).encode())
        return sock.recv(65536).split(b"\r\n", 1)[0]


def test_the_streamed_upload_checks_who_sends_before_reading(
        local_pool: Pool, web_server: WebServer, admin_client_tx: Client) -> None:
    vol = new_volume(admin_client_tx, local_pool, "1M")
    url = f"/api/v1/volumes/{vol['id']}/content/"
    admin = get_user_model().objects.get(username="alice-admin")
    admin_token = create_token(admin)
    viewer_token = create_token(make_user("vera-viewer", VIEWER))
    session = admin_client_tx.cookies["sessionid"].value
    data = os.urandom(MIB)
    jobs_before = Job.objects.count()

    status, body = put(web_server, url, data, {})
    assert status == 401 and "credentials were not provided" in body["detail"]
    status, body = put(web_server, url, data, {"Authorization": "Token nope"})
    assert status == 401 and body["detail"] == "Invalid token."
    status, body = put(web_server, url, data, {"Authorization": f"Token {viewer_token}"})
    assert status == 403 and "role does not allow" in body["detail"]
    # A logged-in browser session without the CSRF token (a forged cross-site request).
    status, body = put(web_server, url, data, {"Cookie": f"sessionid={session}"})
    assert status == 403 and "CSRF" in body["detail"]
    status, body = put(web_server, url, data, {
        "Cookie": f"sessionid={session}; csrftoken={CSRF}", "X-CSRFToken": "d" * 32})
    assert status == 403 and "CSRF" in body["detail"]
    status, body = put(web_server, "/api/v1/volumes/999999/content/", data,
                       {"Authorization": f"Token {admin_token}"})
    assert status == 404
    # None of them got a job, and none had its body read: the refusal comes first.
    assert Job.objects.count() == jobs_before
    assert first_answer_to_expect(web_server, url, {}).startswith(b"HTTP/1.1 401")
    assert first_answer_to_expect(
        web_server, url, {"Authorization": f"Token {viewer_token}"}).startswith(b"HTTP/1.1 403")
    assert first_answer_to_expect(
        web_server, url, {"Authorization": f"Token {admin_token}"}) == b"HTTP/1.1 100 Continue"
    # That one went away after "100 Continue": its job ends (failed) before the next upload.
    wait_for(lambda: not Job.objects.filter(target_id=str(vol["id"]),
                                            state__in=["queued", "running"]).exists(),
             120, "the abandoned upload's job to end")

    # The same browser session with its CSRF token may upload.
    status, body = put(web_server, url, data, {
        "Cookie": f"sessionid={session}; csrftoken={CSRF}", "X-CSRFToken": CSRF})
    assert status == 201, body
    assert body["state"] == "succeeded" and body["done"] == MIB
    assert Path(vol["path"]).read_bytes() == data
    assert admin_client_tx.delete(f"/api/v1/volumes/{vol['id']}/").status_code == 204


def test_the_streamed_upload_refuses_an_image_with_a_host_backing_file(
        local_pool: Pool, web_server: WebServer, admin_client_tx: Client,
        tmp_path: Path) -> None:
    evil = tmp_path / "evil.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", "/etc/shadow", "-F", "raw",
                    str(evil)], check=True)
    vol = new_volume(admin_client_tx, local_pool, "1M", "qcow2")
    token = create_token(get_user_model().objects.get(username="alice-admin"))
    status, job = put(web_server, f"/api/v1/volumes/{vol['id']}/content/", evil.read_bytes(),
                      {"Authorization": f"Token {token}"})
    assert status == 422, job
    assert job["state"] == "failed" and "backing file (/etc/shadow)" in job["error"]
    # Refused from its first bytes, before any was written: the volume is as it was.
    assert "Nothing was written" in job["error"]
    assert Volume.objects.get(pk=vol["id"]).content_state == "ready"
    assert os.path.exists(vol["path"])
    assert AuditRecord.objects.filter(action="volume.upload", result="failed",
                                      target_id=str(vol["id"])).exists()


def test_a_body_that_breaks_off_fails_the_job_and_leaves_the_volume_empty(
        local_pool: Pool, web_server: WebServer, admin_client_tx: Client) -> None:
    vol = new_volume(admin_client_tx, local_pool, "4M")
    token = create_token(get_user_model().objects.get(username="alice-admin"))
    total = 256 * MIB
    head = (f"PUT /api/v1/volumes/{vol['id']}/content/ HTTP/1.1\r\n"
            f"Host: 127.0.0.1:{web_server.port}\r\nAuthorization: Token {token}\r\n"
            f"Content-Type: application/octet-stream\r\nContent-Length: {total}\r\n\r\n")
    sent = 0
    with socket.create_connection(("127.0.0.1", web_server.port), timeout=60) as sock:
        sock.sendall(head.encode())
        # Streamed: the job writes into the volume while most of the body is unsent. (The
        # job row shows progress a few times a second while bytes flow, so keep sending.)
        job = None
        while job is None or job.done < 16 * MIB:
            assert sent < total // 2, "the job shows no progress while the body arrives"
            sock.sendall(os.urandom(MIB))
            sent += MIB
            job = Job.objects.filter(kind="volume.upload", target_id=str(vol["id"])).first()
        assert job.state == "running" and job.total == total
        sock.shutdown(socket.SHUT_RDWR)

    def over() -> Job | None:
        job.refresh_from_db()
        return job if not job.is_active else None

    wait_for(over, 120, "the upload job to end")
    assert job.state == "failed", (job.state, job.error)
    assert "went away" in job.error and "the volume is empty" in job.error
    # No half-written image: the volume is empty again, at its former size.
    volume = Volume.objects.get(pk=vol["id"])
    assert volume.capacity == 4 * MIB
    content = Path(volume.path).read_bytes()
    assert len(content) == 4 * MIB and content.count(0) == len(content)
    assert AuditRecord.objects.filter(action="volume.upload", result="failed",
                                      target_id=str(vol["id"])).exists()
    assert admin_client_tx.delete(f"/api/v1/volumes/{vol['id']}/").status_code == 204


def test_a_cancelled_upload_ends_cancelled_and_leaves_the_volume_empty(
        local_pool: Pool, web_server: WebServer, admin_client_tx: Client) -> None:
    vol = new_volume(admin_client_tx, local_pool, "2M")
    token = create_token(get_user_model().objects.get(username="alice-admin"))
    total = 256 * MIB
    head = (f"PUT /api/v1/volumes/{vol['id']}/content/ HTTP/1.1\r\n"
            f"Host: 127.0.0.1:{web_server.port}\r\nAuthorization: Token {token}\r\n"
            f"Content-Type: application/octet-stream\r\nContent-Length: {total}\r\n\r\n")
    with socket.create_connection(("127.0.0.1", web_server.port), timeout=60) as sock:
        sock.sendall(head.encode())
        for _ in range(16):
            sock.sendall(os.urandom(MIB))
        job = wait_for(lambda: Job.objects.filter(kind="volume.upload", state="running",
                                                  target_id=str(vol["id"])).first(),
                       120, "the upload job running")
        cancelled = admin_client_tx.post(f"/api/v1/jobs/{job.pk}/cancel/")
        assert cancelled.status_code in (200, 202), cancelled.content
        # The server stops reading the body and answers at once: the job, cancelled.
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
            try:
                sock.sendall(bytes(64 * 1024))
            except OSError:
                pass
            sock.settimeout(0.2)
            try:
                data = sock.recv(65536)
            except TimeoutError:
                continue
            if not data:
                break
            answer += data
    status_line, _, rest = answer.partition(b"\r\n")
    assert status_line.startswith(b"HTTP/1.1 409"), answer[:300]
    body = json.loads(rest.partition(b"\r\n\r\n")[2])
    assert body["id"] == job.pk and body["state"] == "cancelled"
    job.refresh_from_db()
    assert job.state == "cancelled"
    volume = Volume.objects.get(pk=vol["id"])
    assert volume.capacity == 2 * MIB
    content = Path(volume.path).read_bytes()
    assert len(content) == 2 * MIB and content.count(0) == len(content)
    assert admin_client_tx.delete(f"/api/v1/volumes/{vol['id']}/").status_code == 204


def test_curl_uploads_and_downloads_as_the_readme_says(
        local_pool: Pool, web_server: WebServer, admin_client_tx: Client,
        tmp_path: Path) -> None:
    """`curl -T FILE URL` adds the file's name to a URL ending in a slash: the content URL
    also answers without it, for uploads and (resumed) downloads alike."""
    vol = new_volume(admin_client_tx, local_pool, "3M")
    token = create_token(get_user_model().objects.get(username="alice-admin"))
    image = tmp_path / "disk.img"
    image.write_bytes(os.urandom(3 * MIB))
    url = f"http://127.0.0.1:{web_server.port}/api/v1/volumes/{vol['id']}/content"
    auth = ["-H", f"Authorization: Token {token}"]
    answer = subprocess.run(["curl", "-sS", "--fail-with-body", "-T", str(image), *auth, url],
                            capture_output=True, text=True, check=False)
    assert answer.returncode == 0, answer.stdout + answer.stderr
    assert json.loads(answer.stdout)["state"] == "succeeded"
    copy = tmp_path / "copy.img"
    copy.write_bytes(image.read_bytes()[:MIB])  # a download that broke off, resumed
    subprocess.run(["curl", "-sS", "--fail", "-C", "-", "-o", str(copy), *auth, url],
                   check=True)
    assert copy.read_bytes() == image.read_bytes()
