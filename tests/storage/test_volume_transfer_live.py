"""A 1 GiB sparse image up and down through the real web server (uvicorn), streamed, with the
job's progress arriving over the websocket, on a lab host's `local` pool: once with the
bytes written to and read from the volume's file, once through libvirt streams."""

from __future__ import annotations

import asyncio
import hashlib
import http.client
import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from lab.register import register_lab_host
from storage.inventory import reconcile_pools
from storage.models import Pool
from storage.volume_io import IO_ENV
from tests.live.processes import WebServer
from tests.live.ws import job_messages_while, latest
from xenweb.accounts.tokens import create_token

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True)]

GIB = 1024**3
CHUNK = 1024 * 1024


def sparse_image(path: Path) -> str:
    """1 GiB, mostly holes, with random data at a few places; returns its sha256."""
    with open(path, "wb") as out:
        out.truncate(GIB)
        for offset in (0, 300 * CHUNK + 12345, 700 * CHUNK, GIB - CHUNK):
            out.seek(offset)
            out.write(os.urandom(CHUNK))
    digest = hashlib.sha256()
    with open(path, "rb") as src:
        while block := src.read(8 * CHUNK):
            digest.update(block)
    return digest.hexdigest()


def http_upload(server: WebServer, token: str, url: str, path: Path) -> tuple[int, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=600)
    conn.putrequest("PUT", url)
    conn.putheader("Authorization", f"Token {token}")
    conn.putheader("Content-Type", "application/octet-stream")
    conn.putheader("Content-Length", str(path.stat().st_size))
    conn.endheaders()
    with open(path, "rb") as src:
        while block := src.read(CHUNK):
            conn.send(block)
    response = conn.getresponse()
    return response.status, json.loads(response.read())


def http_download(server: WebServer, token: str, url: str, first: int = 0) -> tuple[int, Any,
                                                                                     Any]:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=600)
    headers = {"Authorization": f"Token {token}"}
    if first:
        headers["Range"] = f"bytes={first}-"
    conn.request("GET", url, headers=headers)
    response = conn.getresponse()
    digest = hashlib.sha256()
    size = 0
    while block := response.read(CHUNK):
        digest.update(block)
        size += len(block)
    return response.status, response.headers, (digest, size)  # names case-insensitive


@pytest.fixture(params=["file", "libvirt"])
def transfer_server(request: pytest.FixtureRequest, web_server: WebServer) -> Iterator[WebServer]:
    """The web server moving a lab volume's bytes in its file (this machine holds it), and
    one made to send them through libvirt streams (as for a remote host)."""
    if request.param == "file":
        yield web_server
        return
    server = WebServer(env={IO_ENV: "libvirt"})
    try:
        yield server
    finally:
        server.stop()


def test_one_gib_sparse_image_up_and_down(lab_hosts: list[Any], transfer_server: WebServer,
                                          admin_client_tx: Client, tmp_path: Path) -> None:
    web_server = transfer_server
    host, _ = register_lab_host(lab_hosts[0])
    reconcile_pools(host)
    pool = Pool.objects.get(host=host, name="local")
    user = get_user_model().objects.get(username="alice-admin")
    token = create_token(user)
    cookie = admin_client_tx.cookies["sessionid"].value

    image = tmp_path / "sparse.img"
    expected = sparse_image(image)
    created = admin_client_tx.post("/api/v1/volumes/", {
        "pool": pool.pk, "name": f"big-{uuid.uuid4().hex[:6]}.img", "size": "1G"},
        content_type="application/json")
    assert created.status_code == 201, created.json()
    vol = created.json()
    url = f"/api/v1/volumes/{vol['id']}/content/"
    try:
        (status, job), messages = asyncio.run(job_messages_while(
            web_server, cookie, "/ws/events/", lambda: http_upload(web_server, token, url, image)))
        assert status == 201, job
        assert job["state"] == "succeeded" and job["done"] == GIB and job["unit"] == "bytes"
        progress = [m for m in messages if m["id"] == job["id"] and m["state"] == "running"]
        assert any(0 < m["done"] < GIB for m in progress), messages
        assert any(m["rate"] for m in progress)
        assert latest(messages, job["id"])["state"] == "succeeded"
        # The volume stayed sparse on the host: the holes went through as holes.
        assert os.stat(vol["path"]).st_blocks * 512 < 64 * CHUNK

        (status, headers, (digest, size)), messages = asyncio.run(job_messages_while(
            web_server, cookie, "/ws/events/", lambda: http_download(web_server, token, url)))
        assert status == 200 and int(headers["Content-Length"]) == size == GIB
        assert digest.hexdigest() == expected
        downloads = [m for m in messages if m["id"] == int(headers["X-Job-Id"])]
        assert downloads and latest(messages, downloads[0]["id"])["state"] == "succeeded"

        # Resume from the middle (what `curl -C -` asks for).
        first = GIB // 2 + 7
        status, headers, (digest, size) = http_download(web_server, token, url, first)
        assert status == 206 and size == GIB - first
        assert headers["Content-Range"] == f"bytes {first}-{GIB - 1}/{GIB}"
        with open(image, "rb") as src:
            src.seek(first)
            tail = hashlib.sha256()
            while block := src.read(8 * CHUNK):
                tail.update(block)
        assert digest.hexdigest() == tail.hexdigest()
    finally:
        admin_client_tx.delete(f"/api/v1/volumes/{vol['id']}/")
