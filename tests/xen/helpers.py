"""What the Xen suites share: the tiny PV guest made through the API, jobs run as the worker
runs them, and cleanup that never fails a test."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

from django.test import Client

from guests.models import Guest
from hosts.models import Host
from hosts.virt import VirtError, VirtTarget
from hosts.virt import domains as virt
from lab.tinyguest import tiny_guest_cmdline
from lab.xen.manager import TINY_GUEST_INITRD, TINY_GUEST_KERNEL
from tests.lab.test_console_ws import Session
from tests.live.processes import WebServer
from xenweb.jobs.models import Job
from xenweb.jobs.runner import run_job

# The tiny guest's files in the dom0s' boot files directory (lab.xen.manager).
KERNEL_FILE = TINY_GUEST_KERNEL.rsplit("/", 1)[1]
INITRD_FILE = TINY_GUEST_INITRD.rsplit("/", 1)[1]
BOOT_TIMEOUT = 240.0  # the tiny guest under TCG on a busy machine


def console_until(server: WebServer, client: Client, guest: Guest, *needles: str,
                  timeout: float = BOOT_TIMEOUT) -> str:
    """Read the guest's console as the browser does (``/ws/guests/<pk>/console/`` on the web
    server, for the host the guest is on now) until one of ``needles`` shows."""

    async def read() -> bytes:
        session = await Session.open(server, client, guest.pk)
        try:
            return await session.read_until(*(n.encode() for n in needles), timeout=timeout)
        finally:
            await session.ws.close()

    return asyncio.run(read()).decode(errors="replace")


def post(client: Client, path: str, data: dict | None = None) -> Any:
    return client.post(path, data or {}, content_type="application/json")


def patch(client: Client, path: str, data: dict) -> Any:
    return client.patch(path, data, content_type="application/json")


def create_pv_guest(client: Client, host: Host, prefix: str, **extra: Any) -> Guest:
    """A PV guest booting the tiny guest's kernel from dom0 (direct kernel boot: the files by
    name from the host's boot files directory, which register_xen_host sets to the tiny
    guest's directory), defined through the API (not started)."""
    data = {
        "name": f"{prefix}-{uuid.uuid4().hex[:6]}", "host": host.pk, "type": "pv",
        "memory_mib": 192, "max_memory_mib": 256,
        "kernel_file": KERNEL_FILE, "initrd_file": INITRD_FILE,
        "cmdline": tiny_guest_cmdline(console="hvc0"),
        **extra,
    }
    created = post(client, "/api/v1/guests/", data)
    assert created.status_code == 201, created.json()
    return Guest.objects.get(pk=created.json()["id"])


JOB_TIMEOUT = 900.0  # a migration between two TCG dom0s on a busy machine


def run(response: Any, body: Any, *, succeed: bool = True) -> Job:
    """The job a 202 answer started, run here as the Celery worker would run it. When a
    live Celery worker of the test session claimed it first (the job is committed: these
    suites use transactional tests), wait until that worker has finished it."""
    assert response.status_code == 202, response.json()
    job = Job.objects.get(pk=response.json()["id"])
    run_job(job.pk, body, task_id="t", worker="w")
    deadline = time.monotonic() + JOB_TIMEOUT
    job.refresh_from_db()
    while job.state in ("queued", "running") and time.monotonic() < deadline:
        time.sleep(1.0)
        job.refresh_from_db()
    if succeed:
        assert job.state == "succeeded", job.error
    return job


def remove_quietly(host: Host, guest_uuid: str) -> None:
    """Force off and undefine (with its managed save) whatever is left of a test guest."""
    for action in (virt.destroy, virt.undefine):
        try:
            action(VirtTarget(host.uri, allow_insecure=True), guest_uuid)
        except VirtError:
            pass
